"""Sweeps of NeuralFuse experiments on Ray Tune, tracked in MLflow.

The only package that talks to Ray, MLflow and storage; nf_core stays pure PyTorch.
"""

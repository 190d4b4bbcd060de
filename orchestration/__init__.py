"""Sweeps of NeuralFuse experiments on Ray Tune, tracked in MLflow (the only package that talks to Ray, MLflow and storage)."""

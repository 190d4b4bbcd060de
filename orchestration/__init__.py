"""Sweeps of NeuralFuse experiments on Ray Tune, tracked in MLflow.

The only package that talks to Ray, MLflow and storage; nf_core stays pure PyTorch. Sub-packages by concern,
each importing only those below it (docs/architecture.md): ``store`` < ``spec`` < ``tracking``, ``cluster``
< ``sweep`` < ``report`` < ``commands`` < ``cli``; ``errors`` and ``tables`` are shared by all.
"""

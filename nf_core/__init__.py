"""NeuralFuse core: pure PyTorch (no Ray, no MLflow)."""

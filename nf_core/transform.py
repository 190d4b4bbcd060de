"""The NeuralFuse transformation, in one place: x' = clamp(x + G(x), -1, 1)."""
from __future__ import annotations

import torch
import torch.nn as nn


def neuralfuse(x: torch.Tensor, generator: nn.Module | None) -> torch.Tensor:
    """Transformed input x' = clamp(x + G(x), -1, 1); identity when there is no generator."""
    if generator is None:
        return x
    return torch.clamp(x + generator(x), -1.0, 1.0)

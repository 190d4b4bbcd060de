"""The NeuralFuse transformation, in one place: x' = clamp(x + G(x), -1, 1) (docs/method.md)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call


def neuralfuse(
    x: torch.Tensor, generator: nn.Module | None, weights: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Transformed input x' = clamp(x + G(x), -1, 1); identity when there is no generator.

    ``weights`` runs G with other weights (e.g. fake-quantized ones during generator QAT).
    """
    if generator is None:
        return x
    g = generator(x) if weights is None else functional_call(generator, weights, (x,))
    return torch.clamp(x + g, -1.0, 1.0)

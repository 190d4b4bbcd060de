"""The model registry and what every architecture shares; the architectures register here on import."""

from __future__ import annotations

import torch.nn as nn

from nf_core.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
INPUT_SIZES = (32, 224)


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (never below 1)."""
    return max(1, int(round(channels * width)))

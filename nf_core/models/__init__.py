"""Base models: ResNet18/50, VGG11/16/19, a small ViT, PreAct ResNet18; CIFAR style (32×32), ImageNet (224×224)."""

from __future__ import annotations

import torch.nn as nn

from nf_core.models import resnet, vgg, vit  # noqa: F401  (registers the architectures)
from nf_core.models.common import INPUT_SIZES, MODELS, scaled

# isort: split
from nf_core.models import preact  # noqa: E402,F401  (registered last: the listed order of names is the registry's)


def create_model(name: str, num_classes: int = 10, input_size: int = 32, width: float = 1.0) -> nn.Module:
    """Build a registered base model. input_size 32 → CIFAR style, 224 → ImageNet style.

    ``width`` scales every channel count (1.0 = exactly the paper's architecture).
    """
    from nf_core.validation import check_choice

    MODELS.get(name)  # unknown names fail first
    check_choice("input size", input_size, INPUT_SIZES)
    if num_classes < 1:
        raise ValueError(f"num_classes {num_classes!r} must be >= 1")
    if not width > 0:
        raise ValueError(f"width {width!r} must be > 0")
    return MODELS.create(name, num_classes=num_classes, input_size=input_size, width=width)


__all__ = ["MODELS", "INPUT_SIZES", "create_model", "scaled"]

"""Base-training modes: how one QAT update of a base model is made (``BaseTrainConfig.training``).

A mode is ``step(model, x, y, optimizer, step, cfg, epoch) -> (logits, loss, metrics)``: it runs the
forward pass(es), sets the gradients and steps the optimizer; ``logits`` and ``loss`` are the
clean QAT pass's (for the epoch's accuracy and loss), ``metrics`` extra floats averaged per epoch.
A new mode is one function and one entry in ``BASE_MODES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from nf_core.awp import awp_train_step
from nf_core.protect import clip_step, qat_update, randbet_step

BaseStep = Callable[..., tuple[torch.Tensor, torch.Tensor, dict[str, float]]]


def standard_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, step: int, cfg: Any, epoch: int = 0):
    """Plain QAT: forward with fake-quantized b-bit weights, STE gradients."""
    logits, loss = qat_update(model, x, y, opt, cfg.bits)
    return logits, loss, {}


def awp_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, step: int, cfg: Any, epoch: int = 0):
    """PGD adversarial training + adversarial weight perturbation (Wu et al. 2020); loss/accuracy on PGD inputs."""
    logits, loss = awp_train_step(model, x, y, opt, cfg.awp_config(), cfg.bits, epoch)
    return logits, loss, {}


BASE_MODES: dict[str, BaseStep] = {
    "standard": standard_step,
    "clip": clip_step,  # Stutz et al. 2021: weight clipping (nf_core.protect)
    "randbet": randbet_step,  # Stutz et al. 2021: clipping + random bit error training (nf_core.protect)
    "awp": awp_step,  # Wu et al. 2020: PGD + adversarial weight perturbation (nf_core.awp)
}

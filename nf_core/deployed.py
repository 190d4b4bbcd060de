"""A base model as deployed on the accelerator: frozen, eval mode, b-bit weights in SRAM.

Runs clean (nominal voltage) or on any chip through `torch.func.functional_call`, so the
module itself is never changed by a chip.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.quant import QuantizedWeights, quantize_model

BATCHING = ("vmap", "loop")


class DeployedModel:
    """Quantized, frozen base model f with its stored codes; f_p for a chip p is f on p's codes."""

    def __init__(self, model: nn.Module, bits: int = 8, device: torch.device | str = "cpu") -> None:
        self.module = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self.qw: QuantizedWeights = quantize_model(self.module, bits)
        self.clean_weights = self.qw.dequantized()
        self.device = torch.device(device)

    @property
    def bits(self) -> int:
        return self.qw.bits

    def logits(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of the clean model (weights None) or of the model with the given weights."""
        return functional_call(self.module, weights or self.clean_weights, (x,))

    def chip_weights(self, seed: int, cfg: ChipConfig) -> dict[str, torch.Tensor]:
        return self.qw.dequantized(perturb_codes(self.qw, seed, cfg))

    def stacked_chip_weights(self, seeds: Sequence[int], cfg: ChipConfig) -> dict[str, torch.Tensor]:
        """Weights of several chips stacked on a leading axis: name → (N, *shape)."""
        return self.qw.stacked([perturb_codes(self.qw, s, cfg) for s in seeds])

    def perturbed_logits(self, x: torch.Tensor, stacked: dict[str, torch.Tensor], batching: str = "vmap") -> torch.Tensor:
        """Logits of N chips on the same inputs: (N, B, classes)."""
        if batching == "vmap":
            return vmap(lambda w: functional_call(self.module, w, (x,)))(stacked)
        if batching == "loop":
            n = next(iter(stacked.values())).shape[0]
            return torch.stack([self.logits(x, {k: v[i] for k, v in stacked.items()}) for i in range(n)])
        raise ValueError(f"unknown batching {batching!r}; valid choices: {', '.join(BATCHING)}")

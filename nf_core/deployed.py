"""A base model as deployed on the accelerator: frozen, eval mode, b-bit weights in SRAM.

Runs clean (nominal voltage) or on any chip through `torch.func.functional_call`, so the
module itself is never changed by a chip. Chips always perturb the stored int8 codes
(``qw.flat``); everything below works on float copies made from them, on the model's device:
dequantization, then (optionally) BatchNorm folding and the channels-last layout.

Speed options (same numbers up to float rounding):
  ``fold_bn``        fold each eval BatchNorm into the conv before it (kept only if the folded
                     model's logits match the unfolded ones within float tolerance).
  ``channels_last``  NHWC memory format for inputs and conv weights.
  ``amp``            ``"bf16"``: autocast the base passes of EOPM training (`autocast()`); opt-in,
                     meant for GPUs; evaluation stays fp32 unless asked.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.fold import BNFold
from nf_core.quant import QuantizedWeights, quantize_model

BATCHING = ("vmap", "loop")
AMP = (None, "bf16")
FOLD_TOLERANCE = 1e-4  # max |Δlogit| / (1 + max |logit|) allowed for folding


class DeployedModel:
    """Quantized, frozen base model f with its stored codes; f_p for a chip p is f on p's codes."""

    def __init__(
        self,
        model: nn.Module,
        bits: int = 8,
        device: torch.device | str = "cpu",
        fold_bn: bool = False,
        channels_last: bool = False,
        amp: str | None = None,
    ) -> None:
        if amp not in AMP:
            raise ValueError(f"unknown amp {amp!r}; valid choices: {', '.join(map(str, AMP))}")
        self.device = torch.device(device)
        self.amp, self.channels_last = amp, bool(channels_last)
        self.plain = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self.qw: QuantizedWeights = quantize_model(self.plain, bits)  # the stored codes: what chips perturb
        self._qw_cpu: QuantizedWeights | None = None
        self.fold: BNFold | None = None
        self.module = self.plain
        if fold_bn:
            self._try_fold()
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.clean_weights = self.weights_from_codes(self.qw.flat)

    def _try_fold(self) -> None:
        fold = BNFold(self.plain)
        if not fold.pairs:
            return
        first = next(m for m in self.plain.modules() if isinstance(m, nn.Conv2d))
        x = torch.rand(2, first.in_channels, 32, 32, generator=torch.Generator().manual_seed(0)).to(self.device) * 2 - 1
        w = self.qw.dequantized()
        ref = functional_call(self.plain, w, (x,))
        got = functional_call(fold.module, fold.apply(w), (x,))
        err = (got - ref).abs().max().item() / (1 + ref.abs().max().item())
        if err <= FOLD_TOLERANCE:
            self.fold, self.module = fold, fold.module
        else:
            warnings.warn(f"BatchNorm folding changes logits by {err:.2e} > {FOLD_TOLERANCE}: not folded", stacklevel=3)

    @property
    def bits(self) -> int:
        return self.qw.bits

    @property
    def qw_cpu(self) -> QuantizedWeights:
        """The stored codes on the CPU, where background chip preparation draws fault maps."""
        if self._qw_cpu is None:
            self._qw_cpu = self.qw if self.qw.flat.device.type == "cpu" else self.qw.to("cpu")
        return self._qw_cpu

    def _finish(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.fold is not None:
            weights = self.fold.apply(weights)  # after the faults, on the float copy
        if self.channels_last:
            weights = {
                k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in weights.items()
            }
        return weights

    def weights_from_codes(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float weights for `logits` from one chip's stored codes (dequantized on this model's device)."""
        return self._finish(self.qw.dequantized(flat.to(self.device, non_blocking=True)))

    def stacked_from_codes(self, flats: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Float weights of several chips stacked on a leading axis (name → (N, *shape)) from their codes."""
        big = flats if isinstance(flats, torch.Tensor) else torch.stack(list(flats))
        return self._finish(self.qw.stacked(big.to(self.device, non_blocking=True)))

    def chip_codes(self, seeds: Sequence[int], cfg: ChipConfig) -> torch.Tensor:
        """The chips' stored codes, (N, total) int8, drawn where the codes live (bit-identical anywhere)."""
        return torch.stack([perturb_codes(self.qw, s, cfg) for s in seeds])

    def chip_weights(self, seed: int, cfg: ChipConfig) -> dict[str, torch.Tensor]:
        return self.weights_from_codes(perturb_codes(self.qw, seed, cfg))

    def stacked_chip_weights(self, seeds: Sequence[int], cfg: ChipConfig) -> dict[str, torch.Tensor]:
        """Weights of several chips stacked on a leading axis: name → (N, *shape)."""
        return self.stacked_from_codes(self.chip_codes(seeds, cfg))

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for EOPM base passes: bf16 autocast when ``amp == "bf16"``, else nothing."""
        if self.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def logits(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of the clean model (weights None) or of the model with the given weights."""
        return functional_call(self.module, weights or self.clean_weights, (self._input(x),))

    def perturbed_logits(
        self, x: torch.Tensor, stacked: dict[str, torch.Tensor], batching: str = "vmap"
    ) -> torch.Tensor:
        """Logits of N chips on the same inputs: (N, B, classes)."""
        if batching == "vmap":
            x = self._input(x)
            return vmap(lambda w: functional_call(self.module, w, (x,)))(stacked)
        if batching == "loop":
            n = next(iter(stacked.values())).shape[0]
            return torch.stack([self.logits(x, {k: v[i] for k, v in stacked.items()}) for i in range(n)])
        raise ValueError(f"unknown batching {batching!r}; valid choices: {', '.join(BATCHING)}")

"""Symmetric per-tensor b-bit weight quantization (Conv2d/Linear weights only) and QAT.

scale = max|W| / (2^(b-1) - 1),  q = round(W / scale) (half to even),  Ŵ = q · scale.
q is held as int8 two's complement; for b < 8 only its low b bits are "stored" (see chips).
Biases, BatchNorm and activations are not quantized (docs/method.md, Quantization).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from nf_core.validation import check_bits

QUANTIZED_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def levels(bits: int) -> int:
    """Largest magnitude of a b-bit symmetric code: 2^(b-1) - 1 (127 for 8 bits)."""
    return 2 ** (check_bits(bits) - 1) - 1


def weight_scale(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-tensor scale; an all-zero tensor gets scale 1 so that q = 0 round-trips."""
    m = w.detach().abs().max()
    return torch.where(m > 0, m / levels(bits), torch.ones_like(m))


def quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8, scale float32 scalar) with Ŵ = q · scale."""
    scale = weight_scale(w, bits).float()
    q = torch.round(w.detach().float() / scale).clamp_(-levels(bits), levels(bits)).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        q, scale = quantize(w, bits)
        return dequantize(q, scale).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None  # straight-through estimator


def fake_quantize(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient (STE) in the backward pass."""
    return _FakeQuant.apply(w, bits)


def quantized_weight_names(model: nn.Module) -> list[str]:
    """Names (as in named_parameters) of the weights that are quantized and stored in SRAM."""
    return [f"{m}.weight" if m else "weight" for m, mod in model.named_modules() if isinstance(mod, QUANTIZED_TYPES)]


def fake_quant_params(model: nn.Module, bits: int = 8) -> dict[str, torch.Tensor]:
    """Overrides for `torch.func.functional_call` that run `model` with fake-quantized weights (QAT)."""
    params = dict(model.named_parameters())
    return {n: fake_quantize(params[n], bits) for n in quantized_weight_names(model)}


@dataclass
class QuantizedWeights:
    """A model's stored weights: every quantized tensor's int8 codes in one flat buffer.

    Layer ``names[i]`` occupies ``flat[offsets[i]:offsets[i+1]]`` (row-major), with its own scale.
    One buffer lets a chip perturb all layers with a few vectorised ops.
    """

    names: list[str]
    shapes: list[torch.Size]
    offsets: list[int]
    flat: torch.Tensor  # (total,) int8
    scales: torch.Tensor  # (layers,) float32
    bits: int

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    def to(self, device: torch.device | str) -> QuantizedWeights:
        return QuantizedWeights(
            self.names, self.shapes, self.offsets, self.flat.to(device), self.scales.to(device), self.bits
        )

    def dequantized(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Float weights Ŵ = q · scale for every layer, from ``flat`` (default: the clean codes)."""
        flat = self.flat if flat is None else flat
        out = {}
        for i, (name, shape) in enumerate(zip(self.names, self.shapes)):
            out[name] = flat[self.offsets[i] : self.offsets[i + 1]].float().view(shape) * self.scales[i]
        return out

    def stacked(self, flats: list[torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Float weights of several chips stacked on a leading chip axis: name → (N, *shape)."""
        big = (flats if isinstance(flats, torch.Tensor) else torch.stack(flats)).float()  # (N, total)
        out = {}
        for i, (name, shape) in enumerate(zip(self.names, self.shapes)):
            out[name] = big[:, self.offsets[i] : self.offsets[i + 1]].reshape(big.shape[0], *shape) * self.scales[i]
        return out


def quantize_model(model: nn.Module, bits: int = 8) -> QuantizedWeights:
    """The int8 codes and scales of every Conv/Linear weight of ``model`` (the model is not changed)."""
    check_bits(bits)
    params = dict(model.named_parameters())
    names = quantized_weight_names(model)
    qs, scales, offsets = [], [], [0]
    for n in names:
        q, s = quantize(params[n], bits)
        qs.append(q.flatten())
        scales.append(s)
        offsets.append(offsets[-1] + q.numel())
    return QuantizedWeights(names, [params[n].shape for n in names], offsets, torch.cat(qs), torch.stack(scales), bits)

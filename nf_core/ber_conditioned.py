"""One generator for every voltage: a generator conditioned on the operating BER.

`BERConditioned` wraps any registered generator G. The BER enters twice, as c = log10(p)
normalised to about [-1, 1] over [1e-6, 1e-1]:
  - as a constant extra input channel: a 1×1 conv maps (x, c) — 4 channels — to the 3 channels G
    reads (initialised to pass x through unchanged and ignore c);
  - by FiLM on G's output: G(x)·(1 + γ(c)) + β(c), per channel, γ and β linear in c (initialised 0).
So a fresh wrapper computes exactly G(x); training teaches it to use the BER. The extra weights
(a 4→3 1×1 conv and a 1→6 Linear: 27 parameters) are Conv/Linear weights like any other, so they
are quantized and counted by the cost model.

The BER is a buffer (`ber`, default 0.01) so ``G(x)`` keeps the signature every caller uses;
``forward(x, ber=...)`` or `operating_ber` sets it for deployment at a chip's BER. Registered (by
nf_core/generators.py) as ``<name>_BER`` for the paper's generators (``ConvS_BER`` …).

Training (EOPM over a BER range): `BERRange` (nf_core/ber_range.py) draws each batch's BER
log-uniformly (or uniformly) from [lo, hi], deterministically from the batch's chip seeds, so a
resumed run sees the same BERs; `BERSampledChips`, the EOPM step's source of perturbed models,
draws the batch's chips at that BER and conditions G on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from nf_core.ber_range import BERRange
from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.eopm import RandomChips
from nf_core.validation import check_ber

LOG_BER_RANGE = (-6.0, -1.0)  # log10 BERs mapped to [-1, 1]
DEFAULT_BER = 0.01
SUFFIX = "_BER"


def ber_code(ber: torch.Tensor) -> torch.Tensor:
    """log10(BER) scaled to about [-1, 1] over 1e-6..1e-1 (BER 0 is clamped to 1e-12)."""
    lo, hi = LOG_BER_RANGE
    return (2 * (torch.log10(ber.clamp_min(1e-12)) - lo) / (hi - lo)) - 1


class BERConditioned(nn.Module):
    """G(x, p): any generator with the BER as an extra input channel and FiLM on its output."""

    def __init__(self, inner: nn.Module, ber: float = DEFAULT_BER) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = nn.Conv2d(4, 3, 1)
        self.film = nn.Linear(1, 6)
        with torch.no_grad():  # identity at initialisation: a fresh wrapper is exactly G
            self.adapter.weight.zero_()
            self.adapter.weight[:, :3, 0, 0].copy_(torch.eye(3))
            self.adapter.bias.zero_()
            self.film.weight.zero_()
            self.film.bias.zero_()
        self.register_buffer("ber", torch.tensor(float(check_ber(ber))))

    def forward(self, x: torch.Tensor, ber: float | torch.Tensor | None = None) -> torch.Tensor:
        p = self.ber if ber is None else torch.as_tensor(ber, dtype=x.dtype, device=x.device)
        c = ber_code(p.to(x.dtype)).reshape(-1, 1)  # (1, 1) or (B, 1)
        c = c.expand(x.shape[0], 1)
        h = self.adapter(torch.cat([x, c[:, :, None, None].expand(-1, 1, *x.shape[2:])], dim=1))
        gamma, beta = self.film(c).chunk(2, dim=1)
        return self.inner(h) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]

    def set_ber(self, ber: float) -> None:
        self.ber.fill_(check_ber(ber))


def is_ber_conditioned(generator: nn.Module) -> bool:
    return isinstance(generator, BERConditioned)


@contextmanager
def operating_ber(generator: nn.Module | None, ber: float) -> Iterator[None]:
    """Run a BER-conditioned generator at ``ber`` inside the block (a no-op for other generators)."""
    if not isinstance(generator, BERConditioned):
        yield
        return
    old = float(generator.ber)
    generator.set_ber(ber)
    try:
        yield
    finally:
        generator.set_ber(old)


class BERSampledChips(RandomChips):
    """Perturbed models of a BER-conditioned generator: each batch's chips are drawn at one BER
    from ``ber_range`` (a fixed function of the batch's chip seeds) and G is conditioned on it."""

    def __init__(
        self,
        bases: Sequence[DeployedModel],
        ber_range: BERRange,
        fault_model: str = "stuck_at",
        layout: str = "wrap",
        batching: str = "vmap",
    ) -> None:
        super().__init__(bases, ChipConfig(ber_range.lo, fault_model, layout), batching)
        self.ber_range = ber_range

    def start(self, step: int) -> None:
        """No prefetch: a batch's chips depend on its sampled BER."""

    def chip_for(self, chip_seeds: Sequence[int]) -> ChipConfig:
        return replace(self.chip, ber=self.ber_range.for_batch(chip_seeds))

    def prepare(self, generator: nn.Module, chip_seeds: Sequence[int]) -> dict[str, float]:
        if not isinstance(generator, BERConditioned):
            raise ValueError(f"{type(generator).__name__} is not BER-conditioned; use a *{SUFFIX} generator")  # noqa: TRY004
        ber = self.ber_range.for_batch(chip_seeds)
        generator.set_ber(ber)
        return {"ber": ber}


__all__ = [
    "LOG_BER_RANGE",
    "BERConditioned",
    "BERRange",
    "BERSampledChips",
    "ber_code",
    "is_ber_conditioned",
    "operating_ber",
]

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

Training (EOPM over a BER range): `BERRange` draws each batch's BER log-uniformly (or uniformly)
from [lo, hi], deterministically from the batch's chip seeds, so a resumed run sees the same BERs;
`ber_conditioned_step` draws the batch's chips at that BER and trains G conditioned on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from nf_core.chips import ChipConfig
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


@dataclass(frozen=True)
class BERRange:
    """Training BERs: each batch draws one BER from [lo, hi], log-uniform by default."""

    lo: float
    hi: float
    log: bool = True

    def __post_init__(self) -> None:
        check_ber(self.lo)
        check_ber(self.hi)
        if not 0 < self.lo <= self.hi:
            raise ValueError(f"BER range [{self.lo!r}, {self.hi!r}]: need 0 < lo <= hi (log-uniform needs lo > 0)")

    @classmethod
    def parse(cls, spec: Any) -> BERRange:
        """``{"range": [lo, hi], "log": true}`` (the sweep syntax) → BERRange."""
        if isinstance(spec, BERRange):
            return spec
        if not isinstance(spec, dict) or "range" not in spec or set(spec) - {"range", "log"}:
            raise ValueError(f"train_bers {spec!r}: expected {{range: [lo, hi], log: true|false}}")
        r = spec["range"]
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ValueError(f"train_bers range {r!r}: expected [lo, hi]")
        return cls(float(r[0]), float(r[1]), bool(spec.get("log", True)))

    def sample(self, u: float) -> float:
        """The BER at quantile u ∈ [0, 1)."""
        if self.log:
            return float(10 ** (math.log10(self.lo) + u * (math.log10(self.hi) - math.log10(self.lo))))
        return float(self.lo + u * (self.hi - self.lo))

    def for_batch(self, chip_seeds: Sequence[int]) -> float:
        """The batch's BER, a fixed function of its chip seeds (so resumed runs repeat it)."""
        u = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(s) for s in chip_seeds]))).random()
        return self.sample(float(u))


def ber_conditioned_step(
    generator: BERConditioned,
    bases: Sequence[Any],
    x: torch.Tensor,
    y: torch.Tensor,
    chip_seeds: Sequence[int],
    chip: ChipConfig,
    lam: float,
    optimizer: torch.optim.Optimizer,
    ber_range: BERRange,
    scheduler: Any = None,
    generator_bits: int | None = None,
    batching: str = "vmap",
) -> dict[str, float]:
    """One EOPM update at a sampled BER: the batch's chips are drawn at it and G is conditioned on it."""
    from nf_core.eopm import eopm_step

    ber = ber_range.for_batch(chip_seeds)
    generator.set_ber(ber)
    m = eopm_step(
        generator, bases, x, y, chip_seeds, replace(chip, ber=ber), lam, optimizer, scheduler, generator_bits, batching
    )
    return {**m, "ber": ber}


def train_ber_conditioned(
    generator: BERConditioned, bases: Sequence[Any], train_set: Any, cfg: Any, ber_range: BERRange, **kwargs: Any
) -> dict[str, Any]:
    """nf_core.train.train_generator with every batch at a BER drawn from ``ber_range`` (cfg.ber unused)."""
    from nf_core.train import train_generator

    if not isinstance(generator, BERConditioned):
        raise ValueError(f"{type(generator).__name__} is not BER-conditioned; use a *{SUFFIX} generator")  # noqa: TRY004

    def step_fn(g, x, y, seeds, opt, sched):
        return ber_conditioned_step(
            g, bases, x, y, seeds, cfg.chip, cfg.lam, opt, ber_range, sched, cfg.generator_bits, cfg.batching
        )

    return train_generator(generator, bases, train_set, cfg, step_fn=step_fn, **kwargs)


__all__ = [
    "LOG_BER_RANGE",
    "BERConditioned",
    "BERRange",
    "ber_code",
    "ber_conditioned_step",
    "is_ber_conditioned",
    "operating_ber",
    "train_ber_conditioned",
]

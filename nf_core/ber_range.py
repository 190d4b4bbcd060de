"""A range of training BERs for BER-conditioned generators (torch-free, so configs and trial specs can hold one).

`BERRange` draws each batch's BER log-uniformly (or uniformly) from [lo, hi], deterministically
from the batch's chip seeds, so a resumed run sees the same BERs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nf_core.validation import check_ber


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
        """``{"range": [lo, hi], "log": true}`` (the sweep syntax) → BERRange (for users calling nf_core directly)."""
        if isinstance(spec, BERRange):
            return spec
        if not isinstance(spec, dict) or "range" not in spec or set(spec) - {"range", "log"}:
            raise ValueError(f"train_bers {spec!r}: expected {{range: [lo, hi], log: true|false}}")
        r = spec["range"]
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ValueError(f"train_bers range {r!r}: expected [lo, hi]")
        return cls(float(r[0]), float(r[1]), bool(spec.get("log", True)))

    def to_dict(self) -> dict[str, Any]:
        """The sweep syntax ``{"range": [lo, hi], "log": …}`` (the inverse of `parse`)."""
        return {"range": [self.lo, self.hi], "log": self.log}

    def sample(self, u: float) -> float:
        """The BER at quantile u ∈ [0, 1)."""
        if self.log:
            return float(10 ** (math.log10(self.lo) + u * (math.log10(self.hi) - math.log10(self.lo))))
        return float(self.lo + u * (self.hi - self.lo))

    def for_batch(self, chip_seeds: Sequence[int]) -> float:
        """The batch's BER, a fixed function of its chip seeds (so resumed runs repeat it)."""
        u = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(s) for s in chip_seeds]))).random()
        return self.sample(float(u))

"""Evaluation metrics: CA, PA (mean ± std over evaluation chips), CA (NF), PA (NF), RP, efficiency.

The same function scores transfer: a generator trained on one model is applied, unchanged,
to any other deployed model at any BER and fault model. Definitions: docs/method.md, Metrics.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.transform import neuralfuse

DEFAULT_EVAL_CHIPS = 10


def evaluation_chip_seeds(m: int = DEFAULT_EVAL_CHIPS) -> list[int]:
    """The fixed evaluation chips: seeds 0..m-1 (training chips are drawn at or above 2**62)."""
    if m < 1:
        raise ValueError(f"number of evaluation chips {m!r} must be >= 1")
    return list(range(m))


def _accuracy(logits_fn, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    correct = total = 0
    for x, y in batches:
        correct += (logits_fn(x).argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total


@torch.no_grad()
def evaluate(
    base: DeployedModel,
    loader: DataLoader,
    chip: ChipConfig,
    generator: nn.Module | None = None,
    chip_seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Accuracies in percent. PA std is the population std (ddof 0) over the chips."""
    seeds = list(chip_seeds) if chip_seeds is not None else evaluation_chip_seeds()
    dev = base.device
    if generator is not None:
        generator.eval()
    # Inputs and transformed inputs are computed once and reused by every chip.
    clean = [(x.to(dev), y.to(dev)) for x, y in loader]
    fused = [(neuralfuse(x, generator), y) for x, y in clean] if generator is not None else None
    out: dict[str, Any] = {"ber": chip.ber, "fault_model": chip.fault_model, "layout": chip.layout,
                           "bits": base.bits, "chips": len(seeds), "chip_seeds": seeds}
    out["ca"] = _accuracy(base.logits, clean)
    pa, pa_nf = [], []
    for s in seeds:
        w = base.chip_weights(s, chip)
        pa.append(_accuracy(lambda x: base.logits(x, w), clean))
        if fused is not None:
            pa_nf.append(_accuracy(lambda x: base.logits(x, w), fused))
    out.update(pa_mean=float(np.mean(pa)), pa_std=float(np.std(pa)), pa_per_chip=pa)
    if fused is not None:
        n_params = sum(p.numel() for p in generator.parameters())
        out["ca_nf"] = _accuracy(base.logits, fused)
        out.update(pa_nf_mean=float(np.mean(pa_nf)), pa_nf_std=float(np.std(pa_nf)), pa_nf_per_chip=pa_nf)
        out["rp"] = recovery(out["pa_nf_mean"], out["pa_mean"])
        out["generator_params"] = n_params
        out["efficiency"] = efficiency_ratio(out["rp"], n_params)
    return out


def recovery(pa_nf_mean: float, pa_mean: float) -> float:
    """RP: PA (NF) mean − PA mean, in percentage points."""
    return pa_nf_mean - pa_mean


def efficiency_ratio(rp: float, generator_params: int) -> float:
    """RP per million generator parameters."""
    return rp / (generator_params / 1e6)

"""Evaluation metrics: CA, PA (mean ± std over evaluation chips), CA (NF), PA (NF), RP, efficiency.

The same function scores transfer: a generator trained on one model is applied, unchanged,
to any other deployed model at any BER and fault model. Definitions: docs/method.md, Metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def accuracy(logits_fn, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Accuracy in percent of ``logits_fn`` over the (inputs, labels) batches."""
    correct = total = 0
    for x, y in batches:
        correct += (logits_fn(x).argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total


def _accuracies(logits_fn, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], dev: torch.device) -> list[float]:
    """Per-chip accuracies from logits (chips, B, C) of a group of chips on every batch."""
    correct, total = None, 0
    for x, y in batches:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        c = (logits_fn(x).argmax(-1) == y).sum(-1)
        correct = c if correct is None else correct + c
        total += len(y)
    return [100.0 * v / total for v in correct.tolist()]


def chips_per_pass_default(device: torch.device | str) -> int:
    """Chips per forward in evaluation: one on the CPU (the per-chip loop wins there, see the
    benchmarks), 8 on GPUs (larger kernels; unmeasured)."""
    return 8 if torch.device(device).type == "cuda" else 1


def _resident(
    batches: list[tuple[torch.Tensor, torch.Tensor]], dev: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test set on the device when it fits in a quarter of the free memory (CIFAR's 10k images do),
    else kept on the host (pinned) and copied batch by batch."""
    if dev.type != "cuda":
        return [(x.to(dev), y.to(dev)) for x, y in batches]
    need = sum(x.nbytes + y.nbytes for x, y in batches)
    if need <= torch.cuda.mem_get_info(dev)[0] // 4:
        return [(x.to(dev), y.to(dev)) for x, y in batches]
    return [(x.pin_memory(), y.pin_memory()) for x, y in batches]


@torch.no_grad()
def evaluate(
    base: DeployedModel,
    loader: DataLoader,
    chip: ChipConfig,
    generator: nn.Module | None = None,
    chip_seeds: Sequence[int] | None = None,
    chips_per_pass: int | None = None,
    prefetch: bool | None = None,
) -> dict[str, Any]:
    """Accuracies in percent. PA std is the population std (ddof 0) over the chips.

    ``chips_per_pass`` chips share one forward (vmap over their stacked weights; default by
    device, `chips_per_pass_default`); ``prefetch`` prepares the next group's chips in a
    background thread (default: on with CUDA). Results are the same whatever the choice.
    """
    from nf_core.prefetch import ChipPrefetcher, prefetch_default

    seeds = list(chip_seeds) if chip_seeds is not None else evaluation_chip_seeds()
    dev = base.device
    group = chips_per_pass if chips_per_pass is not None else chips_per_pass_default(dev)
    if not isinstance(group, int) or group < 1:
        raise ValueError(f"chips_per_pass {chips_per_pass!r} must be an integer >= 1")
    if generator is not None:
        generator.eval()
    # Inputs and transformed inputs are computed once and reused by every chip.
    clean = _resident(list(loader), dev)
    fused = None
    if generator is not None:
        gdev = next(generator.parameters()).device
        fused = [(neuralfuse(x.to(gdev), generator).to(x.device), y) for x, y in clean]
    ca = accuracy(lambda x: base.logits(x.to(dev, non_blocking=True)), clean)
    groups = [seeds[i : i + group] for i in range(0, len(seeds), group)]
    use_prefetch = prefetch_default(dev) if prefetch is None else prefetch
    pre = (
        ChipPrefetcher([base], chip, lambda i: groups[i], lambda i: i + 1 if i + 1 < len(groups) else None, first_key=0)
        if use_prefetch
        else None
    )
    pa, pa_nf = [], []
    try:
        for gi, g in enumerate(groups):
            codes = pre.get(gi)[0] if pre is not None else base.chip_codes(g, chip)
            stacked = base.stacked_from_codes(codes)
            batching = "vmap" if len(g) > 1 else "loop"

            def fn(x: torch.Tensor, stacked=stacked, batching=batching) -> torch.Tensor:
                return base.perturbed_logits(x, stacked, batching)

            pa += _accuracies(fn, clean, dev)
            if fused is not None:
                pa_nf += _accuracies(fn, fused, dev)
    finally:
        if pre is not None:
            pre.close()
    ca_nf = accuracy(lambda x: base.logits(x.to(dev, non_blocking=True)), fused) if fused is not None else None
    return evaluation_metrics(chip_head(chip, base.bits, seeds), ca, pa, generator, ca_nf, pa_nf)


def chip_head(chip: ChipConfig, bits: int, seeds: Sequence[int]) -> dict[str, Any]:
    """What an evaluation on random chips ran at: BER, fault model, layout, bits and the chips."""
    return {
        "ber": chip.ber,
        "fault_model": chip.fault_model,
        "layout": chip.layout,
        "bits": bits,
        "chips": len(seeds),
        "chip_seeds": list(seeds),
    }


def evaluation_metrics(
    head: dict[str, Any],
    ca: float,
    pa: Sequence[float],
    generator: nn.Module | None = None,
    ca_nf: float | None = None,
    pa_nf: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The metrics of every evaluation path (random chips, pool actors, measured fault maps) from
    its accuracies: CA, PA mean ± std (population std, ddof 0) and per chip; with a generator
    also CA (NF), PA (NF), RP, the generator's parameters and the efficiency (RP per M params).
    ``head`` (what the chips were) comes first."""
    pa = list(pa)
    out: dict[str, Any] = {**head, "ca": ca, "pa_mean": float(np.mean(pa)), "pa_std": float(np.std(pa))}
    out["pa_per_chip"] = pa
    if generator is not None:
        pa_nf = list(pa_nf or [])
        n_params = sum(p.numel() for p in generator.parameters())
        out.update(ca_nf=ca_nf, pa_nf_mean=float(np.mean(pa_nf)), pa_nf_std=float(np.std(pa_nf)), pa_nf_per_chip=pa_nf)
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

"""EOPM: Expectation Over Perturbed Models (the NeuralFuse training objective).

loss = CE(f(x'), y) + λ · (1/N) Σ_k CE(f_pk(x'), y),  x' = clamp(x + G(x), -1, 1),
with N chips sampled afresh for each batch; only G is trained. For an ensemble of base
models (the paper's Appendix G.4) the per-model losses are summed. See docs/method.md, EOPM.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.quant import fake_quant_params
from nf_core.transform import neuralfuse

if TYPE_CHECKING:
    from nf_core.prefetch import ChipPrefetcher

TRAIN_SEED_BASE = 2**62  # training chips live at or above this; evaluation chips below it


def training_chip_seeds(seed: int, step: int, n: int) -> list[int]:
    """The n chips of one training batch: a seeded stream, disjoint from evaluation chips."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(n, dtype=np.uint64)
    return [TRAIN_SEED_BASE + int(s % np.uint64(TRAIN_SEED_BASE)) for s in state]


def training_chips(
    bases: Sequence[DeployedModel],
    chip: ChipConfig,
    seed: int,
    n: int,
    start_step: int = 0,
    prefetch: bool | None = None,
) -> ChipPrefetcher | None:
    """A prefetcher of the training chips of steps start_step, start_step + 1, ... (None: draw in the step).

    ``prefetch`` None chooses by device (on with CUDA); True forces it (also on the CPU, for tests).
    """
    from nf_core.prefetch import ChipPrefetcher, prefetch_default

    if prefetch is None:
        prefetch = any(prefetch_default(b.device) for b in bases)
    if not prefetch:
        return None
    return ChipPrefetcher(
        bases, chip, lambda step: training_chip_seeds(seed, step, n), lambda step: step + 1, first_key=start_step
    )


def transform(generator: nn.Module, x: torch.Tensor, generator_bits: int | None = None) -> torch.Tensor:
    """x' for training: G optionally run with fake-quantized weights (quantization-aware)."""
    weights = None if generator_bits is None else fake_quant_params(generator, generator_bits)
    return neuralfuse(x, generator, weights)


def deployed_generator(generator: nn.Module, generator_bits: int | None = None) -> nn.Module:
    """G as evaluated: a frozen eval-mode copy whose Conv/Linear weights are the b-bit values
    Ŵ it was trained with (``transform`` with the same bits); None: the float weights."""
    out = copy.deepcopy(generator).eval().requires_grad_(False)
    if generator_bits is not None:
        with torch.no_grad():
            for name, w in fake_quant_params(out, generator_bits).items():
                out.get_parameter(name).copy_(w)
    return out


def eopm_loss(
    bases: Sequence[DeployedModel],
    x_t: torch.Tensor,
    y: torch.Tensor,
    chip_seeds: Sequence[int],
    chip: ChipConfig,
    lam: float,
    batching: str = "vmap",
    chip_codes: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """EOPM loss of transformed inputs ``x_t`` (computed once per batch) over N chips per base model.

    ``chip_codes`` (one (N, total) int8 tensor per base, e.g. from `ChipPrefetcher`) are the
    chips of ``chip_seeds`` prepared ahead; without them the chips are drawn here.
    """
    total = x_t.new_zeros(())
    clean_ce, pert_ce = 0.0, 0.0
    for i, base in enumerate(bases):
        codes = chip_codes[i] if chip_codes is not None else base.chip_codes(chip_seeds, chip)
        stacked = base.stacked_from_codes(codes)  # dequantized on the base's device
        with base.autocast():  # bf16 base passes only when the base model opts in
            ce_clean = F.cross_entropy(base.logits(x_t), y).float()
            logits = base.perturbed_logits(x_t, stacked, batching).float()  # (N, B, C)
        ce_pert = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]))  # mean over chips and batch
        total = total + ce_clean + lam * ce_pert
        clean_ce += ce_clean.item()
        pert_ce += ce_pert.item()
    return total, {"loss": total.item(), "ce_clean": clean_ce / len(bases), "ce_perturbed": pert_ce / len(bases)}


class PerturbedModels:
    """Where the N perturbed models of an EOPM batch come from: one class per source.

    `eopm_step` calls ``prepare`` before G runs (e.g. to condition G on the batch's BER), then
    ``loss`` on the transformed inputs; the loop calls ``start`` once before its first step and
    ``close`` at the end. A new source (pool actors, BER-sampled chips, adversarial bit errors …)
    subclasses this and implements ``loss``: a scalar whose gradient w.r.t. ``x_t`` is the EOPM
    gradient, and the step's metrics (``loss``, ``ce_clean``, ``ce_perturbed``).
    """

    def start(self, step: int) -> None:
        """Before the first step (``step``: the step the loop starts or resumes at)."""

    def prepare(self, generator: nn.Module, chip_seeds: Sequence[int]) -> dict[str, float]:
        """Before G runs on the batch; returns extra metrics of the step (none by default)."""
        return {}

    def loss(
        self, x_t: torch.Tensor, y: torch.Tensor, chip_seeds: Sequence[int], step: int, lam: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        """After the last step (stop background work)."""


class RandomChips(PerturbedModels):
    """In-process random chips of the deployed base models at one chip config (`eopm_loss`);
    with ``prefetch`` (None: on with CUDA) the next step's chips are drawn in the background."""

    def __init__(
        self,
        bases: Sequence[DeployedModel],
        chip: ChipConfig,
        batching: str = "vmap",
        seed: int = 0,
        n: int = 0,
        prefetch: bool | None = False,
    ) -> None:
        self.bases, self.chip, self.batching = list(bases), chip, batching
        self.seed, self.n, self.prefetch = seed, n, prefetch
        self._chips: ChipPrefetcher | None = None

    def start(self, step: int) -> None:
        self._chips = training_chips(self.bases, self.chip, self.seed, self.n, step, self.prefetch)

    def chip_for(self, chip_seeds: Sequence[int]) -> ChipConfig:
        """The chip config of the batch (one for every batch here)."""
        return self.chip

    def loss(
        self, x_t: torch.Tensor, y: torch.Tensor, chip_seeds: Sequence[int], step: int, lam: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        codes = self._chips.get(step) if self._chips is not None else None
        return eopm_loss(self.bases, x_t, y, chip_seeds, self.chip_for(chip_seeds), lam, self.batching, codes)

    def close(self) -> None:
        if self._chips is not None:
            self._chips.close()
            self._chips = None


def eopm_step(
    generator: nn.Module,
    models: PerturbedModels,
    x: torch.Tensor,
    y: torch.Tensor,
    chip_seeds: Sequence[int],
    lam: float,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    generator_bits: int | None = None,
    step: int = 0,
) -> dict[str, float]:
    """One generator update: G(x) once, clean + N perturbed passes from ``models``, backward into G only."""
    generator.train()
    extra = models.prepare(generator, chip_seeds)
    x_t = transform(generator, x, generator_bits)
    loss, metrics = models.loss(x_t, y, chip_seeds, step, lam)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()  # the paper steps StepLR every iteration
    return {**metrics, **extra}

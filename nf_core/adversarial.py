"""Adversarial bit errors: the flips of stored weight bits that most raise the loss (the paper's Appendix I).

After Stutz et al., "Bit error robustness for energy-efficient DNN accelerators" (MLSys 2021) and
"Random and adversarial bit error robustness: energy-efficient and secure DNN accelerators" (TPAMI 2023):
an adversary flips at most ``budget`` bits of the stored b-bit weight codes so as to maximise the
cross-entropy of the quantized model, found by gradient-guided search on the bit level with a
projection onto the budget. Our own formulation of that attack (docs/method.md, "Adversarial bit errors"):

* The unit of the budget is an SRAM *cell*, as for random chips (a BER counts faulty cells). Under the
  ``wrap`` and ``reference`` layouts one cell holds the same bit of every weight laid onto it (every layer
  restarts at address 0), so flipping it flips all of them; under ``flat`` a cell is one weight bit.
  Only cells that hold a stored bit under the layout are candidates (bits below b; for ``reference``, the
  s·b used columns of a row; array bytes no weight reaches are left out).
* Gain of toggling cell c at the current codes q, to first order: Σ_{weight bits on c} ∂L/∂q_i · Δq_i,
  where Δq_i is the change of the (sign-extended, as chips read them) integer code when that bit toggles;
  ∂L/∂q_i = scale · ∂L/∂Ŵ_i comes from one backward pass through the deployed model.
* Projected ascent: the score of a cell is its gain of being flipped rather than not (the toggle gain
  for unflipped cells, minus it for flipped ones); the projection onto the budget keeps the ``budget``
  best-scoring cells (ties broken by a seeded random order). Step 1 from the clean codes is the one-shot
  gradient ranking; later steps re-linearise at the perturbed codes. The set with the highest true loss
  seen is returned, so extra steps never make the attack weaker. A chip's start is the clean codes or,
  for diversity among several adversarial chips, ``budget`` random candidate cells (seeded).
* Fault model: every chosen cell *flips* (Stutz et al.'s model), so the result is named ``flip``.

An adversarial chip is a set of cells under a ChipConfig's layout and geometry, applied to the stored
codes exactly as a ``flip`` chip of nf_core.chips with the same faulty cells (tests/test_adversarial.py
checks the two agree), so evaluation and EOPM consume its codes like any chip's.

`PerturbedModelSource` serves the chips of one EOPM step: ``draw(step, x_t, y)`` → one (N, total) int8
code tensor per base model, adversarial chips alone (``chips: adversarial``) or mixed with EOPM's random
chips (``chips: mixed``); `AdversarialChips` serves them to `nf_core.eopm.eopm_step` (a `PerturbedModels`
source: ``train_generator(..., models=AdversarialChips(...))``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nf_core.chips import ChipConfig, _layer_indices, perturb_codes
from nf_core.deployed import DeployedModel
from nf_core.eopm import PerturbedModels, eopm_loss, training_chip_seeds
from nf_core.quant import QuantizedWeights
from nf_core.validation import check_choice

CHIP_MODES = ("random", "adversarial", "mixed")  # where EOPM's N perturbed models come from


# ---------------------------------------------------------------- cells ↔ weight bits
def cell_count(qw: QuantizedWeights, cfg: ChipConfig) -> int:
    """Cells of the array the chip's cell indices address (flat: 8 per weight byte of the model)."""
    return qw.numel * 8 if cfg.layout == "flat" else cfg.array_bytes * 8


def _layer_cells(qw: QuantizedWeights, cfg: ChipConfig, layer: int) -> torch.Tensor:
    """(n, b) cell index of every stored bit of every weight of layer ``layer`` (the layouts of nf_core.chips)."""
    lo, hi = qw.offsets[layer], qw.offsets[layer + 1]
    i = torch.arange(hi - lo, device=qw.flat.device, dtype=torch.int64)[:, None]
    bit = torch.arange(qw.bits, device=qw.flat.device, dtype=torch.int64)[None, :]
    if cfg.layout == "flat":
        return 8 * (lo + i) + bit
    if cfg.layout == "wrap":
        return 8 * (i % cfg.array_bytes) + bit
    s = cfg.cols // qw.bits  # reference: s weights per row, runs of s² consecutive weights per row
    return ((i // (s * s)) % cfg.rows) * cfg.cols + (i % s) * qw.bits + bit


def _toggle_deltas(q: torch.Tensor, bits: int, layout: str) -> torch.Tensor:
    """(n, b) change of each code when one stored bit toggles, read back as chips read codes."""
    u = (q.to(torch.int32) & 0xFF)[:, None] ^ (1 << torch.arange(bits, device=q.device, dtype=torch.int32))[None, :]
    if bits < 8 and layout != "reference":
        u = u & ((1 << bits) - 1)  # the b stored bits, sign-extended from bit b-1
        new = torch.where(u >= 1 << (bits - 1), u - (1 << bits), u)
    else:
        new = torch.where(u >= 128, u - 256, u)  # int8 two's complement (reference: upper bits unchanged)
    return new - q.to(torch.int32)[:, None]


def candidate_cells(qw: QuantizedWeights, cfg: ChipConfig) -> np.ndarray:
    """Sorted indices of the cells that hold at least one stored weight bit under the layout."""
    hit = torch.zeros(cell_count(qw, cfg), dtype=torch.bool, device=qw.flat.device)
    for layer in range(len(qw.names)):
        hit[_layer_cells(qw, cfg, layer).flatten()] = True
    return np.flatnonzero(hit.cpu().numpy()).astype(np.int64)


def cells_to_codes(qw: QuantizedWeights, cells: np.ndarray, cfg: ChipConfig) -> torch.Tensor:
    """Stored codes with every weight bit on ``cells`` flipped: a new int8 buffer like ``qw.flat``.

    Sparse, as nf_core.chips applies a flip chip: per faulty byte slot an XOR mask, mapped onto the weights
    that slot serves, then (b < 8, not ``reference``) the b stored bits sign-extended.
    """
    out = qw.flat.clone()
    cells = np.unique(np.asarray(cells, dtype=np.int64))
    b = qw.bits
    if cfg.layout == "reference":  # slot = row·s + column // b, as in nf_core.chips
        s = cfg.cols // b
        row, col = cells // cfg.cols, cells % cfg.cols
        slot, bit, keep = row * s + col // b, col % b, col < s * b
    else:
        slot, bit = cells >> 3, cells & 7
        keep = bit < b  # cells beyond the b stored bits hold nothing
    slot, bit = slot[keep], bit[keep]
    if slot.size == 0:
        return out
    uniq, inv = np.unique(slot, return_inverse=True)
    xor = np.zeros(uniq.size, dtype=np.int32)
    np.bitwise_or.at(xor, inv, (1 << bit).astype(np.int32))
    if cfg.layout == "flat":
        keep = uniq < qw.numel
        idx, which = uniq[keep], np.flatnonzero(keep)
    else:
        parts = [(_layer_indices(cfg, uniq, hi - lo, b), lo) for lo, hi in zip(qw.offsets[:-1], qw.offsets[1:])]
        idx = np.concatenate([i + lo for (i, _), lo in parts])
        which = np.concatenate([w for (_, w), _ in parts])
    if idx.size:
        t_idx = torch.from_numpy(idx).to(out.device)
        mask = torch.from_numpy(xor[which]).to(out.device)
        out[t_idx] = ((out[t_idx].to(torch.int32) & 0xFF) ^ mask).to(torch.uint8).view(torch.int8)
    if b < 8 and cfg.layout != "reference":
        out.bitwise_left_shift_(8 - b).bitwise_right_shift_(8 - b)  # arithmetic shift: sign extension
    return out


# ---------------------------------------------------------------- the attack
@dataclass(frozen=True)
class AdversarialChip:
    """A chip of adversarially chosen faulty cells (all flipping) under ``cfg``'s layout and geometry."""

    cells: np.ndarray  # sorted, unique int64 cell indices (row·cols + column; flat: 8·weight + bit)
    cfg: ChipConfig
    loss: float  # cross-entropy on the attacked batch with these flips
    clean_loss: float  # … and without them

    @property
    def budget(self) -> int:
        return int(self.cells.size)

    def codes(self, qw: QuantizedWeights) -> torch.Tensor:
        return cells_to_codes(qw, self.cells, self.cfg)


def _loss_and_code_grad(base: DeployedModel, codes: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy of the deployed model on ``codes`` and its gradient w.r.t. the (float) codes."""
    q = codes.to(base.device).float().requires_grad_(True)
    stacked = base.stacked_from_codes(q[None])  # dequantize (· scale), fold, layout: all differentiable
    loss = F.cross_entropy(base.logits(x, {k: v[0] for k, v in stacked.items()}), y)
    (grad,) = torch.autograd.grad(loss, q)
    return float(loss.detach()), grad


def _scores(qw: QuantizedWeights, cfg: ChipConfig, codes: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """First-order gain of toggling each cell at ``codes``: Σ over its weight bits of ∂L/∂q · Δq."""
    scores = torch.zeros(cell_count(qw, cfg), dtype=torch.float64, device=codes.device)
    for layer in range(len(qw.names)):
        lo, hi = qw.offsets[layer], qw.offsets[layer + 1]
        gain = grad[lo:hi].double()[:, None] * _toggle_deltas(codes[lo:hi], qw.bits, cfg.layout).double()
        scores.index_add_(0, _layer_cells(qw, cfg, layer).flatten(), gain.flatten())
    return scores


def _project(score: np.ndarray, priority: np.ndarray, budget: int) -> np.ndarray:
    """Positions of the ``budget`` highest scores (ties: lowest seeded priority first)."""
    if budget == 0:
        return np.zeros(0, np.int64)
    kth = np.partition(score, score.size - budget)[score.size - budget]  # the budget-th largest score
    sel = np.flatnonzero(score >= kth)  # a full sort of ~10^6 cells would dominate a step
    if sel.size > budget:
        sel = sel[np.lexsort((priority[sel], -score[sel]))[:budget]]
    return np.sort(sel)


def bit_error_attack(
    base: DeployedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: int,
    cfg: ChipConfig,
    steps: int = 5,
    seed: int = 0,
    random_start: bool = False,
    candidates: np.ndarray | None = None,
) -> AdversarialChip:
    """Exactly ``budget`` cells whose flips raise the cross-entropy of ``base`` on (x, y) the most.

    Projected gradient ascent on the bit level (Stutz et al., 2021; module doc): ``steps`` re-linearisations,
    each followed by the projection onto the budget; the best set by true loss is kept. ``seed`` fixes the
    tie-breaking order and the random start; the same inputs and seed give the same chip.
    """
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 0:
        raise ValueError(f"budget {budget!r} must be a non-negative integer (flipped bit cells)")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps {steps!r} must be an integer >= 1")
    qw = base.qw
    cand = candidate_cells(qw, cfg) if candidates is None else candidates
    if budget > cand.size:
        raise ValueError(f"budget {budget} exceeds the {cand.size} cells holding weight bits under layout {cfg.layout}")
    x, y = x.to(base.device), y.to(base.device)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0xB17])))
    priority = rng.permutation(cand.size)
    chosen = np.sort(rng.choice(cand.size, budget, replace=False)) if random_start else np.zeros(0, np.int64)
    clean_loss, best_loss, best = None, -np.inf, None
    for t in range(steps + 1):
        codes = cells_to_codes(qw, cand[chosen], cfg)
        loss, grad = _loss_and_code_grad(base, codes, x, y)
        if clean_loss is None:
            clean_loss = loss if not random_start else _loss_and_code_grad(base, qw.flat, x, y)[0]
        if chosen.size == budget and loss > best_loss:
            best_loss, best = loss, chosen
        if t == steps:
            break
        toggle = _scores(qw, cfg, codes, grad)[torch.as_tensor(cand, device=codes.device)].cpu().numpy()
        flipped = np.zeros(cand.size, dtype=bool)
        flipped[chosen] = True
        score = np.where(flipped, -toggle, toggle)  # gain of "flipped" over "not flipped", per cell
        new = _project(score, priority, budget)
        if np.array_equal(new, chosen):
            break  # a fixed point of the projected ascent
        chosen = new
    assert best is not None  # step 1 always reaches a full-budget set
    return AdversarialChip(cand[best], cfg, float(best_loss), float(clean_loss))


def random_bit_errors(qw: QuantizedWeights, budget: int, cfg: ChipConfig, seed: int) -> np.ndarray:
    """``budget`` candidate cells drawn uniformly (seeded): random flips of the same budget, for comparison."""
    cand = candidate_cells(qw, cfg)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x7A4D])))
    return np.sort(cand[rng.choice(cand.size, budget, replace=False)])


# ---------------------------------------------------------------- EOPM with adversarial chips
@dataclass(frozen=True)
class AdversarialChipsConfig:
    """How EOPM's N perturbed models are made. ``mode``: ``random`` (EOPM's chips), ``adversarial`` (N
    adversarial chips of ``budget`` flipped cells each) or ``mixed`` (⌊N·fraction⌉ adversarial, clamped to
    1..N-1, the rest EOPM's random chips of the same step). ``steps``: projected-ascent steps per chip."""

    mode: str = "adversarial"
    budget: int = 100
    steps: int = 5
    fraction: float = 0.5

    def __post_init__(self) -> None:
        check_choice("chips", self.mode, CHIP_MODES)
        if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget < 0:
            raise ValueError(f"budget {self.budget!r} must be a non-negative integer (flipped bit cells)")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps {self.steps!r} must be an integer >= 1")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction {self.fraction!r} must lie strictly between 0 and 1 (adversarial share)")

    def n_adversarial(self, n: int) -> int:
        if self.mode == "random":
            return 0
        if self.mode == "adversarial":
            return n
        if n < 2:
            raise ValueError(f"chips: mixed needs n_chips >= 2 (one adversarial, one random); got {n}")
        return min(n - 1, max(1, round(n * self.fraction)))


class PerturbedModelSource:
    """The perturbed models of one EOPM step: ``draw(step, x_t, y)`` → one (N, total) int8 code tensor per base.

    Adversarial chip k of a step attacks base model b on the step's transformed inputs x_t (detached),
    starting from the clean codes for k = 0 and from ``budget`` random cells otherwise, seeded by
    (seed, step, b, k); random chips are EOPM's (`training_chip_seeds(seed, step, N)`, the trailing ones)
    at ``chip``'s BER and fault model. Every chip uses ``chip``'s layout and geometry.
    """

    def __init__(
        self, bases: Sequence[DeployedModel], chip: ChipConfig, cfg: AdversarialChipsConfig, n: int, seed: int = 0
    ) -> None:
        self.bases, self.chip, self.cfg, self.n, self.seed = list(bases), chip, cfg, int(n), int(seed)
        self.n_adversarial = cfg.n_adversarial(self.n)
        self._candidates = [candidate_cells(b.qw, chip) for b in self.bases]
        self.last: list[AdversarialChip] = []  # the adversarial chips of the latest draw (for logging)

    def draw(
        self, step: int, x_t: torch.Tensor, y: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        seeds = list(seeds) if seeds is not None else training_chip_seeds(self.seed, step, self.n)
        out, self.last = [], []
        x_t = x_t.detach()
        for b, (base, cand) in enumerate(zip(self.bases, self._candidates)):
            codes = []
            for k in range(self.n_adversarial):
                key = int(np.random.SeedSequence([self.seed, int(step), b, k]).generate_state(1)[0])
                adv = bit_error_attack(
                    base, x_t, y, self.cfg.budget, self.chip, self.cfg.steps, key, random_start=k > 0, candidates=cand
                )
                self.last.append(adv)
                codes.append(adv.codes(base.qw))
            codes += [perturb_codes(base.qw, s, self.chip) for s in seeds[self.n_adversarial : self.n]]
            out.append(torch.stack(codes))
        return out


class AdversarialChips(PerturbedModels):
    """EOPM's perturbed models from adversarial bit errors (``chips: adversarial``), alone or mixed with
    EOPM's random chips (``chips: mixed``): a `PerturbedModelSource` behind the `eopm_step` interface.

    Each step's chips are drawn by `PerturbedModelSource.draw` at the step's index, so a resumed run draws
    the same chips; the step's metrics add ``attack_loss`` (the mean cross-entropy the attacks reached).
    """

    def __init__(
        self,
        bases: Sequence[DeployedModel],
        chip: ChipConfig,
        cfg: AdversarialChipsConfig,
        n: int,
        seed: int = 0,
        batching: str = "loop",
    ) -> None:
        self.source = PerturbedModelSource(bases, chip, cfg, n, seed)
        self.batching = batching

    def loss(
        self, x_t: torch.Tensor, y: torch.Tensor, chip_seeds: Sequence[int], step: int, lam: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        src = self.source
        codes = src.draw(step, x_t, y, chip_seeds)
        loss, metrics = eopm_loss(src.bases, x_t, y, chip_seeds, src.chip, lam, self.batching, codes)
        if src.last:
            metrics["attack_loss"] = float(np.mean([c.loss for c in src.last]))
        return loss, metrics


__all__ = [
    "CHIP_MODES",
    "AdversarialChip",
    "AdversarialChips",
    "AdversarialChipsConfig",
    "PerturbedModelSource",
    "bit_error_attack",
    "candidate_cells",
    "cell_count",
    "cells_to_codes",
    "random_bit_errors",
]

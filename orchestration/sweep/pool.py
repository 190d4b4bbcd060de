"""Pool actors: one base model and its chips (perturbed copies) held in memory, served to trials.

Two kinds of access, like the paper's two scenarios:
  relaxed     transformed inputs + labels in → per-chip losses and the gradient w.r.t. the
              inputs out; the trial back-propagates that gradient through its generator.
  restricted  inputs in → predictions out (nothing about the model leaves the pool).

A `ChipPool` is plain Python (usable in-process); `PoolActor` is the same class as a Ray actor
that restarts when it dies. `PooledChips` (the EOPM step's perturbed models) and `evaluate_pooled`
accept a mix of both.
Chips are identified by seeds, so results do not depend on which pool scored which chip.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ray
import torch
import torch.nn as nn
import torch.nn.functional as F
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.deployed import DeployedModel
from nf_core.eopm import PerturbedModels
from nf_core.evaluate import chip_head, evaluation_chip_seeds, evaluation_metrics
from nf_core.models import create_model
from nf_core.transform import neuralfuse

Batches = list[tuple[torch.Tensor, torch.Tensor]]


class ChipPool:
    """One deployed base model plus an LRU cache of its chips' stored codes."""

    def __init__(
        self,
        model_state: dict[str, torch.Tensor],
        spec: dict[str, Any],
        bits: int = 8,
        device: str = "cpu",
        max_cached_chips: int = 32,
        batching: str = "vmap",
    ) -> None:
        """``spec``: {"model", "num_classes", "input_size", "width"}, as `create_model` takes them."""
        kw = dict(spec)
        module = create_model(kw.pop("model"), **kw)
        module.load_state_dict(model_state)
        self.base = DeployedModel(module, bits, device)
        self.spec, self.device, self.batching = dict(spec), torch.device(device), batching
        self.max_cached_chips = max_cached_chips
        # int8 codes, not float weights: 4× less memory per cached chip.
        self._cache: OrderedDict[tuple[int, ChipConfig], torch.Tensor] = OrderedDict()

    def describe(self) -> dict[str, Any]:
        """What this pool serves: model spec, weight bits, device."""
        return {"spec": self.spec, "bits": self.base.bits, "device": str(self.device)}

    def _codes(self, seed: int, chip: ChipConfig, keep: bool = True) -> torch.Tensor:
        key = (int(seed), chip)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        codes = perturb_codes(self.base.qw, int(seed), chip)
        if keep and self.max_cached_chips > 0:
            self._cache[key] = codes
            if len(self._cache) > self.max_cached_chips:
                self._cache.popitem(last=False)
        return codes

    def relaxed(
        self, x_t: torch.Tensor, y: torch.Tensor, seeds: Sequence[int], chip: ChipConfig, include_clean: bool = True
    ) -> dict[str, Any]:
        """Relaxed access: clean and per-chip CE (batch means) and their gradients w.r.t. ``x_t``.

        ``chip_grad`` is the gradient of the SUM of the given chips' losses, so results from
        several pools add up; the caller divides by the total number of chips.
        """
        x = x_t.detach().to(self.device).requires_grad_(True)
        y = y.to(self.device)
        out: dict[str, Any] = {"clean_loss": 0.0, "clean_grad": None, "chip_losses": [], "chip_grad": None}
        if include_clean:
            ce = F.cross_entropy(self.base.logits(x), y)
            out["clean_loss"] = ce.item()
            out["clean_grad"] = torch.autograd.grad(ce, x)[0].cpu()
        if seeds:
            # Training chips never recur (fresh seeds per batch): don't let them evict cached ones.
            stacked = self.base.stacked_from_codes([self._codes(s, chip, keep=False) for s in seeds])
            logits = self.base.perturbed_logits(x, stacked, self.batching)  # (N, B, C)
            per_chip = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(seeds)), reduction="none")
            per_chip = per_chip.view(len(seeds), -1).mean(1)  # (N,) batch means
            out["chip_losses"] = per_chip.tolist()
            out["chip_grad"] = torch.autograd.grad(per_chip.sum(), x)[0].cpu()
        return out

    @torch.no_grad()
    def _predict(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None) -> torch.Tensor:
        return self.base.logits(x.to(self.device), weights).argmax(1)

    def _weights(self, seed: int | None, chip: ChipConfig) -> dict[str, torch.Tensor] | None:
        return None if seed is None else self.base.weights_from_codes(self._codes(seed, chip))

    def restricted(self, x: torch.Tensor, seeds: Sequence[int] | None, chip: ChipConfig) -> torch.Tensor:
        """Restricted access: predicted classes, (len(seeds), B) int64; seeds None → clean model, (1, B)."""
        chips = [None] if seeds is None else list(seeds)
        x = x.to(self.device)
        return torch.stack([self._predict(x, self._weights(s, chip)) for s in chips]).cpu()

    def accuracies(self, batches: Batches, seeds: Sequence[int] | None, chip: ChipConfig) -> list[float]:
        """Accuracy in percent per chip over all batches (seeds None → [clean]), from predictions only."""
        batches = [(x.to(self.device), y.to(self.device)) for x, y in batches]  # moved once, not per chip
        total, out = sum(len(y) for _, y in batches), []
        for s in [None] if seeds is None else list(seeds):
            w = self._weights(s, chip)  # dequantized once per chip, reused by every batch
            correct = sum((self._predict(x, w) == y).sum().item() for x, y in batches)
            out.append(100.0 * correct / total)
        return out


# Dead actors restart (the constructor reruns from the same object-store state) and retry tasks.
PoolActor = ray.remote(max_restarts=-1, max_task_retries=3)(ChipPool)

Pool = ChipPool | ActorHandle


def make_pools(
    model_state: dict[str, torch.Tensor],
    spec: dict[str, Any],
    bits: int,
    n_actors: int,
    device: str = "cpu",
    num_cpus: float = 0.5,
    num_gpus: float = 0.0,
    placement_group: Any = None,
) -> list[ActorHandle]:
    """``n_actors`` pool actors of one base model; the state goes into the object store once.

    Trials pass ``ray.util.get_current_placement_group()`` so the actors use the trial's bundles.
    """
    state_ref = ray.put({k: v.detach().cpu() for k, v in model_state.items()})
    opts: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if placement_group is not None:
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group)
    handles = [PoolActor.options(**opts).remote(state_ref, spec, bits, device) for _ in range(n_actors)]
    for h in handles:
        # A restart reruns the constructor, which needs the state; Ray does not keep a creation
        # argument alive for it (ray-project/ray#53727), so each handle holds a reference.
        h._pool_state_ref = state_ref
    return handles


class _Shared:
    """A large argument for many pools: put into the object store once, only if an actor needs it."""

    def __init__(self, value: Any) -> None:
        self.value, self._ref = value, None

    def ref(self) -> ray.ObjectRef:
        if self._ref is None:
            self._ref = ray.put(self.value)
        return self._ref


def _run_all(calls: list[tuple[Pool, str, tuple]]) -> list[Any]:
    """Run ``pool.method(*args)`` for every call: actor calls first (in parallel), then local ones."""

    def args_for(args: tuple, remote: bool) -> list[Any]:
        return [(a.ref() if remote else a.value) if isinstance(a, _Shared) else a for a in args]

    refs = {
        i: getattr(p, m).remote(*args_for(a, True)) for i, (p, m, a) in enumerate(calls) if isinstance(p, ActorHandle)
    }
    out = [None if isinstance(p, ActorHandle) else getattr(p, m)(*args_for(a, False)) for p, m, a in calls]
    for i, v in zip(refs, ray.get(list(refs.values()))):
        out[i] = v
    return out


def _split(seeds: Sequence[int], n: int) -> list[list[int]]:
    """Deterministic round-robin split of the chip seeds over n pools."""
    return [list(seeds[r::n]) for r in range(n)]


class PooledChips(PerturbedModels):
    """The EOPM step's perturbed models behind pools (relaxed access): ``pools[m]`` are replicas of
    base model m (an ensemble sums the models' losses). The pools return losses and gradients
    w.r.t. the transformed inputs, not a graph: the loss handed to the step is a surrogate whose
    gradient w.r.t. ``x_t`` is theirs, so the step's update and metrics equal in-process chips'."""

    def __init__(self, pools: Sequence[Sequence[Pool]], chip: ChipConfig) -> None:
        if not all(isinstance(r, (list, tuple)) and r for r in pools):
            raise TypeError("pools must be a list (one per base model) of non-empty lists of pool replicas")
        self.pools, self.chip = [list(r) for r in pools], chip

    def loss(
        self, x_t: torch.Tensor, y: torch.Tensor, chip_seeds: Sequence[int], step: int, lam: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if not chip_seeds:
            raise ValueError("EOPM needs at least one chip seed")
        xs, ys = _Shared(x_t.detach().cpu()), _Shared(y.detach().cpu())
        calls, owner = [], []
        for m, replicas in enumerate(self.pools):
            for r, (pool, part) in enumerate(zip(replicas, _split(chip_seeds, len(replicas)))):
                if part or r == 0:  # replica 0 also does the clean pass
                    calls.append((pool, "relaxed", (xs, ys, part, self.chip, r == 0)))
                    owner.append(m)
        n = len(chip_seeds)
        grad = torch.zeros_like(xs.value)
        clean_ce, pert_ce = [0.0] * len(self.pools), [0.0] * len(self.pools)
        for m, res in zip(owner, _run_all(calls)):
            if res["clean_grad"] is not None:
                grad += res["clean_grad"]
                clean_ce[m] = res["clean_loss"]
            if res["chip_grad"] is not None:
                grad += lam * res["chip_grad"] / n
                pert_ce[m] += sum(res["chip_losses"]) / n  # mean over chips of batch means = eopm_loss's CE
        loss = sum(c + lam * p for c, p in zip(clean_ce, pert_ce))
        k = len(self.pools)
        surrogate = (x_t * grad.to(x_t.device)).sum()  # d/dx_t = grad, exactly
        return surrogate, {"loss": loss, "ce_clean": sum(clean_ce) / k, "ce_perturbed": sum(pert_ce) / k}


@torch.no_grad()
def evaluate_pooled(
    pools: Sequence[Pool],
    loader: Any,
    chip: ChipConfig,
    generator: nn.Module | None = None,
    chip_seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """`nf_core.evaluate.evaluate` with the chips fanned out over pools of one base model (restricted access)."""
    if not pools:
        raise ValueError("evaluate_pooled needs at least one pool")
    seeds = list(chip_seeds) if chip_seeds is not None else evaluation_chip_seeds()
    clean = [(x.cpu(), y.cpu()) for x, y in loader]
    fused = None
    if generator is not None:
        generator.eval()
        dev = next(generator.parameters()).device
        fused = [(neuralfuse(x.to(dev), generator).cpu(), y) for x, y in clean]
    sets = [_Shared(clean)] + ([_Shared(fused)] if fused is not None else [])
    parts = _split(seeds, len(pools))
    calls: list[tuple[Pool, str, tuple]] = [(pools[0], "describe", ())]
    calls += [(pools[0], "accuracies", (s, None, chip)) for s in sets]  # CA, CA (NF)
    calls += [(p, "accuracies", (s, part, chip)) for s in sets for p, part in zip(pools, parts) if part]
    res = _run_all(calls)
    info, cas, per_pool = res[0], res[1 : 1 + len(sets)], iter(res[1 + len(sets) :])
    per_chip = []
    for _ in sets:  # put the chips back in seed order
        acc = [0.0] * len(seeds)
        for r, part in enumerate(parts):
            if part:
                acc[r :: len(pools)] = next(per_pool)
        per_chip.append(acc)
    ca_nf, pa_nf = (cas[1][0], per_chip[1]) if fused is not None else (None, None)
    return evaluation_metrics(chip_head(chip, info["bits"], seeds), cas[0][0], per_chip[0], generator, ca_nf, pa_nf)

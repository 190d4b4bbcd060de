"""How a sweep's trials pack onto a Ray cluster, and what they cost (`nf sweep plan --cluster`).

The per-stage model is deliberately simple: each stage on its own; a trial's placement-group
bundles share one node (Tune packs them); within a stage all trials last epochs x
epoch_seconds, so they run in waves of the cluster's concurrency; node start-up and dataset
download are not counted. The makespan of the whole sweep, where stages overlap (the runner
has no stage barriers), comes from orchestration.cluster.schedule's simulation. Eval and transfer
trials count one epoch each (one evaluation pass), so give their seconds per trial. The cluster comes from
orchestration.cluster.clusterfile; the printed form from orchestration.commands.views.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

from orchestration.cluster.clusterfile import Cluster, NodeType, read_cluster
from orchestration.cluster.schedule import Node, Task, compare
from orchestration.spec.config import STAGES, SweepConfig
from orchestration.spec.plan import Item

_EPS = 1e-9  # fractional resources: 1 / 0.5 must floor to 2, not 1.9999


def trial_bundles(cfg: SweepConfig, stage: str) -> list[dict[str, float]]:
    """A trial's placement-group bundles: its own CPUs/GPUs, then one bundle per pool actor."""
    r = cfg.resources
    bundles = [{"CPU": r.cpus, "GPU": r.gpus}]
    actors = 0
    if stage == "generator" and cfg.generator.access == "pool":
        actors = cfg.generator.pool_actors * max(len(src) for src in cfg.source_list())
    elif stage in ("eval", "transfer"):
        actors = cfg.evaluation.pool_actors
    bundles += [{"CPU": r.pool_actor_cpus, "GPU": r.pool_actor_gpus}] * actors
    return [{k: v for k, v in b.items() if v} or {"CPU": 0.01} for b in bundles]


def stage_epochs(cfg: SweepConfig, stage: str) -> int:
    """Epochs of one trial; eval and transfer trials are one evaluation pass."""
    return {"base": cfg.base.epochs, "generator": cfg.generator.epochs}.get(stage, 1)


def trials_per_node(node: NodeType, cpus: float, gpus: float) -> int:
    """How many trials needing (cpus, gpus) fit one node; fractional GPUs share a device."""
    fits = []
    if gpus > 0:
        fits.append(math.floor(node.gpus / gpus + _EPS))
    if cpus > 0 and node.cpus is not None:
        fits.append(math.floor(node.cpus / cpus + _EPS))
    return min(fits) if fits else 0


def pack(
    cluster: Cluster, cpus: float, gpus: float, trials: int, max_concurrent: int | None = None
) -> tuple[int, dict[str, int]]:
    """Concurrent trials and the nodes of each type they occupy.

    Fills the head first (it is always there), then worker types in the autoscaler's order
    of preference: GPU nodes last for CPU-only trials (Ray keeps CPU work off them), then
    higher `priority` (spot before its on-demand twin), then more trials per node; within
    each type's bound and the global max_workers, and no more nodes than the trials need.
    """
    want = trials if max_concurrent is None else min(trials, max_concurrent)
    placed, nodes, workers_left = 0, {}, cluster.max_workers
    heads = [t for t in cluster.node_types if t.is_head]
    workers = sorted(
        (t for t in cluster.node_types if not t.is_head),
        key=lambda t: (gpus > 0 or t.gpus == 0, t.priority, trials_per_node(t, cpus, gpus)),
        reverse=True,
    )
    for t in heads + workers:
        per = trials_per_node(t, cpus, gpus)
        if per == 0 or placed >= want:
            continue
        limit = t.max_nodes if t.is_head else min(t.max_nodes, workers_left)
        n = min(limit, math.ceil((want - placed) / per))
        if n <= 0:
            continue
        nodes[t.name] = n
        placed += n * per
        if not t.is_head:
            workers_left -= n
    return min(placed, want), nodes


# ------------------------------------------------------------------------- estimate
def parse_epoch_seconds(text: str) -> float | dict[str, float]:
    """`120` (every stage) or `base=600,generator=120` (per stage; stages left out are not timed)."""
    text = text.strip()
    if "=" not in text:
        return _positive("--epoch-seconds", text)
    out: dict[str, float] = {}
    for part in text.split(","):
        stage, _, value = part.partition("=")
        stage = stage.strip()
        if stage not in STAGES:
            raise ValueError(f"--epoch-seconds: unknown stage {stage!r}; valid choices: {', '.join(STAGES)}")
        out[stage] = _positive(f"--epoch-seconds {stage}", value)
    return out


def _positive(where: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number of seconds") from None
    if not v > 0 or math.isinf(v):
        raise ValueError(f"{where}: {value!r} must be a positive number of seconds")
    return v


def estimate(
    cfg: SweepConfig,
    items: dict[str, list[Item]],
    cluster_yaml_path: str | None,
    epoch_seconds: dict[str, float] | float | None,
) -> dict[str, Any]:
    """Per stage: trials, resources per trial, GPU-hours, concurrency on the cluster, waves and
    wall-clock; plus totals. Without a cluster there is no packing; without epoch seconds, no hours."""
    if isinstance(epoch_seconds, (int, float)):
        epoch_seconds = {s: float(epoch_seconds) for s in STAGES}
    seconds = dict(epoch_seconds or {})
    cluster = read_cluster(cluster_yaml_path) if cluster_yaml_path else None
    stages: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for stage in STAGES:
        n = len(items.get(stage, []))
        bundles = trial_bundles(cfg, stage)
        cpus, gpus = sum(b.get("CPU", 0.0) for b in bundles), sum(b.get("GPU", 0.0) for b in bundles)
        epochs = stage_epochs(cfg, stage)
        sec = seconds.get(stage)
        trial_s = epochs * sec if sec is not None else None
        row: dict[str, Any] = {
            "trials": n,
            "epochs": epochs,
            "epoch_seconds": sec,
            "cpus_per_trial": cpus,
            "gpus_per_trial": gpus,
            "trial_hours": None if trial_s is None else trial_s / 3600,
            "gpu_hours": None if trial_s is None else n * trial_s * gpus / 3600,
            "cpu_hours": None if trial_s is None else n * trial_s * cpus / 3600,
        }
        if cluster is not None:
            concurrent, nodes = pack(cluster, cpus, gpus, n, cfg.resources.max_concurrent)
            capacity, _ = pack(cluster, cpus, gpus, 10**9, cfg.resources.max_concurrent)
            waves = math.ceil(n / concurrent) if concurrent else (0 if n == 0 else None)
            row.update(
                concurrent=concurrent,
                capacity=capacity,
                nodes=nodes,
                waves=waves,
                per_node={t.name: trials_per_node(t, cpus, gpus) for t in cluster.node_types},
                wall_hours=None if trial_s is None or waves is None else waves * trial_s / 3600,
            )
            if n and not concurrent:
                notes.append(
                    f"stage {stage}: no node type fits a trial ({cpus:g} CPU, {gpus:g} GPU): "
                    f"the trials would wait forever"
                )
        stages[stage] = row
    untimed = [s for s in STAGES if stages[s]["trials"] and stages[s]["epoch_seconds"] is None]
    if seconds and untimed:
        notes.append(f"not timed (no --epoch-seconds for them): {', '.join(untimed)}")
    if cluster is not None:
        notes += [
            f"node type {t.name}: {t.source}" for t in cluster.node_types if t.source.startswith(("unknown", "no "))
        ]

    def total(key: str) -> float | None:
        vals = [stages[s].get(key) for s in STAGES if stages[s]["trials"]]
        return sum(vals) if vals and all(v is not None for v in vals) else None

    schedule = None
    if cluster is not None and seconds:  # makespan with and without stage barriers (orchestration.cluster.schedule)
        schedule = simulate_plan(cfg, items, cluster, seconds)
    return {
        "sweep": cfg.name,
        "cluster": None if cluster is None else asdict(cluster),
        "schedule": schedule,
        "stages": stages,
        "total": {
            "trials": sum(r["trials"] for r in stages.values()),
            "gpu_hours": total("gpu_hours"),
            "cpu_hours": total("cpu_hours"),
            "wall_hours": total("wall_hours"),
        },
        "notes": notes,
    }


# ------------------------------------------------------------------ from a plan / a cluster
def tasks_from_plan(
    cfg: Any,
    items: dict[str, list[Any]],
    epoch_seconds: dict[str, float],
    scale: Callable[[Any], float] | None = None,
    group: str | None = None,
) -> list[Task]:
    """A sweep's items as tasks: ``epochs x epoch_seconds[stage] x scale(item)`` seconds and the
    stage's trial resources (`trial_bundles`). Ids are prefixed by the group
    (default: the sweep's name) so several sweeps can be simulated together."""
    g = cfg.name if group is None else group
    out = []
    for stage, stage_items in items.items():
        if not stage_items:
            continue
        if stage not in epoch_seconds:
            raise ValueError(f"no epoch seconds for stage {stage!r}")
        bundles = trial_bundles(cfg, stage)
        cpus, gpus = sum(b.get("CPU", 0.0) for b in bundles), sum(b.get("GPU", 0.0) for b in bundles)
        per = stage_epochs(cfg, stage) * epoch_seconds[stage]
        for it in stage_items:
            sec = per * (scale(it) if scale else 1.0)
            out.append(Task(f"{g}/{it.id}", sec, gpus, cpus, tuple(f"{g}/{n}" for n in it.needs), stage, g))
    return out


def cluster_nodes(cluster: Any, gpus: float, cpus: float) -> list[Node]:
    """The nodes of a cluster at its full size for trials of (cpus, gpus): the node types and
    counts `pack` fills with as many such trials as fit."""
    _, counts = pack(cluster, cpus, gpus, 10**9)
    types = {t.name: t for t in cluster.node_types}
    return [
        Node(types[name].gpus, types[name].cpus, name)
        for name, n in counts.items()
        for _ in range(n)
        if types[name].gpus or types[name].cpus
    ]


def simulate_plan(
    cfg: Any, items: dict[str, list[Any]], cluster: Any, epoch_seconds: dict[str, float]
) -> dict[str, Any] | None:
    """`nf sweep plan --cluster --epoch-seconds`: the comparison on the cluster at full size, or None
    when a stage with trials has no epoch seconds or the cluster cannot hold every trial."""
    if any(items.get(s) and s not in epoch_seconds for s in STAGES):
        return None
    tasks = tasks_from_plan(cfg, items, epoch_seconds)
    if not tasks:
        return None
    need = [(sum(b.get("GPU", 0.0) for b in bb), sum(b.get("CPU", 0.0) for b in bb)) for bb in _bundles(cfg, items)]
    gpus, cpus = max(need)  # the nodes the most demanding trial packs onto
    nodes = cluster_nodes(cluster, gpus, cpus)
    try:
        result = compare(tasks, nodes, STAGES)
    except ValueError:
        return None
    return {
        "nodes": _count(n.name for n in nodes),
        "gpus": sum(n.gpus for n in nodes),
        "runs": result,
        "max_concurrent_ignored": bool(cfg.resources.max_concurrent),  # not simulated: said in the output
    }


def _bundles(cfg: Any, items: dict[str, list[Any]]) -> list[list[dict[str, float]]]:
    return [trial_bundles(cfg, s) for s, v in items.items() if v]


def _count(names: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return out


def simulate_programme(
    cfgs: Sequence[Any],
    plans: Sequence[dict[str, list[Any]]],
    cluster_yaml_path: str,
    epoch_seconds: dict[str, float] | float,
) -> dict[str, Any] | None:
    """`nf sweep plan a.yaml b.yaml --cluster C --epoch-seconds S`: the sweeps simulated together on the
    cluster at full size, as `nf sweep run a.yaml b.yaml` runs them (one dataflow) and one after another;
    None when a stage with trials has no epoch seconds or the cluster cannot hold every trial."""
    seconds = {s: float(epoch_seconds) for s in STAGES} if isinstance(epoch_seconds, int | float) else epoch_seconds
    if any(items.get(s) and s not in seconds for items in plans for s in STAGES):
        return None
    tasks = [t for cfg, items in zip(cfgs, plans, strict=True) for t in tasks_from_plan(cfg, items, seconds)]
    if not tasks:
        return None
    need = [
        (sum(b.get("GPU", 0.0) for b in bb), sum(b.get("CPU", 0.0) for b in bb))
        for cfg, items in zip(cfgs, plans, strict=True)
        for bb in _bundles(cfg, items)
    ]
    gpus, cpus = max(need)
    nodes = cluster_nodes(read_cluster(cluster_yaml_path), gpus, cpus)
    try:
        result = compare(tasks, nodes, STAGES)
    except ValueError:
        return None
    return {"sweeps": [c.name for c in cfgs], "gpus": sum(n.gpus for n in nodes), "runs": result}

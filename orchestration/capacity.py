"""How a sweep's trials pack onto a Ray cluster, and what they cost: `nf sweep plan --cluster`.

The cluster is read the way Ray reads it, offline: a launcher YAML through Ray's own
``prepare_config`` (defaults filled, per-type worker bounds set, the ``local`` provider's
one node type derived from its IPs); a KubeRay ``RayCluster`` through the autoscaler's own
translation of the manifest. A node type's GPUs and CPUs come from its ``resources``, else
from a small table of instance types, else from ``--num-gpus``/``--num-cpus`` in its start
command (on-premises clusters).

The model is deliberately simple: stages run one after another (as the runner does); a
trial's placement-group bundles share one node (Tune packs them); within a stage all trials
last epochs x epoch_seconds, so they run in waves of the cluster's concurrency; node start-up
and dataset download are not counted. Eval and transfer trials count one epoch each (one
evaluation pass), so give their seconds per trial.
"""
from __future__ import annotations

import argparse
import copy
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from orchestration.config import STAGES, SweepConfig
from orchestration.plan import Item, format_plan

# (vCPUs, GPUs) of common instance types, for node types whose `resources` name no GPU.
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    # AWS
    "g4dn.xlarge": (4, 1), "g4dn.2xlarge": (8, 1), "g4dn.4xlarge": (16, 1), "g4dn.12xlarge": (48, 4),
    "g4dn.metal": (96, 8),
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4), "g5.24xlarge": (96, 4), "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "g6.12xlarge": (48, 4), "g6.48xlarge": (192, 8),
    "g6e.xlarge": (4, 1), "g6e.12xlarge": (48, 4), "g6e.48xlarge": (192, 8),
    "p3.2xlarge": (8, 1), "p3.8xlarge": (32, 4), "p3.16xlarge": (64, 8), "p3dn.24xlarge": (96, 8),
    "p4d.24xlarge": (96, 8), "p4de.24xlarge": (96, 8), "p5.48xlarge": (192, 8),
    "m5.xlarge": (4, 0), "m5.2xlarge": (8, 0), "m5.4xlarge": (16, 0),
    "m6i.xlarge": (4, 0), "m6i.2xlarge": (8, 0), "m6i.4xlarge": (16, 0), "c6i.4xlarge": (16, 0),
    # GCP (accelerator-optimized types come with their GPUs)
    "a2-highgpu-1g": (12, 1), "a2-highgpu-2g": (24, 2), "a2-highgpu-4g": (48, 4), "a2-highgpu-8g": (96, 8),
    "a2-ultragpu-1g": (12, 1), "a2-ultragpu-8g": (96, 8), "a3-highgpu-8g": (208, 8),
    "g2-standard-4": (4, 1), "g2-standard-8": (8, 1), "g2-standard-12": (12, 1), "g2-standard-16": (16, 1),
    "g2-standard-24": (24, 2), "g2-standard-32": (32, 1), "g2-standard-48": (48, 4), "g2-standard-96": (96, 8),
}
_GCP_GENERAL = re.compile(r"^[a-z]\d[a-z]?-(standard|highmem|highcpu)-(\d+)$")  # n2-standard-8: 8 vCPUs
_EPS = 1e-9  # fractional resources: 1 / 0.5 must floor to 2, not 1.9999


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its Ray resources and how many of it the cluster may hold."""

    name: str
    cpus: float | None  # None: unknown (not treated as a limit)
    gpus: float
    max_nodes: int  # the head type: 1
    is_head: bool = False
    priority: int = 0
    source: str = "resources"  # where cpus/gpus came from


@dataclass(frozen=True)
class Cluster:
    path: str
    name: str
    max_workers: int  # global bound on worker nodes (the head is not a worker)
    node_types: tuple[NodeType, ...]


# ------------------------------------------------------------------------ reading clusters
def read_cluster(path: str) -> Cluster:
    """The node types of a cluster launcher YAML or a KubeRay RayCluster manifest."""
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    except FileNotFoundError:
        raise ValueError(f"cluster file {path!r} does not exist") from None
    kuberay = [d for d in docs if isinstance(d, dict) and d.get("kind") == "RayCluster"]
    if kuberay:
        return _read_kuberay(path, kuberay[0])
    if len(docs) != 1 or not isinstance(docs[0], dict) or "provider" not in docs[0]:
        raise ValueError(f"{path!r} is neither a Ray cluster launcher YAML (with `provider`) "
                         f"nor a KubeRay manifest (kind: RayCluster)")
    return _read_launcher(path, docs[0])


def _read_launcher(path: str, raw: dict[str, Any]) -> Cluster:
    from ray.autoscaler._private.util import prepare_config

    try:
        cfg = prepare_config(copy.deepcopy(raw))
    except Exception as e:  # the local provider aborts through click on unsupported fields
        raise ValueError(f"{path}: Ray rejects this cluster config: {e}") from None
    provider = cfg["provider"]["type"]
    types = []
    for name, spec in cfg["available_node_types"].items():
        if provider == "local":  # one node type for head and workers; their start commands differ
            types.append(_local_type("head", cfg["head_start_ray_commands"], 1, True))
            types.append(_local_type(name, cfg["worker_start_ray_commands"], spec.get("max_workers", 0), False))
            continue
        is_head = name == cfg["head_node_type"]
        cpus, gpus, source = _launcher_resources(spec)
        types.append(NodeType(name, cpus, gpus, 1 if is_head else int(spec.get("max_workers", 0)), is_head,
                              int(spec.get("priority", 0)), source))
    return Cluster(path, cfg.get("cluster_name", "default"), int(cfg["max_workers"]), tuple(types))


def _launcher_resources(spec: dict[str, Any]) -> tuple[float | None, float, str]:
    res = spec.get("resources") or {}
    node = spec.get("node_config") or {}
    kind = node.get("InstanceType") or str(node.get("machineType", "")).rsplit("/", 1)[-1]
    table_cpus, table_gpus = INSTANCE_TYPES.get(kind, (None, None))
    if table_cpus is None and (m := _GCP_GENERAL.match(kind)):
        table_cpus, table_gpus = int(m.group(2)), 0
    accel = sum(int(a.get("acceleratorCount", 0)) for a in node.get("guestAccelerators") or [])
    if accel:
        table_gpus = accel
    if "GPU" in res:
        gpus, source = float(res["GPU"]), "resources"
    elif table_gpus is not None:
        gpus, source = float(table_gpus), f"instance type {kind}"
    else:
        gpus, source = 0.0, f"unknown instance type {kind!r}: 0 GPUs assumed (set resources: {{GPU: n}})"
    cpus = float(res["CPU"]) if "CPU" in res else (float(table_cpus) if table_cpus is not None else None)
    return cpus, gpus, source


def _flag(commands: list[str], flag: str) -> float | None:
    for cmd in commands:
        if m := re.search(rf"{flag}[= ]([0-9.]+)", cmd):
            return float(m.group(1))
    return None


def _local_type(name: str, commands: list[str], max_nodes: int, is_head: bool) -> NodeType:
    gpus, cpus = _flag(commands, "--num-gpus"), _flag(commands, "--num-cpus")
    source = "--num-gpus in its start command" if gpus is not None else \
        "no --num-gpus in its start command: 0 GPUs assumed"
    return NodeType(name, cpus, gpus or 0.0, max_nodes, is_head, 0, source)


def _read_kuberay(path: str, cr: dict[str, Any]) -> Cluster:
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = copy.deepcopy(cr)
    cr.setdefault("metadata", {}).setdefault("namespace", "default")  # only names the provider
    try:
        cfg = _derive_autoscaling_config_from_ray_cr(cr)  # what the in-cluster autoscaler sees
    except Exception as e:
        raise ValueError(f"{path}: Ray cannot read this RayCluster: {e}") from None
    types = []
    for name, spec in cfg["available_node_types"].items():
        is_head = name == cfg["head_node_type"]
        res = spec["resources"]
        types.append(NodeType(name, float(res.get("CPU", 0)), float(res.get("GPU", 0)),
                              1 if is_head else int(spec["max_workers"]), is_head, int(spec.get("priority", 0)),
                              "pod resources / rayStartParams"))
    return Cluster(path, cfg["cluster_name"], int(cfg["max_workers"]), tuple(types))


# ------------------------------------------------------------------------- trials
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


def pack(cluster: Cluster, cpus: float, gpus: float, trials: int, max_concurrent: int | None = None
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
    workers = sorted((t for t in cluster.node_types if not t.is_head),
                     key=lambda t: (gpus > 0 or t.gpus == 0, t.priority, trials_per_node(t, cpus, gpus)),
                     reverse=True)
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


def estimate(cfg: SweepConfig, items: dict[str, list[Item]], cluster_yaml_path: str | None,
             epoch_seconds: dict[str, float] | float | None) -> dict[str, Any]:
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
        row: dict[str, Any] = {"trials": n, "epochs": epochs, "epoch_seconds": sec, "cpus_per_trial": cpus,
                               "gpus_per_trial": gpus, "trial_hours": None if trial_s is None else trial_s / 3600,
                               "gpu_hours": None if trial_s is None else n * trial_s * gpus / 3600,
                               "cpu_hours": None if trial_s is None else n * trial_s * cpus / 3600}
        if cluster is not None:
            concurrent, nodes = pack(cluster, cpus, gpus, n, cfg.resources.max_concurrent)
            capacity, _ = pack(cluster, cpus, gpus, 10**9, cfg.resources.max_concurrent)
            waves = math.ceil(n / concurrent) if concurrent else (0 if n == 0 else None)
            row.update(concurrent=concurrent, capacity=capacity, nodes=nodes, waves=waves,
                       per_node={t.name: trials_per_node(t, cpus, gpus) for t in cluster.node_types},
                       wall_hours=None if trial_s is None or waves is None else waves * trial_s / 3600)
            if n and not concurrent:
                notes.append(f"stage {stage}: no node type fits a trial ({cpus:g} CPU, {gpus:g} GPU): "
                             f"the trials would wait forever")
        stages[stage] = row
    untimed = [s for s in STAGES if stages[s]["trials"] and stages[s]["epoch_seconds"] is None]
    if seconds and untimed:
        notes.append(f"not timed (no --epoch-seconds for them): {', '.join(untimed)}")
    if cluster is not None:
        notes += [f"node type {t.name}: {t.source}" for t in cluster.node_types if t.source.startswith(("unknown", "no "))]

    def total(key: str) -> float | None:
        vals = [stages[s].get(key) for s in STAGES if stages[s]["trials"]]
        return sum(vals) if vals and all(v is not None for v in vals) else None

    return {"sweep": cfg.name, "cluster": None if cluster is None else asdict(cluster), "stages": stages,
            "total": {"trials": sum(r["trials"] for r in stages.values()), "gpu_hours": total("gpu_hours"),
                      "cpu_hours": total("cpu_hours"), "wall_hours": total("wall_hours")},
            "notes": notes}


def _h(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def format_estimate(est: dict[str, Any]) -> str:
    """The estimate as `nf sweep plan --cluster` prints it."""
    c = est["cluster"]
    lines = [f"sweep {est['sweep']!r}" + (f" on cluster {c['name']!r} ({c['path']})" if c else "")]
    if c:
        for t in c["node_types"]:
            role = "head" if t["is_head"] else f"up to {t['max_nodes']}"
            cpus = "?" if t["cpus"] is None else f"{t['cpus']:g}"
            lines.append(f"  node type {t['name']:<16} {role:>10}  {cpus:>5} CPU {t['gpus']:>3g} GPU")
        lines.append(f"  (at most {c['max_workers']} worker nodes in all)")
    head = f"  {'stage':<10}{'trials':>7}{'epochs':>7}{'CPU/GPU per trial':>19}{'GPU-h':>10}"
    if c:
        head += f"{'parallel/max':>13}{'waves':>6}{'wall-h':>8}  nodes"
    lines.append(head)
    for stage, r in est["stages"].items():
        line = (f"  {stage:<10}{r['trials']:>7}{r['epochs']:>7}"
                f"{r['cpus_per_trial']:>12g} / {r['gpus_per_trial']:<4g}{_h(r['gpu_hours']):>10}")
        if c:
            nodes = ", ".join(f"{k} x{v}" for k, v in r["nodes"].items()) or "-"
            waves = "-" if r["waves"] is None else str(r["waves"])
            line += f"{str(r['concurrent']) + '/' + str(r['capacity']):>13}{waves:>6}{_h(r['wall_hours']):>8}  {nodes}"
        lines.append(line)
    t = est["total"]
    line = f"  {'total':<10}{t['trials']:>7}{'':>7}{'':>19}{_h(t['gpu_hours']):>10}"
    if c:
        line += f"{'':>13}{'':>6}{_h(t['wall_hours']):>8}"
    lines.append(line)
    lines += [f"  note: {n}" for n in est["notes"]]
    if c:
        lines.append("  (stages run one after another; node start-up and dataset download not counted)")
    return "\n".join(lines)


# ------------------------------------------------------------------------- CLI glue
def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """`--cluster` and `--epoch-seconds` for `nf sweep plan`."""
    parser.add_argument("--cluster", default=None, metavar="YAML",
                        help="Ray cluster launcher YAML or KubeRay manifest (clusters/*.yaml): "
                             "show how the trials pack onto its GPUs")
    parser.add_argument("--epoch-seconds", default=None, metavar="S",
                        help="measured seconds per epoch: one number, or per stage as "
                             "base=600,generator=120,eval=30,transfer=60 (eval/transfer: per trial)")


def plan_with_cluster(args: argparse.Namespace, cfg: SweepConfig, items: dict[str, list[Item]]) -> str:
    """What `nf sweep plan` prints: the plain plan, or the estimate when --cluster or --epoch-seconds is given."""
    cluster, seconds = getattr(args, "cluster", None), getattr(args, "epoch_seconds", None)
    if cluster is None and seconds is None:
        return format_plan(cfg, items, verbose=getattr(args, "verbose", False))
    parsed = parse_epoch_seconds(seconds) if isinstance(seconds, str) else seconds
    text = format_estimate(estimate(cfg, items, cluster, parsed))
    if getattr(args, "verbose", False):
        text += "\n" + format_plan(cfg, items, verbose=True)
    return text

"""Ray cluster files read offline, the way Ray reads them: node types, their CPUs/GPUs and bounds.

A launcher YAML goes through Ray's own ``prepare_config`` (defaults filled, per-type worker
bounds set, the ``local`` provider's one node type derived from its IPs); a KubeRay
``RayCluster`` through the autoscaler's own translation of the manifest. A node type's GPUs
and CPUs come from its ``resources``, else from a small table of instance types, else from
``--num-gpus``/``--num-cpus`` in its start command (on-premises clusters). Ray is imported
only when a file is read.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml

# (vCPUs, GPUs) of common instance types, for node types whose `resources` name no GPU.
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    # AWS
    "g4dn.xlarge": (4, 1),
    "g4dn.2xlarge": (8, 1),
    "g4dn.4xlarge": (16, 1),
    "g4dn.12xlarge": (48, 4),
    "g4dn.metal": (96, 8),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.4xlarge": (16, 1),
    "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4),
    "g5.24xlarge": (96, 4),
    "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1),
    "g6.2xlarge": (8, 1),
    "g6.12xlarge": (48, 4),
    "g6.48xlarge": (192, 8),
    "g6e.xlarge": (4, 1),
    "g6e.12xlarge": (48, 4),
    "g6e.48xlarge": (192, 8),
    "p3.2xlarge": (8, 1),
    "p3.8xlarge": (32, 4),
    "p3.16xlarge": (64, 8),
    "p3dn.24xlarge": (96, 8),
    "p4d.24xlarge": (96, 8),
    "p4de.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
    "m5.xlarge": (4, 0),
    "m5.2xlarge": (8, 0),
    "m5.4xlarge": (16, 0),
    "m6i.xlarge": (4, 0),
    "m6i.2xlarge": (8, 0),
    "m6i.4xlarge": (16, 0),
    "c6i.4xlarge": (16, 0),
    # GCP (accelerator-optimized types come with their GPUs)
    "a2-highgpu-1g": (12, 1),
    "a2-highgpu-2g": (24, 2),
    "a2-highgpu-4g": (48, 4),
    "a2-highgpu-8g": (96, 8),
    "a2-ultragpu-1g": (12, 1),
    "a2-ultragpu-8g": (96, 8),
    "a3-highgpu-8g": (208, 8),
    "g2-standard-4": (4, 1),
    "g2-standard-8": (8, 1),
    "g2-standard-12": (12, 1),
    "g2-standard-16": (16, 1),
    "g2-standard-24": (24, 2),
    "g2-standard-32": (32, 1),
    "g2-standard-48": (48, 4),
    "g2-standard-96": (96, 8),
}
_GCP_GENERAL = re.compile(r"^[a-z]\d[a-z]?-(standard|highmem|highcpu)-(\d+)$")  # n2-standard-8: 8 vCPUs


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
        raise ValueError(
            f"{path!r} is neither a Ray cluster launcher YAML (with `provider`) "
            f"nor a KubeRay manifest (kind: RayCluster)"
        )
    return _read_launcher(path, docs[0])


def _read_launcher(path: str, raw: dict[str, Any]) -> Cluster:
    import logging

    from ray.autoscaler._private.util import prepare_config

    # prepare_config logs its defaults at INFO ("setting max workers for head node type to 0"): noise in
    # `nf sweep plan --cluster`'s output; its warnings still show.
    quiet = logging.getLogger("ray.autoscaler._private.util")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        cfg = prepare_config(copy.deepcopy(raw))
    except Exception as e:  # the local provider aborts through click on unsupported fields
        raise ValueError(f"{path}: Ray rejects this cluster config: {e}") from None
    finally:
        quiet.setLevel(level)
    provider = cfg["provider"]["type"]
    types = []
    for name, spec in cfg["available_node_types"].items():
        if provider == "local":  # one node type for head and workers; their start commands differ
            types.append(_local_type("head", cfg["head_start_ray_commands"], 1, True))
            types.append(_local_type(name, cfg["worker_start_ray_commands"], spec.get("max_workers", 0), False))
            continue
        is_head = name == cfg["head_node_type"]
        cpus, gpus, source = _launcher_resources(spec)
        types.append(
            NodeType(
                name,
                cpus,
                gpus,
                1 if is_head else int(spec.get("max_workers", 0)),
                is_head,
                int(spec.get("priority", 0)),
                source,
            )
        )
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
    source = (
        "--num-gpus in its start command" if gpus is not None else "no --num-gpus in its start command: 0 GPUs assumed"
    )
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
        types.append(
            NodeType(
                name,
                float(res.get("CPU", 0)),
                float(res.get("GPU", 0)),
                1 if is_head else int(spec["max_workers"]),
                is_head,
                int(spec.get("priority", 0)),
                "pod resources / rayStartParams",
            )
        )
    return Cluster(path, cfg["cluster_name"], int(cfg["max_workers"]), tuple(types))

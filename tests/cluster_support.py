"""What the cluster-file tests share: where the files are, how to load them, Ray's own preparation."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = ["aws.yaml", "gcp.yaml", "local.yaml"]
CLUSTER_FILES = sorted(p.name for p in CLUSTERS.iterdir() if p.is_file())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTERS / name).read_text())


def ray_cluster(name: str = "kuberay.yaml") -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CLUSTERS / name).read_text()) if d]
    return next(d for d in docs if d.get("kind") == "RayCluster")


def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg

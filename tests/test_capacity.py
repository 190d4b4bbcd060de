"""`nf sweep plan --cluster`: reading cluster files as Ray does, packing trials onto node types,
and the capacity estimate on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.cluster.capacity import estimate, pack, parse_epoch_seconds, trial_bundles, trials_per_node
from orchestration.cluster.clusterfile import Cluster, NodeType, read_cluster
from orchestration.commands.sweep import add_cluster_args, plan_with_cluster
from orchestration.commands.views import format_estimate
from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from tests.cluster_support import CLUSTERS, LAUNCHERS, ROOT, load


# ------------------------------------------------------------------ reading clusters for `nf sweep plan`
def test_read_cluster_sees_every_shape() -> None:
    def shapes(name: str) -> dict[str, tuple[float | None, float, int]]:
        return {t.name: (t.cpus, t.gpus, t.max_nodes) for t in read_cluster(str(CLUSTERS / name)).node_types}

    assert shapes("aws.yaml") == {
        "head": (0, 0, 1),
        "gpu1-spot": (8, 1, 16),
        "gpu1-ondemand": (8, 1, 4),
        "gpu8-spot": (192, 8, 2),
        "gpu8-ondemand": (192, 8, 1),
        "cpu-spot": (8, 0, 2),
    }
    assert shapes("local.yaml") == {"head": (0, 0, 1), "local.cluster.node": (64, 8, 4)}
    assert shapes("kuberay.yaml") == {"headgroup": (0, 0, 1), "gpu1": (7, 1, 16), "gpu8": (90, 8, 2), "cpu": (4, 0, 2)}
    assert read_cluster(str(CLUSTERS / "gcp.yaml")).max_workers == 20


def test_instance_type_table_fills_in_missing_resources(tmp_path: Path) -> None:
    raw = load("aws.yaml")
    for spec in raw["available_node_types"].values():
        spec["resources"] = {}
    raw["available_node_types"]["gpu1-spot"]["node_config"]["InstanceType"] = "p9.huge"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    types = {t.name: t for t in read_cluster(str(path)).node_types}
    assert (types["gpu8-spot"].cpus, types["gpu8-spot"].gpus) == (192, 8)  # g5.48xlarge from the table
    assert types["gpu1-spot"].gpus == 0 and types["gpu1-spot"].source.startswith("unknown instance type")


def test_fractional_gpus_pack_exactly() -> None:
    one = NodeType("g", cpus=8, gpus=1, max_nodes=1)
    assert [trials_per_node(one, 1, g) for g in (0.5, 0.25, 0.2, 0.3, 1)] == [2, 4, 5, 3, 1]
    assert trials_per_node(one, 3, 0.25) == 2  # CPUs bind before GPUs
    assert trials_per_node(NodeType("c", cpus=8, gpus=0, max_nodes=1), 1, 0.5) == 0


def test_estimate_on_a_hand_computed_cluster(tmp_path: Path) -> None:
    # Worker types: gpu1 (8 CPU, 1 GPU, up to 3 nodes), gpu4 (16 CPU, 4 GPU, 1 node); at most
    # 3 workers in all. Trials need 3 CPU + 0.5 GPU: gpu1 holds min(1/0.5, 8/3) = 2, gpu4 holds
    # min(4/0.5, 16/3) = 5 (CPU-bound). 13 generator trials: gpu4 x1 (5) + gpu1 x2 (4) = 9 at
    # once, so 2 waves. Each trial: 10 epochs x 60 s = 1/6 h; GPU-hours 13 x 1/6 x 0.5 = 13/12.
    cluster = {
        "cluster_name": "hand",
        "max_workers": 3,
        "provider": {"type": "aws", "region": "us-west-2"},
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "m6i.2xlarge"}},
            "gpu1": {
                "resources": {"CPU": 8, "GPU": 1},
                "max_workers": 3,
                "node_config": {"InstanceType": "g5.2xlarge"},
            },
            "gpu4": {
                "resources": {"CPU": 16, "GPU": 4},
                "max_workers": 1,
                "node_config": {"InstanceType": "g5.12xlarge"},
            },
        },
        "head_node_type": "head",
    }
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(cluster))
    cfg = parse_config(
        {
            "name": "hand",
            "models": ["resnet18"],
            "generators": ["ConvS"],
            "ns": list(range(1, 14)),
            "base": {"epochs": 20},
            "generator": {"epochs": 10},
            "resources": {"cpus": 3, "gpus": 0.5},
            "transfer": False,
        }
    )
    est = estimate(cfg, plan(cfg), str(path), {"base": 30.0, "generator": 60.0})
    g = est["stages"]["generator"]
    assert (g["trials"], g["concurrent"], g["capacity"], g["waves"]) == (13, 9, 9, 2)
    assert g["nodes"] == {"gpu4": 1, "gpu1": 2}
    assert g["per_node"] == {"head": 0, "gpu1": 2, "gpu4": 5}
    assert g["gpu_hours"] == pytest.approx(13 / 12) and g["wall_hours"] == pytest.approx(2 / 6)
    b = est["stages"]["base"]  # one trial, 20 x 30 s = 1/6 h, on one node
    assert (b["concurrent"], b["waves"], b["nodes"]) == (1, 1, {"gpu4": 1})
    assert b["gpu_hours"] == pytest.approx(0.5 / 6)
    assert est["stages"]["eval"]["gpu_hours"] is None  # not timed ...
    assert est["total"]["gpu_hours"] is None and any("eval" in n for n in est["notes"])  # ... and said so
    text = format_estimate(est)
    assert "9/9" in text and "gpu4 x1, gpu1 x2" in text


def test_max_concurrent_and_global_bounds() -> None:
    c = Cluster(
        "x", "x", 2, (NodeType("h", 0, 0, 1, is_head=True), NodeType("a", 8, 1, 5, priority=1), NodeType("b", 8, 1, 5))
    )
    assert pack(c, 1, 1, 10) == (2, {"a": 2})  # two workers in all; spot-like `a` (priority) first
    assert pack(c, 1, 1, 10, max_concurrent=1) == (1, {"a": 1})
    assert pack(c, 1, 0, 3) == (3, {"a": 1})  # CPU-only: both types have GPUs, so one node will do


def test_trial_bundles() -> None:
    """What a trial asks Ray for (the runner requests exactly these): its own share, then a pool actor each."""
    from orchestration.sweep.dataflow import item_resources

    base = {"name": "b", "models": ["resnet18", "vgg11"], "resources": {"cpus": 2, "gpus": 0.5}}
    plain = parse_config(base)
    assert trial_bundles(plain, "generator") == [{"CPU": 2, "GPU": 0.5}]
    pooled = parse_config(
        {**base, "sources": [["resnet18", "vgg11"]], "generator": {"access": "pool", "pool_actors": 2}}
    )
    # an ensemble of two models × two replicas each = four actor bundles
    assert trial_bundles(pooled, "generator") == [{"CPU": 2, "GPU": 0.5}] + [{"CPU": 0.5}] * 4
    assert trial_bundles(pooled, "base") == [{"CPU": 2, "GPU": 0.5}]
    ev = parse_config({**base, "evaluation": {"pool_actors": 3}, "resources": {"cpus": 1, "pool_actor_gpus": 0.25}})
    assert trial_bundles(ev, "transfer") == [{"CPU": 1}] + [{"CPU": 0.5, "GPU": 0.25}] * 3
    assert item_resources(pooled)({"item": {"stage": "generator"}}).bundles == trial_bundles(pooled, "generator")


def test_epoch_seconds_parsing() -> None:
    assert parse_epoch_seconds("120") == 120.0
    assert parse_epoch_seconds("base=600, generator=120") == {"base": 600.0, "generator": 120.0}
    for bad, why in (("gen=5", "valid choices"), ("base=-1", "positive"), ("fast", "not a number")):
        with pytest.raises(ValueError, match=why):
            parse_epoch_seconds(bad)


def test_plan_with_cluster_from_argparse() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("-v", "--verbose", action="store_true")
    add_cluster_args(p)
    cfg = parse_config(yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text()))
    items = plan(cfg)
    plain = plan_with_cluster(p.parse_args(["x"]), cfg, items)
    assert plain.splitlines()[0].startswith("sweep 'smoke'") and "total" in plain
    text = plan_with_cluster(
        p.parse_args(["x", "--cluster", str(CLUSTERS / "aws.yaml"), "--epoch-seconds", "2"]), cfg, items
    )
    assert "cpu-spot x1" in text  # CPU-only trials go to the CPU type, as the autoscaler sends them
    with pytest.raises(ValueError, match="does not exist"):
        plan_with_cluster(p.parse_args(["x", "--cluster", "clusters/nope.yaml"]), cfg, items)


def test_plan_with_cluster_prints_no_ray_info_lines(tmp_path: Path) -> None:
    """Ray's cluster-config defaults are logged at INFO (`INFO util.py:402 -- setting max workers …`): not in
    `nf sweep plan --cluster`'s output (run as a user runs it, from another folder)."""
    import subprocess
    import sys

    for cluster in ("aws.yaml", "gcp.yaml"):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestration.cli", "sweep", "plan", str(ROOT / "sweeps" / "smoke.yaml")]
            + ["--cluster", str(CLUSTERS / cluster)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("sweep 'smoke' on cluster")
        assert "INFO" not in proc.stdout + proc.stderr and "util.py" not in proc.stdout + proc.stderr


def test_every_paper_sweep_fits_every_cluster() -> None:
    # A trial no node type can hold would wait forever; catch it before paying for the cluster.
    from orchestration.spec.config import load_config

    clusters = [read_cluster(str(CLUSTERS / n)) for n in LAUNCHERS + ["kuberay.yaml"]]
    for sweep in sorted((ROOT / "sweeps").glob("*.yaml")):
        cfg = load_config(str(sweep))
        for stage in ("base", "generator", "eval", "transfer"):
            cpus = sum(b.get("CPU", 0) for b in trial_bundles(cfg, stage))
            gpus = sum(b.get("GPU", 0) for b in trial_bundles(cfg, stage))
            for c in clusters:
                assert pack(c, cpus, gpus, 1)[0] == 1, (sweep.name, stage, c.path)

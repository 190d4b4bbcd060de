"""Several sweeps as one run (`nf sweep run a.yaml b.yaml`): one Tune run, one dataflow, each sweep its own
name, storage, MLflow experiment and results, identical to running it alone."""

from __future__ import annotations

import io
import re
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestration.cli import main as cli_main
from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.store.roots import sweep_store
from orchestration.sweep.runner import tracking_uri
from tests.sweep_support import ensure_ray

# Both sweeps hold an item with the same id (the base model digits.resnet18.b8.s0): ids must not collide.
ONE: dict[str, Any] = {
    "device": "cpu",
    "datasets": [{"name": "digits", "train_subset": 128, "test_subset": 60}],
    "models": ["resnet18", "vgg11"],
    "sources": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS"],
    "ns": [2],
    "base": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.05], "chips": 2},
    "transfer": True,
    "resources": {"cpus": 1, "max_failures": 0},
    "mlflow": {"register_generators": False},  # registration: test_model_registry, test_protection_sweep
}


def _write(path, raw: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _results(cfg) -> Any:
    table = pq.read_table(io.BytesIO(sweep_store(cfg).read_bytes("results/results.parquet")))
    return table.sort_by([("item_id", "ascending"), ("target", "ascending"), ("eval_ber", "ascending")])


def _span(store, stage_items: dict[str, list]) -> tuple[float, float]:
    """First start and last end of a sweep's trials (attempts.json, status.json)."""
    starts, ends = [], []
    for stage, items in stage_items.items():
        for it in items:
            starts.append(store.read_json(f"items/{stage}/{it.id}/attempts.json")[0]["time"])
            ends.append(store.read_json(f"items/{stage}/{it.id}/status.json")["time"])
    return min(starts), max(ends)


def test_two_sweeps_in_one_run(tmp_path, capsys: pytest.CaptureFixture) -> None:

    root = str(tmp_path / "together")
    a = {**ONE, "name": "alpha", "train_bers": [0.03], "storage": root}
    b = {**ONE, "name": "beta", "train_bers": [0.05], "storage": root}
    paths = [_write(tmp_path / "a.yaml", a), _write(tmp_path / "b.yaml", b)]
    ensure_ray()  # the session's local Ray (2 CPUs), which the runner uses as it is
    assert cli_main(["sweep", "run", *paths]) == 0
    out = capsys.readouterr().out
    assert "sweep alpha:" in out and "sweep beta:" in out
    # the set again: nothing left to run in either sweep; status and report name both
    assert cli_main(["sweep", "resume", "alpha", "beta", "--storage", root]) == 0
    out = capsys.readouterr().out
    for name in ("alpha", "beta"):
        for stage in ("base", "generator", "eval", "transfer"):
            assert re.search(rf"{name}: stage {stage}: [1-9]\d* done, 0 to run", out), (name, stage, out)
    assert cli_main(["sweep", "status", "alpha", "beta", "--storage", root]) == 0
    out = capsys.readouterr().out
    assert "sweep 'alpha'" in out and "sweep 'beta'" in out
    cfg_a, cfg_b = parse_config(a), parse_config(b)
    items_a, items_b = plan(cfg_a), plan(cfg_b)
    # Each sweep in its own storage, under its own name, its items with their plain ids.
    for cfg, items in ((cfg_a, items_a), (cfg_b, items_b)):
        store = sweep_store(cfg)
        for stage, its in items.items():
            assert sorted(store.list(f"items/{stage}")) == sorted(it.id for it in its), (cfg.name, stage)
    # One dataflow: the two sweeps' trials ran interleaved, not one sweep after the other.
    a0, a1 = _span(sweep_store(cfg_a), items_a)
    b0, b1 = _span(sweep_store(cfg_b), items_b)
    assert a0 < b1 and b0 < a1, (a0, a1, b0, b1)
    # One Tune run (its state with the first sweep), none with the second.
    assert len(sweep_store(cfg_a).list("tune")) == 1 and sweep_store(cfg_b).list("tune") == []
    # Each sweep its own MLflow experiment: a child run per item of its own, named by the item id.
    for cfg, items in ((cfg_a, items_a), (cfg_b, items_b)):
        client = MlflowClient(tracking_uri(cfg, sweep_store(cfg)))
        exp = client.get_experiment_by_name(cfg.name)
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        children = {r.info.run_name for r in runs if r.data.tags.get("nf.item_id")}
        assert children == {it.id for its in items.values() for it in its}
        assert all(r.info.status == "FINISHED" for r in runs)

    # Each sweep alone gives the same results, row for row.
    for raw, cfg in ((a, cfg_a), (b, cfg_b)):
        alone = {**raw, "storage": str(tmp_path / f"alone_{raw['name']}")}
        assert cli_main(["sweep", "run", _write(tmp_path / f"{raw['name']}_alone.yaml", alone)]) == 0
        assert _results(parse_config(alone)).equals(_results(cfg)), raw["name"]


def test_plan_simulates_the_sweeps_together(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """`nf sweep plan a.yaml b.yaml --cluster … --epoch-seconds …`: the set as one run against one after another."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    gpu = {"resources": {"cpus": 4, "gpus": 1}}
    a = {**ONE, **gpu, "name": "alpha", "train_bers": [0.03, 0.05], "storage": str(tmp_path)}
    b = {**ONE, **gpu, "name": "beta", "train_bers": [0.01], "seeds": [0, 1], "storage": str(tmp_path)}
    paths = [_write(tmp_path / "a.yaml", a), _write(tmp_path / "b.yaml", b)]
    cluster = str(root / "clusters" / "aws.yaml")
    seconds = "base=600,generator=120,eval=30,transfer=60"
    args = ["sweep", "plan", *paths, "--cluster", cluster, "--epoch-seconds", seconds, "--no-data-check"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    together = re.search(r"as one run \(nf sweep run with all of them\)\s+([\d,.]+) h\s+([\d.]+)%", out)
    in_turn = re.search(r"one after another\s+([\d,.]+) h\s+([\d.]+)%", out)
    assert together and in_turn, out
    hours = [float(m.group(1).replace(",", "")) for m in (together, in_turn)]
    busy = [float(m.group(2)) for m in (together, in_turn)]
    # side by side the two sweeps share the GPUs: shorter, and the GPUs busier, than in turn
    assert 0 < hours[0] < hours[1] and busy[0] > busy[1], out
    # the longest sweep alone bounds the pair from below
    alone = [float(h.replace(",", "")) for h in re.findall(r"^\s+no barriers\s+([\d,.]+)\s+\d+%$", out, re.M)]
    assert alone and hours[0] >= max(alone) - 0.05, (alone, out)

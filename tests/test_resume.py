"""Resuming sweeps, without Ray: `--storage` as a sweep's identity, the default root from any
directory, and `nf sweep resume NAME --config FILE` accepting or refusing a changed config item by item."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestration.cli import main as cli_main
from orchestration.spec.config import ConfigError, parse_config
from orchestration.spec.plan import plan
from orchestration.store.item_files import item_dir
from orchestration.store.roots import sweep_store
from orchestration.sweep.resume import adopt_config, compare_configs
from orchestration.sweep.runner import open_sweep, stage_states
from tests.sweep_support import TINY

BASE = "digits.resnet18.b8.s0"


def _sweep(root: Path, **changes) -> tuple:
    """A stored sweep (sweep.yaml written as `nf sweep run` does) with both base items done."""
    cfg = parse_config({**TINY, "storage": str(root), **changes})
    store = sweep_store(cfg)
    store.write_bytes("sweep.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    for it in plan(cfg)["base"]:
        store.write_json(f"{item_dir('base', it.id)}/done.json", {"item": it.to_dict(), "final": {"epoch": 6}})
    return cfg, store


def _gen_id(cfg) -> str:
    return plan(cfg)["generator"][0].id


# ------------------------------------------------------------------ --storage is the identity
def test_copied_sweep_is_read_in_the_copy_only(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg, _ = _sweep(tmp_path / "orig")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    copy = sweep_store(parse_config({**TINY, "storage": str(tmp_path / "copy")}))
    copy.fs.delete_file(copy.path(f"{item_dir('base', BASE)}/done.json"))  # the copy differs

    opened = open_sweep("tiny", str(tmp_path / "copy"))
    assert opened.storage == str(tmp_path / "copy")  # not the root its sweep.yaml recorded
    assert yaml.safe_load(copy.read_bytes("sweep.yaml"))["storage"] == str(tmp_path / "orig")
    assert stage_states(opened)["base"][BASE] == "pending"
    assert stage_states(open_sweep("tiny", str(tmp_path / "orig")))["base"][BASE] == "done"

    monkeypatch.chdir(tmp_path)  # a relative --storage is relative to the working directory
    assert open_sweep("tiny", "copy").storage == str(tmp_path / "copy")
    capsys.readouterr()
    assert cli_main(["sweep", "status", "tiny", "--storage", "copy"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "copy") in out, out
    base = next(line.split() for line in out.splitlines() if line.strip().startswith("base"))
    assert base[1:4] == ["1", "0", "1"], out  # done, running, pending: the copy's state


def test_default_root_is_the_same_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NF_STORAGE", raising=False)
    roots = set()
    for d in ("a", "b/c"):
        (tmp_path / d).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / d)
        roots.add(parse_config({"name": "x"}).storage)
    assert len(roots) == 1 and Path(roots.pop()).is_absolute()

    monkeypatch.setenv("NF_STORAGE", str(tmp_path / "shared"))
    cfg, _ = _sweep(tmp_path / "shared")
    monkeypatch.chdir(tmp_path / "a")
    assert parse_config({"name": "x"}).storage == str(tmp_path / "shared")
    assert open_sweep("tiny").storage == str(tmp_path / "shared")  # no --storage: the default root
    with pytest.raises(ConfigError, match=r"no sweep 'nope' under .*shared; sweeps there: tiny"):
        open_sweep("nope")
    # An explicit relative root in a config is the working directory's, recorded absolute.
    assert parse_config({"name": "x", "storage": "mine"}).storage == str(tmp_path / "a" / "mine")


# ------------------------------------------------------------------ resume --config
def test_changed_config_is_accepted_when_no_completed_item_changes(tmp_path: Path) -> None:
    old, store = _sweep(tmp_path)
    gid = _gen_id(old)
    store.write_bytes(f"{item_dir('generator', gid)}/checkpoint.pt", b"old lr")  # unfinished, mid-training
    store.write_json(f"{item_dir('generator', gid)}/status.json", {"state": "failed"})
    before = store.read_bytes("sweep.yaml")
    new = parse_config({**TINY, "storage": str(tmp_path), "generator": {**TINY["generator"], "lr": 0.002}})

    change = adopt_config(old, new, store, log=lambda _: None)
    assert change.invalidated == []
    assert ("generator", gid) in change.reset
    assert yaml.safe_load(store.read_bytes("sweep.yaml"))["generator"]["lr"] == 0.002
    archived = [n for n in store.list() if n.startswith("sweep.") and n != "sweep.yaml"]
    assert len(archived) == 1 and store.read_bytes(archived[0]) == before
    assert not store.exists(f"{item_dir('generator', gid)}/checkpoint.pt")  # trained with the old lr: restarts
    assert all(s == "done" for s in stage_states(new, store)["base"].values())  # completed items kept


def test_changed_config_is_refused_naming_the_completed_items_it_changes(tmp_path: Path) -> None:
    old, store = _sweep(tmp_path)
    gid = _gen_id(old)
    store.write_json(f"{item_dir('generator', gid)}/done.json", {"item": {}, "final": {}})
    before = store.read_bytes("sweep.yaml")

    lr = parse_config({**TINY, "storage": str(tmp_path), "base": {**TINY["base"], "lr": 0.02}})
    with pytest.raises(ConfigError) as e:
        adopt_config(old, lr, store, log=lambda _: None)
    msg = str(e.value)
    assert "\n" not in msg and "3 completed items" in msg
    # the base items themselves, and the done generator that reads one of them
    assert f"base/{BASE}" in msg and "base/digits.vgg11.b8.s0" in msg and f"generator/{gid}" in msg
    assert store.read_bytes("sweep.yaml") == before and store.list() == ["items", "sweep.yaml"]

    # The dataset a trial sees is part of every item; eval settings only of eval/transfer items.
    subset = {**TINY, "storage": str(tmp_path), "datasets": [{**TINY["datasets"][0], "train_subset": 128}]}
    assert len(compare_configs(old, parse_config(subset), store).invalidated) == 3
    bers = {**TINY, "storage": str(tmp_path), "evaluation": {**TINY["evaluation"], "bers": [0.01]}}
    assert compare_configs(old, parse_config(bers), store).invalidated == []
    # A grid value changed: the done items keep their ids and settings, new items are added.
    grid = {**TINY, "storage": str(tmp_path), "train_bers": [0.03, 0.07]}
    done = next(it.id for it in plan(old)["generator"] if ".p0.05." in it.id)
    store.write_json(f"{item_dir('generator', done)}/done.json", {"item": {}, "final": {}})
    change = compare_configs(old, parse_config(grid), store)
    assert change.invalidated == [] and change.dropped == [f"generator/{done}"]


def test_resume_cli_refuses_before_ray_and_run_points_at_resume_config(tmp_path: Path, capsys) -> None:
    old, store = _sweep(tmp_path)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({**TINY, "storage": "/elsewhere", "base": {**TINY["base"], "epochs": 7}}))
    capsys.readouterr()
    code = cli_main(["sweep", "resume", "tiny", "--storage", str(tmp_path), "--config", str(fixed)])
    err = capsys.readouterr().err
    assert code == 2 and f"base/{BASE}" in err and "2 completed items" in err, err
    assert not (tmp_path / "tiny" / "tune").exists() and not Path("/elsewhere").exists()

    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**TINY, "storage": str(tmp_path), "generator": {"epochs": 2}}))
    assert cli_main(["sweep", "run", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "nf sweep resume tiny" in err and "--config FILE" in err, err


# ------------------------------------------------------------------ the default MLflow database
def test_copied_sweep_tracks_its_artifacts_in_the_copy(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestration.sweep.runner import tracking_uri
    from orchestration.tracking.tracker import SweepTracker

    cfg, store = _sweep(tmp_path / "orig")
    tracker = SweepTracker(tracking_uri(cfg, store), "tiny", store.url("mlartifacts"))
    tracker.parent_run("tiny")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    copy = open_sweep("tiny", str(tmp_path / "copy"))
    client = MlflowClient(tracking_uri(copy, sweep_store(copy)))
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    (tmp_path / "a.txt").write_text("x")
    client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
    assert list((tmp_path / "copy" / "tiny" / "mlartifacts").rglob("a.txt"))  # the copy's folder …
    assert not (tmp_path / "orig" / "tiny" / "mlartifacts").exists()  # … never the original's


def test_working_copy_of_the_database_is_fetched_unless_it_descends_from_storage(tmp_path: Path) -> None:
    from orchestration.store.storage import Store
    from orchestration.tracking.sync import REMOTE_DB, fetch

    store, db = Store(str(tmp_path / "storage")), str(tmp_path / "cache" / "mlflow.db")
    (tmp_path / "cache").mkdir()
    assert not fetch(store, db) and not Path(db).exists()  # nothing uploaded yet
    store.write_bytes(REMOTE_DB, b"uploaded")
    assert fetch(store, db) and Path(db).read_bytes() == b"uploaded"  # a fresh machine
    Path(db).write_bytes(b"uploaded + later epochs")  # this driver went on, then died before its upload
    assert not fetch(store, db) and Path(db).read_bytes() == b"uploaded + later epochs"
    store.write_bytes(REMOTE_DB, b"another head went on")  # … but another head node went on since
    assert fetch(store, db) and Path(db).read_bytes() == b"another head went on"
    assert [p.read_bytes() for p in (tmp_path / "cache").glob("mlflow.db.*.stale")] == [b"uploaded + later epochs"]

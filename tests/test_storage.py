"""Sweep storage: what workers receive must mean the same place wherever they run."""

import os

from orchestration.store.storage import Store


def test_relative_local_storage_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("runs/sweeps").sub("demo")
    store.write_json("items/x/done.json", {"ok": 1})
    spec = store.spec()
    assert os.path.isabs(spec["uri"]) and spec["uri"] == str(tmp_path / "runs" / "sweeps" / "demo")
    elsewhere = tmp_path / "trial_working_dir"  # Ray Tune changes a trial's working directory
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Store(**spec).read_json("items/x/done.json") == {"ok": 1}


def test_atomic_replace_and_listing(tmp_path) -> None:
    store = Store(str(tmp_path))
    store.write_bytes("a/b.bin", b"one")
    store.write_bytes("a/b.bin", b"two")
    assert store.read_bytes("a/b.bin") == b"two"
    assert store.list("a") == ["b.bin"] and store.list("missing") == []
    assert not [p for p in os.listdir(tmp_path / "a") if p.endswith(".tmp")]


def test_relative_dataset_roots_are_made_absolute(tmp_path, monkeypatch) -> None:
    from orchestration.spec.config import parse_config

    monkeypatch.chdir(tmp_path)
    cfg = parse_config(
        {
            "name": "x",
            "datasets": [{"name": "cifar10", "root": "data/cifar10"}, {"name": "gtsrb", "root": "s3://bucket/gtsrb"}],
        }
    )
    assert cfg.datasets[0].root == str(tmp_path / "data" / "cifar10")
    assert cfg.datasets[1].root == "s3://bucket/gtsrb"

"""The driver's registration of finished generators (orchestration/sweep/registration.py) on a real
SQLite MLflow and a sweep storage written as the trainables write it: registered once, evaluation
numbers joined as tags when they arrive (no second version), a weight-protected base's generator under
its own name, and `mlflow.register_generators: false` registering nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from nf_core.export import check_inputs, deployable
from tests.sweep_support import store_trained_generator

RAW = {
    "name": "reg",
    "datasets": [{"name": "digits"}],
    "models": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS"],
    "train_bers": [0.01],
    "base": {"training": ["standard", "randbet"]},
    "evaluation": {"bers": [0.01]},
    "transfer": False,
}


def _sweep(tmp_path, **change):
    """Storage with both generator items finished (checkpoint + done.json), no eval item yet."""
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import item_dir
    from orchestration.store.roots import CONFIG_FILE, sweep_store
    from orchestration.sweep.runner import tracking_uri
    from orchestration.tracking.tracker import SweepTracker

    cfg = parse_config({**RAW, "storage": str(tmp_path / "sweeps"), **change})
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict()).encode())
    items = plan(cfg)
    gens = {}
    for k, it in enumerate(items["generator"]):
        g = store_trained_generator(store, cfg, it, seed=k)
        done = {"item": it.to_dict(), "final": {"epoch": 1}, "history": [{"epoch": 1, "seconds": 2.0}]}
        store.write_bytes(f"{item_dir('generator', it.id)}/done.json", json.dumps(done).encode())
        gens[it.id] = g
    tracker = SweepTracker(tracking_uri(cfg, store), cfg.name, str(tmp_path / "artifacts"))
    tracker.ensure_experiment()
    tracker.parent_run(cfg.name)
    runs = {it.id: tracker.child_run(it.id, it.stage) for it in items["generator"]}
    return cfg, store, tracker, items, runs, gens


def test_registered_once_then_tagged_with_the_evaluation(tmp_path, monkeypatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from orchestration.store.item_files import item_dir, load_item_checkpoint
    from orchestration.sweep.registration import register_generators
    from orchestration.tracking.model_registry import generator_from_checkpoint

    monkeypatch.chdir(tmp_path)
    cfg, store, tracker, items, runs, gens = _sweep(tmp_path)
    seconds = register_generators(cfg, store, tracker, items["generator"], runs, log=lambda _: None)
    assert set(seconds) == set(gens)
    client = MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
    names = sorted(m.name for m in client.search_registered_models())
    assert names == ["nf-reg-digits-resnet18-ConvS", "nf-reg-digits-resnet18.randbet-p0.01-w0.1-ConvS"]
    # nothing new to add: a second pass does nothing
    assert register_generators(cfg, store, tracker, items["generator"], runs, log=lambda _: None) == {}
    # the eval item of the standard generator finishes: its numbers join the same version as tags
    ev = next(it for it in items["eval"] if not it.spec.base_tag)
    row = {"target": "resnet18", "eval_ber": 0.01, "ca": 90.0, "pa_mean": 40.0, "pa_nf_mean": 70.0, "rp": 30.0}
    store.write_bytes(
        f"{item_dir('eval', ev.id)}/done.json", json.dumps({"item": ev.to_dict(), "rows": [row]}).encode()
    )
    again = register_generators(cfg, store, tracker, items["generator"], runs, log=lambda _: None)
    assert list(again) == [ev.needs[0]]
    (v,) = client.search_model_versions("name = 'nf-reg-digits-resnet18-ConvS'")
    assert int(v.version) == 1 and v.tags["rp.resnet18.p0.01"] == "30" and v.tags["base_training"] == "standard"
    assert client.get_run(runs[ev.needs[0]]).data.tags["nf.registered_eval"] == "1"
    # the registered model is the checkpoint's generator, exactly
    mlflow.set_tracking_uri(tracker.tracking_uri)
    mlflow.set_registry_uri(tracker.tracking_uri)
    x = check_inputs(32, n=3)
    gen, _ = generator_from_checkpoint(load_item_checkpoint(store, "generator", ev.needs[0]))
    with torch.no_grad():
        want = deployable(gen)(x).numpy()
    got = np.asarray(mlflow.pyfunc.load_model(f"models:/{v.name}/1").predict(x.numpy()))
    assert np.array_equal(got, want)


def test_register_generators_false_registers_nothing(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from orchestration.sweep.registration import register_generators

    monkeypatch.chdir(tmp_path)
    cfg, store, tracker, items, runs, _ = _sweep(tmp_path, mlflow={"register_generators": False})
    assert register_generators(cfg, store, tracker, items["generator"], runs, log=lambda _: None) == {}
    assert MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri).search_registered_models() == []


@pytest.mark.parametrize("value", ["yes", 1])
def test_register_generators_must_be_a_boolean(value) -> None:
    from orchestration.spec.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"mlflow.register_generators: .* is not a boolean; expected true or false"):
        parse_config({**RAW, "mlflow": {"register_generators": value}})


def test_a_generator_that_cannot_be_registered_does_not_stop_the_others(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from orchestration.store.item_files import item_dir
    from orchestration.sweep.registration import register_generators

    monkeypatch.chdir(tmp_path)
    cfg, store, tracker, items, runs, _ = _sweep(tmp_path)
    broken, fine = items["generator"]
    for name in store.list(item_dir("generator", broken.id)):
        if name.endswith(".pt"):
            store.write_bytes(f"{item_dir('generator', broken.id)}/{name}", b"torn")
    lines: list[str] = []
    assert list(register_generators(cfg, store, tracker, items["generator"], runs, log=lines.append)) == [fine.id]
    assert any(line.startswith(f"nf: warning: registering {broken.id} failed") for line in lines)
    names = [
        m.name for m in MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri).search_registered_models()
    ]
    assert names == ["nf-reg-digits-resnet18.randbet-p0.01-w0.1-ConvS"]

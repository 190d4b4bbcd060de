"""Deployable generators: ONNX export checked with onnxruntime, MLflow registration (real SQLite
MLflow), and `nf export` on a hand-made sweep storage."""

import numpy as np
import torch
import yaml

from nf_core.eopm import deployed_generator
from nf_core.export import check_inputs, deployable, export_onnx, max_abs_difference, onnx_outputs
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.quant import quantized_weight_names
from tests.sweep_support import store_trained_generator


def _trained_like(name: str, bits: int | None = 8) -> torch.nn.Module:
    """A generator with non-trivial BatchNorm statistics, as evaluated (fake-quantized weights)."""
    torch.manual_seed(0)
    g = create_generator(name, 32, bits)
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.rand(8, 3, 32, 32) * 2 - 1)
    return deployed_generator(g, bits)


def test_onnx_generator_and_generator_with_base_match_pytorch(tmp_path) -> None:
    gen = _trained_like("ConvS")
    mod = deployable(gen)
    path = export_onnx(mod, tmp_path / "g.onnx", 32)
    x = check_inputs(32, n=5)  # another batch size than the export's example: the batch axis is dynamic
    assert max_abs_difference(mod, path, x) < 1e-5
    out = onnx_outputs(path, x)
    assert out.shape == (5, 3, 32, 32) and out.min() >= -1 and out.max() <= 1  # x' = clamp(x + G(x))
    assert not np.allclose(out, x.numpy(), atol=1e-3)  # the generator does something

    base = create_model("resnet18", 10, 32, width=0.125)
    both = deployable(gen, base, bits=8)
    path2 = export_onnx(both, tmp_path / "gb.onnx", 32)
    logits = onnx_outputs(path2, x)
    assert logits.shape == (5, 10)
    assert max_abs_difference(both, path2, x) < 1e-4 * (1 + np.abs(logits).max())
    # the base in the graph is the quantized one: its weights are the stored 8-bit values
    for name in quantized_weight_names(both.base):
        w = both.base.get_parameter(name)
        scale = w.abs().max() / 127
        assert torch.allclose(torch.round(w / scale) * scale, w, rtol=0, atol=1e-7 * float(scale)), name


def test_registered_generator_reproduces_the_checkpoint_and_never_collides(tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)  # anything MLflow would put in ./mlruns stays in the test's folder

    from orchestration.tracking.model_registry import register_generator, registered_model_name

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {
        "dataset": "digits",
        "source": ["resnet18"],
        "generator": "ConvS",
        "ber": 0.01,
        "lam": 5.0,
        "n": 2,
        "fault_model": "stuck_at",
        "layout": "wrap",
        "bits": 8,
        "generator_bits": 8,
        "seed": 0,
    }
    gen = _trained_like("ConvS")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    item = "digits.resnet18.ConvS.p0.01.l5.n2.stuck_at.wrap.b8g8.s0"
    metrics = {"rp.resnet18.p0.01": "12.5"}
    art = (tmp_path / "artifacts").as_uri()
    a = register_generator(uri, "sweep-a", "sweep-a", item, params, gen, 32, metrics, artifact_location=art)
    uip = deployed_generator(create_generator("UIP", 32, 8), 8)  # cheap stand-ins where only names matter
    b = register_generator(uri, "sweep-b", "sweep-b", item, params, uip, 32)
    assert a.name == registered_model_name("sweep-a", params) == "nf-sweep-a-digits-resnet18-ConvS"
    assert a.name != b.name  # the same item of two sweeps: two registered models
    again = register_generator(uri, "sweep-a", "sweep-a", item, params, gen, 32)
    assert (again.name, again.version) == (a.name, a.version)  # registering again adds no version
    other = register_generator(
        uri, "sweep-a", "sweep-a", item.replace("p0.01", "p0.02"), {**params, "ber": 0.02}, uip, 32
    )
    assert other.name == a.name and int(other.version) == int(a.version) + 1  # a variant: the next version
    assert a.tags["train_ber"] == "0.01" and a.tags["nf.item"] == item and a.tags["rp.resnet18.p0.01"] == "12.5"
    assert "voltage" in a.tags

    loaded = mlflow.pyfunc.load_model(f"models:/{a.name}/{a.version}")
    x = check_inputs(32, n=4)
    with torch.no_grad():
        ref = deployable(gen)(x).numpy()
    got = np.asarray(loaded.predict(x.numpy()))
    assert np.array_equal(got, ref)  # exactly the checkpoint's outputs
    assert loaded.metadata.get_input_schema() is not None and loaded.metadata.get_output_schema() is not None


def _handmade_sweep(tmp_path):
    """A sweep's storage with one finished generator (and its base) written as the trainables write them."""
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import config_hash, identity, item_dir, save_checkpoint
    from orchestration.store.roots import CONFIG_FILE, sweep_store

    raw = {
        "name": "exp",
        "storage": str(tmp_path),
        "datasets": [{"name": "digits"}],
        "models": ["resnet18"],
        "width": 0.125,
        "generators": ["ConvS"],
        "train_bers": [0.01],
        "evaluation": {"bers": [0.01]},
    }
    cfg = parse_config(raw)
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict()).encode())
    items = plan(cfg)
    (gi,) = items["generator"]
    (bi,) = items["base"]
    g = store_trained_generator(store, cfg, gi)
    base = create_model("resnet18", 10, 32, width=0.125)
    bspec = {"model": "resnet18", "num_classes": 10, "input_size": 32, "width": 0.125, "dataset": "digits"}
    bck = {"kind": "base", "model": base.state_dict(), "config": {"bits": 8}, "spec": bspec, "epoch": 1}
    save_checkpoint(store, item_dir("base", bi.id), bck, identity(bi, config_hash(cfg, bi)))
    return gi, g


def test_nf_export_writes_a_verified_onnx_graph(tmp_path, capsys, monkeypatch) -> None:
    from orchestration.cli import main

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # nothing may land in the working directory

    gi, g = _handmade_sweep(tmp_path)
    out = tmp_path / "out" / "g.onnx"
    assert main(["export", "exp", gi.id, "--onnx", str(out), "--storage", str(tmp_path), "--register"]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("max abs difference ")[1].split()[0])
    assert diff < 1e-5 and out.exists()
    assert "registered: nf-exp-digits-resnet18-ConvS version 1" in printed  # in the sweep's own MLflow
    assert list(work.iterdir()) == []
    assert list((tmp_path / "exp" / "mlartifacts").rglob("MLmodel"))  # the model's files: in the sweep's storage
    x = check_inputs(32, n=3, seed=5)
    with torch.no_grad():
        ref = deployable(deployed_generator(g, 8))(x).numpy()
    assert np.abs(onnx_outputs(out, x) - ref).max() < 1e-5  # the graph is this item's generator

    both = tmp_path / "gb.onnx"
    assert main(["export", "exp", gi.id, "--onnx", str(both), "--with-base", "--storage", str(tmp_path)]) == 0
    assert onnx_outputs(both, x).shape == (3, 10)

    assert main(["export", "exp", "nope", "--onnx", str(out), "--storage", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("nf: error: ") and "'nope'" in err and gi.id in err

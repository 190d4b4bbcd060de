"""Weight-side protection baselines as base-training modes in a sweep (`base.training`), compared with
NeuralFuse on the same chips: ids and specs, the training config each base item gets, and a tiny
standard + RandBET sweep on digits end to end (rows, registered generators, report section in
Chromium, `nf select`)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from orchestration.spec.config import ConfigError, parse_config
from orchestration.spec.plan import Item, plan
from orchestration.store.item_files import config_hash
from orchestration.sweep.experiment import base_train_config

GRID = {"name": "prot", "models": ["resnet18", "vgg11"], "generators": ["ConvS"], "fault_model": "flip"}
GRID["layout"] = "flat"


def _ids(cfg) -> dict[str, list[str]]:
    return {s: [it.id for it in its] for s, its in plan(cfg).items()}


def test_training_grid_makes_suffixed_items_and_keeps_standard_ids_and_hashes() -> None:
    plain = parse_config(GRID)
    both = parse_config({**GRID, "base": {"training": ["standard", "randbet", "clip", "awp"], "wmax": 0.2}})
    old, new = _ids(plain), _ids(both)
    for stage in ("base", "generator", "eval", "transfer"):
        assert set(old[stage]) <= set(new[stage])  # every standard id as before the modes
        assert len(new[stage]) == 4 * len(old[stage])
    for it in plan(plain)["base"] + plan(plain)["generator"]:  # the standard items' checkpoints stay valid
        twin = next(x for x in plan(both)[it.stage] if x.id == it.id)
        assert twin.to_dict() == it.to_dict() and config_hash(both, twin) == config_hash(plain, it)
    base = {it.id: it for it in plan(both)["base"]}
    assert "digits.resnet18.b8.s0.randbet-p0.01-w0.2" in base and "digits.vgg11.b8.s0.clip-w0.2" in base
    assert "digits.resnet18.b8.s0.awp" in base
    gens = {it.id: it for it in plan(both)["generator"]}
    gid = "digits.resnet18.randbet-p0.01-w0.2.ConvS.p0.01.l5.n5.flip.flat.b8g8.s0"
    assert gens[gid].needs == ["digits.resnet18.b8.s0.randbet-p0.01-w0.2"]
    assert gens[gid].spec.base_training == "randbet"
    tr = next(it for it in plan(both)["transfer"] if it.id == f"transfer.{gid}")
    assert tr.needs == [gid, "digits.vgg11.b8.s0.randbet-p0.01-w0.2"]
    for it in [*base.values(), *gens.values()]:  # the Tune hop keeps the mode and its options
        assert Item.from_dict(json.loads(json.dumps(it.to_dict()))) == it


def test_each_base_item_trains_in_its_mode_on_the_sweeps_chips() -> None:
    cfg = parse_config(
        {**GRID, "base": {"training": ["standard", "randbet", "awp"], "randbet_ber": 0.02, "awp": {"steps": 2}}}
    )
    by_mode = {it.spec.training: base_train_config(it.spec, cfg.base) for it in plan(cfg)["base"]}
    assert by_mode["standard"].training == "standard"
    rb = by_mode["randbet"]
    assert (rb.training, rb.randbet_ber, rb.wmax, rb.fault_model, rb.layout) == (
        "randbet",
        0.02,
        0.1,
        "flip",
        "flat",
    )
    assert by_mode["awp"].awp_config().steps == 2 and by_mode["awp"].awp_config().epsilon == pytest.approx(8 / 255)
    # a changed option changes the randbet item's hash, never the standard one's
    other = parse_config({**GRID, "base": {"training": ["standard", "randbet"], "randbet_ber": 0.03}})
    std = [it for it in plan(cfg)["base"] if it.spec.training == "standard"]
    assert [config_hash(cfg, it) for it in std] == [
        config_hash(other, it) for it in plan(other)["base"] if it.spec.training == "standard"
    ]


@pytest.mark.parametrize(
    ("base", "needle"),
    [
        (
            {"training": ["randbat"]},
            "base.training[0]: 'randbat' is not a valid base training (did you mean 'randbet'?)",
        ),
        ({"training": "randbet"}, "base.training: 'randbet' is not a list"),
        ({"training": ["standard", "standard"]}, "appears more than once"),
        ({"wmax": 0}, "base.wmax: 0 is out of range"),
        ({"randbet_ber": 2}, "base.randbet_ber: 2 is out of range"),
        ({"awp": {"stepz": 3}}, "base.awp.stepz: unknown field 'stepz' (did you mean 'steps'?)"),
    ],
)
def test_bad_protection_options_fail_in_one_line(base, needle) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**GRID, "base": base})
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    if "training[0]" in needle:
        assert "valid choices: standard, clip, randbet, awp" in msg


# ------------------------------------------------------------------------------ a tiny sweep, end to end
TINY = {
    "name": "tinyprot",
    "datasets": [{"name": "digits", "train_subset": 256, "test_subset": 90}],
    "models": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS"],
    "train_bers": [0.01],
    "ns": [2],
    # threshold null: the perturbed loss joins from the first step (the tiny run never gets below 1.75)
    "base": {"training": ["standard", "randbet"], "epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.01], "chips": 3},
    "transfer": False,
}
TINY["base"]["randbet_threshold"] = None
RB = "randbet-p0.01-w0.1"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    import ray

    from orchestration.sweep.runner import run_sweep

    cfg = parse_config({**TINY, "storage": str(tmp_path_factory.mktemp("prot") / "sweeps")})
    try:
        rows = run_sweep(cfg, verbose=0, log=lambda _: None)
    finally:
        ray.shutdown()
    return cfg, rows


def test_rows_compare_both_bases_on_the_same_chips(swept) -> None:
    from orchestration.store.item_files import read_done
    from orchestration.store.roots import sweep_store

    cfg, rows = swept
    assert {r["base_training"] for r in rows} == {"standard", "randbet"}
    assert len({(r["chips"], r["eval_ber"], r["fault_model"], r["layout"], r["bits"]) for r in rows}) == 1
    done = read_done(sweep_store(cfg), "base", f"digits.resnet18.b8.s0.{RB}")
    assert done["item"]["params"]["training"] == "randbet"
    assert done["item"]["params"]["training_options"]["fault_model"] == cfg.fault_model
    assert all(h["seconds"] > 0 for h in done["history"])  # what the report's training hours are made of


def test_every_generator_is_registered_and_loads_as_the_checkpoint(swept) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from nf_core.export import check_inputs, deployable
    from orchestration.store.item_files import load_item_checkpoint
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import tracking_uri
    from orchestration.tracking.model_registry import generator_from_checkpoint

    cfg, _ = swept
    store = sweep_store(cfg)
    uri = tracking_uri(cfg, store)
    client = MlflowClient(uri, registry_uri=uri)
    names = sorted(m.name for m in client.search_registered_models())
    assert names == ["nf-tinyprot-digits-resnet18-ConvS", f"nf-tinyprot-digits-resnet18.{RB}-ConvS"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for it in plan(cfg)["generator"]:
        name = "nf-tinyprot-digits-resnet18" + (f".{RB}" if it.spec.base_tag else "") + "-ConvS"
        (v,) = client.search_model_versions(f"name = '{name}'")
        assert v.tags["nf.item"] == it.id and v.tags["base_training"] == (RB if it.spec.base_tag else "standard")
        assert float(v.tags["rp.resnet18.p0.01"]) == pytest.approx(
            next(r["rp"] for r in swept[1] if r["item_id"] == f"eval.{it.id}"), abs=1e-3
        )  # the eval numbers joined as tags
        gen, size = generator_from_checkpoint(load_item_checkpoint(store, "generator", it.id))
        x = check_inputs(size, n=3)
        with torch.no_grad():
            want = deployable(gen)(x).numpy()
        got = mlflow.pyfunc.load_model(f"models:/{name}/{v.version}").predict(x.numpy())
        assert (got == want).all()


def test_report_section_renders_in_chromium_and_select_weighs_retraining(swept, tmp_path) -> None:
    from nf_core.select import candidate_label
    from orchestration.report.build import report_sweep

    cfg, rows = swept
    index = report_sweep(cfg.name, cfg.storage, out=str(tmp_path / "report"), track=False, log=lambda _: None)
    page = open(index, encoding="utf-8").read()
    assert "Input-side vs weight-side protection" in page and "figures/protection.png" in page
    table = (tmp_path / "report" / "tables" / "protection.csv").read_text()
    for option in ("standard base", "standard + NF (ConvS)", "RandBET base", "RandBET + NF (ConvS)"):
        assert option in table
    assert "yes (retrained)" in table and "no (input side)" in table
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: `make test` installs it (apt-get install -y chromium)"
    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'prof'}",
         f"--screenshot={shot}", "--window-size=1200,1600", f"file://{index}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-1000:]
    # nf select: the retrained base alone is a candidate of its own, labelled as such
    from nf_core.select import operating_candidates
    from nf_core.voltage import load_voltage_table

    cands, _ = operating_candidates(rows, 0.0, load_voltage_table(), {"resnet18": 100, "ConvS": 10})
    labels = {candidate_label(c) for c in cands}
    assert {"-", "ConvS", "RandBET (weights retrained)", "ConvS on RandBET (weights retrained)"} <= labels

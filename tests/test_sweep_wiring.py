"""Issue 12 and 13 features wired into sweeps: BER-conditioned generators trained over a BER range,
evaluation on measured fault maps, and the speed options reaching DeployedModel / evaluate.

The trainables run in this process (device cpu: no Ray needed, the same functions Tune calls);
one test runs a tiny version of sweeps/ber_conditioned.yaml through run_sweep on a local Ray.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from orchestration.spec.config import ConfigError, parse_config, resolve_auto
from orchestration.spec.plan import plan
from orchestration.sweep.preflight import check_dataset_roots, check_fault_maps

ROOT = Path(__file__).resolve().parents[1]
# Trainables called outside Tune report nowhere (the same functions Tune runs; done.json is what counts)
pytestmark = pytest.mark.filterwarnings("ignore:`report` is meant:UserWarning")
TINY: dict[str, Any] = {
    "name": "wiring",
    "device": "cpu",
    "datasets": [{"name": "digits", "train_subset": 192, "test_subset": 90}],
    "models": ["resnet18", "vgg11"],
    "sources": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS", "ConvS_BER"],
    "train_bers": [0.03, {"range": [0.02, 0.05], "log": True}],
    "ns": [2],
    "base": {"epochs": 4, "batch_size": 16, "optimizer": "adam", "lr": 0.005},  # resnet18: ~70% CA
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.02, 0.05], "chips": 2},
    "transfer": True,
}


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------ schema and plan
def test_ber_range_entries_plan_only_with_ber_conditioned_generators() -> None:
    cfg = parse_config(TINY)
    stored = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert parse_config(stored).to_dict() == cfg.to_dict()  # sweep.yaml round trip (resume)
    assert stored["train_bers"] == [0.03, {"range": [0.02, 0.05], "log": True}]
    gens = plan(cfg)["generator"]
    assert [(it.params["generator"], it.params["ber"]) for it in gens] == [("ConvS", 0.03), ("ConvS_BER", None)]
    assert gens[0].id == "digits.resnet18.ConvS.p0.03.l5.n2.stuck_at.wrap.b8g8.s0"
    assert gens[1].id == "digits.resnet18.ConvS_BER.r0.02-0.05log.l5.n2.stuck_at.wrap.b8g8.s0"
    assert gens[1].params["ber_range"] == {"range": [0.02, 0.05], "log": True} and "ber_range" not in gens[0].params
    uniform = parse_config({**TINY, "train_bers": [0.03, {"range": [0.02, 0.05], "log": False}]})
    assert plan(uniform)["generator"][1].id.split(".")[3:6] == ["r0", "02-0", "05"]  # r0.02-0.05, no "log"
    assert len(plan(cfg)["eval"]) == len(plan(cfg)["transfer"]) == 2


@pytest.mark.parametrize(
    "change,pattern",
    [
        (
            {"generators": ["ConvS"]},
            r"^train_bers\[1\]: \{'range': \[0\.02, 0\.05\], 'log': True\} is a range, which pairs only with "
            r"BER-conditioned generators \(names ending in _BER\); generators has none: ConvS$",
        ),
        ({"generators": ["ConvS_BER"]}, r"^train_bers\[0\]: 0\.03 is a single BER, .*ConvS_BER.*\{range: \[0\.001"),
        ({"train_bers": [0.03]}, r"^generators\[1\]: 'ConvS_BER' is BER-conditioned .*train_bers has none"),
        ({"train_bers": [{"range": [0.02, 0.05]}]}, r"^generators\[0\]: 'ConvS' trains at one BER; .*only ranges"),
        ({"train_bers": [0.03, {"range": [0.05, 0.02]}]}, r"^train_bers\[1\]: .*range \[0\.05, 0\.02\] is empty"),
        (
            {"train_bers": [0.03, {"range": [0, 0.02]}]},
            r"^train_bers\[1\]: 0 is out of range; expected a number in \(0",
        ),
        ({"train_bers": [0.03, {"range": 0.02}]}, r"^train_bers\[1\]: .*range 0\.02 is not a list \[lo, hi\]"),
        ({"train_bers": [0.03, {"range": [0.01, 0.02], "lg": True}]}, r"^train_bers\[1\]: .*unknown key 'lg'"),
        ({"train_bers": [0.03, {"range": [0.01, 0.02], "log": "yes"}]}, r"log 'yes' is not a boolean"),
        (
            {"train_bers": [0.03, {"range": [0.01, 0.02]}, {"range": [0.01, 0.02], "log": True}]},
            r"^train_bers\[2\]: .* appears more than once",
        ),
        ({"generator": {"access": "pool"}}, r"^generator\.access: 'pool' is not possible with BER-conditioned"),
    ],
)
def test_bad_ber_pairs_and_ranges_are_one_line(change: dict[str, Any], pattern: str) -> None:
    message = _error({**TINY, **change})
    assert re.search(pattern, message), message


def test_speed_options_schema_and_defaults() -> None:
    cfg = parse_config(TINY)
    g, e = cfg.generator, cfg.evaluation
    assert (g.fold_bn, g.channels_last, g.amp, g.prefetch) == ("auto", "auto", None, "auto")
    assert (e.chips_per_pass, e.prefetch, e.fold_bn, e.channels_last) == ("auto", "auto", "auto", "auto")
    # auto: off on the CPU (CPU results unchanged), on with CUDA; nf_core picks chips per pass by device
    assert g.deployed_options("cpu") == {"fold_bn": False, "channels_last": False, "amp": None}
    assert g.deployed_options("cuda") == {"fold_bn": True, "channels_last": True, "amp": None}
    assert e.deployed_options("cpu") == {"fold_bn": False, "channels_last": False}
    assert e.evaluate_options() == {"chips_per_pass": None, "prefetch": None}
    assert resolve_auto(False, "cuda") is False and resolve_auto(True, "cpu") is True
    set_ = parse_config({**TINY, "evaluation": {"chips_per_pass": 4, "prefetch": False}, "generator": {"amp": "bf16"}})
    assert set_.evaluation.evaluate_options() == {"chips_per_pass": 4, "prefetch": False}
    assert set_.generator.deployed_options("cpu")["amp"] == "bf16"
    for change, pattern in (
        (
            {"generator": {"fold_bn": "sometimes"}},
            r"^generator\.fold_bn: 'sometimes' is not valid; expected auto, true",
        ),
        ({"generator": {"amp": "fp16"}}, r"^generator\.amp: 'fp16' is not a valid amp.*; valid choices: bf16$"),
        ({"evaluation": {"chips_per_pass": 0}}, r"^evaluation\.chips_per_pass: 0 is not valid; expected auto or an"),
        ({"evaluation": {"chips_per_pass": True}}, r"^evaluation\.chips_per_pass: true is not valid"),
        ({"evaluation": {"prefetch": 1}}, r"^evaluation\.prefetch: 1 is not valid; expected auto, true or false"),
    ):
        message = _error({**TINY, **change})
        assert re.search(pattern, message), message


# ------------------------------------------------------------------ measured fault maps
def _write_maps(folder: Path) -> list[str]:
    """Two measured chips: a_faulty (one in five cells stuck) and b_clean (no faulty cell)."""
    from nf_core.fault_maps import save_fault_map

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = 64, 128
    rng = np.random.default_rng(0)
    cells = rng.choice(rows * cols, size=rows * cols // 5, replace=False)
    faults = np.stack([cells // cols, cells % cols, rng.integers(0, 2, cells.size)], axis=1)
    save_fault_map(folder / "a_faulty.npz", faults, rows, cols)
    save_fault_map(folder / "b_clean.parquet", np.zeros((0, 3), np.int64), rows, cols)
    return ["a_faulty.npz", "b_clean.parquet"]


def _measured(tmp_path: Path, maps: Path, **evaluation: Any) -> dict[str, Any]:
    return {
        **TINY,
        "evaluation": {**TINY["evaluation"], "fault_model": "measured", "fault_maps": str(maps), **evaluation},
    }


def test_measured_fault_maps_schema_and_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    maps = tmp_path / "maps"
    _write_maps(maps)
    cfg = parse_config(_measured(tmp_path, maps))
    assert check_fault_maps(cfg) == 2 and check_fault_maps(parse_config(TINY)) == 0
    check_dataset_roots(cfg)  # what `nf sweep plan/run` calls before Ray starts
    monkeypatch.chdir(tmp_path)  # a relative folder is made absolute (trials run elsewhere)
    assert parse_config(_measured(tmp_path, Path("maps"))).evaluation.fault_maps == str(maps)
    for change, pattern in (
        ({"fault_maps": None}, r"^evaluation\.fault_maps: null is not possible: fault_model measured needs"),
        ({"fault_model": "stuck_at"}, r"^evaluation\.fault_maps: '.*maps' is only used with fault_model measured"),
        ({"pool_actors": 1}, r"^evaluation\.pool_actors: 1 is not possible: measured fault maps"),
        ({"fault_model": "measurd"}, r"did you mean 'measured'.*valid choices: stuck_at, flip, measured$"),
    ):
        message = _error(_measured(tmp_path, maps, **change))
        assert re.search(pattern, message), message
    message = _error({**TINY, "fault_model": "measured"})  # generators train on random chips only
    assert re.search(r"^fault_model: 'measured' is not a valid fault model; valid choices: stuck_at, flip$", message)
    with pytest.raises(ConfigError, match=r"^evaluation\.fault_maps: '.*nope': is not a folder"):
        check_dataset_roots(parse_config(_measured(tmp_path, tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^evaluation\.fault_maps: fault_maps '.*empty' holds no \.npz or \.parquet"):
        check_fault_maps(parse_config(_measured(tmp_path, tmp_path / "empty")))
    np.savez(maps / "c_bad.npz", faults=np.array([[1, 2, 1], [1, 2, 0]]), geometry=np.array([64, 128]))
    with pytest.raises(
        ConfigError, match=r"^evaluation\.fault_maps: fault map c_bad\.npz: cell \(row 1, bit_column 2\)"
    ):
        check_dataset_roots(cfg)
    # `nf sweep plan` stops on it: one line, exit 2, nothing started
    from orchestration.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**_measured(tmp_path, maps), "storage": str(tmp_path / "store")}))
    capsys.readouterr()
    assert main(["sweep", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c_bad.npz: cell (row 1, bit_column 2) is listed twice" in err[0], err
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------ the trainables, in process
def _run(cfg: Any, store: Any, stages: tuple[str, ...], only: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run the plan's items of ``stages`` through the stage trainables; their done.json by stage."""
    from orchestration.store.item_files import item_dir
    from orchestration.sweep.trainables import TRAINABLES

    done: dict[str, list[dict[str, Any]]] = {}
    for stage in stages:
        for it in plan(cfg)[stage]:
            if only is None or only in it.id:
                TRAINABLES[stage]({"item": it.to_dict()}, cfg=cfg, store=store.spec())
                done.setdefault(stage, []).append(store.read_json(f"{item_dir(stage, it.id)}/done.json"))
    return done


def _forget(store: Any, *stages: str) -> None:
    """Drop the finished items of ``stages``: a done item is never run again (its done.json wins)."""
    import shutil

    for stage in stages:
        shutil.rmtree(store.path(f"items/{stage}"), ignore_errors=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Base models and both generators of TINY, trained once for the tests below."""
    from orchestration.store.roots import sweep_store

    tmp = tmp_path_factory.mktemp("wiring")
    cfg = parse_config({**TINY, "storage": str(tmp / "store")})
    store = sweep_store(cfg)
    _run(cfg, store, ("base",), only="resnet18")
    # vgg11 is only a transfer target here: one epoch is enough (same item, same storage)
    _run(
        parse_config({**TINY, "storage": str(tmp / "store"), "base": {**TINY["base"], "epochs": 1}}),
        store,
        ("base",),
        "vgg11",
    )
    _run(cfg, store, ("generator",))
    return store, tmp


def test_ber_conditioned_generator_trains_over_its_range_and_deploys_at_the_chip_ber(trained) -> None:
    from nf_core.chips import ChipConfig
    from nf_core.data import make_loader
    from nf_core.evaluate import evaluate, evaluation_chip_seeds
    from orchestration.spec.plan import Item
    from orchestration.store.item_files import item_dir
    from orchestration.sweep.experiment import trained_generator
    from orchestration.sweep.trainables import TrialContext

    store, tmp = trained
    cfg = parse_config({**TINY, "storage": str(tmp / "store")})
    gid = plan(cfg)["generator"][1].id
    ck = store.load_torch(f"{item_dir('generator', gid)}/checkpoint.pt")
    assert ck["config"]["ber"] == {"lo": 0.02, "hi": 0.05, "log": True}  # the BERRange, no placeholder BER
    assert 0.02 <= ck["history"][-1]["ber"] <= 0.05  # the batches' sampled BERs (mean over the epoch)
    rows = [r for d in _run(cfg, store, ("eval", "transfer"), only="ConvS_BER").values() for x in d for r in x["rows"]]
    assert {(r["stage"], r["target"], r["eval_ber"]) for r in rows} == {
        (s, t, b) for s, t in (("eval", "resnet18"), ("transfer", "vgg11")) for b in (0.02, 0.05)
    }
    assert all(r["train_ber"] is None and r["train_ber_range"] == {"range": [0.02, 0.05], "log": True} for r in rows)
    # Deployed at the chip's BER: the row equals a by-hand evaluation with G set to that BER.
    ctx = TrialContext(Item.from_dict(plan(cfg)["eval"][1].to_dict()), cfg, store)
    ds = ctx.dataset("digits")
    gen = trained_generator(ck, "ConvS_BER", ds.input_size)
    x = next(iter(make_loader(ds.test, 16, shuffle=False)))[0]
    assert not torch.allclose(gen(x, ber=0.02), gen(x, ber=0.05), atol=1e-6)  # the BER input matters
    base = ctx.deployed("resnet18")
    for ber in (0.02, 0.05):
        gen.set_ber(ber)
        want = evaluate(base, make_loader(ds.test, 256, shuffle=False), ChipConfig(ber), gen, evaluation_chip_seeds(2))
        row = next(r for r in rows if r["stage"] == "eval" and r["eval_ber"] == ber)
        assert row["pa_nf_per_chip"] == want["pa_nf_per_chip"] and row["ca_nf"] == want["ca_nf"]


def test_evaluation_on_measured_fault_maps(trained) -> None:
    store, tmp = trained
    names = _write_maps(tmp / "maps")
    cfg = parse_config({**_measured(tmp, tmp / "maps"), "storage": str(tmp / "store")})
    check_dataset_roots(cfg)
    _forget(store, "eval", "transfer")  # evaluated on random chips by the test before: again, on the maps
    done = _run(cfg, store, ("eval", "transfer"))
    rows = [r for d in done.values() for x in d for r in x["rows"]]
    assert len(rows) == 4  # (ConvS, ConvS_BER) x (eval on resnet18, transfer to vgg11): one row each
    assert all(r["ca"] > 40 for r in rows if r["stage"] == "eval"), rows  # a base model worth breaking
    for r in rows:
        assert r["fault_model"] == "measured" and r["fault_maps"] == names and r["chips"] == 2
        faulty = (64 * 128 // 5) / (64 * 128)  # the measured BER: faulty cells / cells
        assert r["eval_ber"] == pytest.approx(faulty / 2) and r["fault_map_bers"] == [pytest.approx(faulty), 0.0]
        # The measured chips, not random ones: the fault-free map reads exactly the clean model ...
        assert r["pa_per_chip"][1] == r["ca"] and r["pa_nf_per_chip"][1] is not None
        # ... and one cell in five stuck breaks it
        assert r["pa_per_chip"][0] < r["ca"] - 20 or r["stage"] == "transfer"
    assert {(r["generator"], r["train_ber"]) for r in rows} == {("ConvS", 0.03), ("ConvS_BER", None)}
    metrics = done["eval"][0]["final"]
    assert "pa_mean.resnet18.measured" in metrics and not any(".ber" in k for k in metrics)


# ------------------------------------------------------------------ speed options reach nf_core
def test_speed_options_reach_deployed_model_and_evaluate(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestration.sweep.trainables as tr
    from nf_core.deployed import DeployedModel

    store, tmp = trained
    seen: list[tuple[str, dict[str, Any], DeployedModel]] = []
    calls: list[dict[str, Any]] = []

    class Recording(DeployedModel):  # the real model, noting how the trainables built it
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            seen.append((stage_now[0], kw, self))

    real_evaluate = tr.evaluate

    def recording_evaluate(*a: Any, **kw: Any) -> dict[str, Any]:
        calls.append(kw)
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(tr, "DeployedModel", Recording)
    monkeypatch.setattr(tr, "evaluate", recording_evaluate)
    stage_now = ["generator"]
    fast = {
        **TINY,
        "name": "fast",
        "storage": str(tmp / "store"),
        "generators": ["ConvS"],
        "train_bers": [0.03],
        "generator": {**TINY["generator"], "fold_bn": True, "channels_last": True, "amp": "bf16", "prefetch": True},
        "evaluation": {**TINY["evaluation"], "fold_bn": True, "channels_last": True, "chips_per_pass": 2},
    }
    cfg = parse_config(fast)
    from orchestration.store.roots import sweep_store

    fstore = sweep_store(cfg)
    for it in plan(cfg)["base"]:  # the trained base models: copied, not trained again
        rel = f"items/base/{it.id}/checkpoint.pt"
        fstore.write_bytes(rel, store.read_bytes(rel))
    done = _run(cfg, fstore, ("generator",))
    assert done["generator"][0]["final"]["epoch"] == 1
    ck = fstore.load_torch(f"items/generator/{plan(cfg)['generator'][0].id}/checkpoint.pt")
    assert ck["config"]["prefetch"] is True  # GeneratorTrainConfig.prefetch: chips drawn ahead, also on the CPU
    (_, kw, base) = seen[-1]
    assert kw == {"fold_bn": True, "channels_last": True, "amp": "bf16"}
    assert base.fold is not None and base.channels_last and base.amp == "bf16"  # folding kept: within tolerance
    stage_now[0] = "eval"
    rows_fast = _run(cfg, fstore, ("eval",))["eval"][0]["rows"]
    (_, kw, base) = seen[-1]
    assert kw == {"fold_bn": True, "channels_last": True} and base.fold is not None and base.amp is None
    assert calls[-1] == {"chips_per_pass": 2, "prefetch": None}
    # The same generator evaluated with the defaults (CPU: no folding, one chip per pass): same chips,
    # results equal up to float rounding (an argmax may flip on a near tie: at most one image of 90)
    plain = parse_config({**fast, "evaluation": TINY["evaluation"]})
    _forget(fstore, "eval")
    rows_plain = _run(plain, fstore, ("eval",))["eval"][0]["rows"]
    assert seen[-1][1] == {"fold_bn": False, "channels_last": False} and calls[-1] == {
        "chips_per_pass": None,
        "prefetch": None,
    }
    for a, b in zip(rows_fast, rows_plain):
        assert a["eval_ber"] == b["eval_ber"]
        for k in ("pa_per_chip", "pa_nf_per_chip"):
            assert np.allclose(a[k], b[k], atol=100 / 90 + 1e-9), (k, a[k], b[k])


# ------------------------------------------------------------------ the shipped config, run small
def test_ber_conditioned_sweep_runs_small(tmp_path: Path) -> None:
    """sweeps/ber_conditioned.yaml as shipped, shrunk to digits on the CPU, through run_sweep on a local Ray."""
    import ray

    from orchestration.sweep.runner import run_sweep

    raw = yaml.safe_load((ROOT / "sweeps" / "ber_conditioned.yaml").read_text())
    small = copy.deepcopy(raw)
    small.update(
        storage=str(tmp_path / "store"),
        datasets=[{"name": "digits", "train_subset": 128, "test_subset": 60}],
        models=["resnet18"],
        width=0.125,
        ns=[2],
        base={**raw["base"], "epochs": 1, "batch_size": 64},
        generator={**raw["generator"], "epochs": 1, "batch_size": 64},
        evaluation={**raw["evaluation"], "chips": 2},
        resources={"cpus": 1, "gpus": 0, "max_failures": 0},
        mlflow={},
    )
    cfg = parse_config(small)
    assert cfg.generators == ["ConvS", "ConvS_BER"] and len(plan(cfg)["generator"]) == 4
    try:
        rows = run_sweep(cfg, verbose=0, log=lambda _: None)
    finally:
        ray.shutdown()
    bers = raw["evaluation"]["bers"]
    assert sorted((r["generator"], r["train_ber"] or 0.0, r["eval_ber"]) for r in rows) == sorted(
        [("ConvS", tb, eb) for tb in raw["train_bers"][:3] for eb in bers] + [("ConvS_BER", 0.0, eb) for eb in bers]
    )
    cond = [r for r in rows if r["generator"] == "ConvS_BER"]
    assert all(r["train_ber_range"] == {"range": [0.001, 0.0125], "log": True} for r in cond)
    assert (tmp_path / "store" / "ber_conditioned" / "results" / "results.parquet").exists()

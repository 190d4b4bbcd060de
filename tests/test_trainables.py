"""The stage trainables, run in this process (device cpu: no Ray needed, the same functions Tune calls):
a BER-conditioned generator trains over its range and deploys at the chip's BER, evaluation on measured
fault maps, and the speed options reaching DeployedModel / evaluate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.sweep.preflight import check_dataset_roots
from tests.sweep_support import TINY_RANGES as TINY
from tests.sweep_support import measured_config as _measured
from tests.sweep_support import write_fault_maps as _write_maps

# Trainables called outside Tune report nowhere (the same functions Tune runs; done.json is what counts)
pytestmark = pytest.mark.filterwarnings("ignore:`report` is meant:UserWarning")


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

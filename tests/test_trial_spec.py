"""Trial specs: each item reaches its trainable as one typed, frozen object, built once by the plan.

Across Ray Tune an item travels as JSON (``Item.to_dict``, Tune's params.json); the trainable
rebuilds the same object with one call. Checked for every item of every shipped sweep.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nf_core.ber_range import BERRange
from orchestration.spec.config import GeneratorStage, load_config, parse_config
from orchestration.spec.plan import Item, plan
from orchestration.spec.trial import BaseSpec, EvalSpec, GeneratorSpec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "orchestration" / "demo.yaml", *sorted((ROOT / "sweeps").glob("*.yaml"))]
RANGED = {
    "name": "spec",
    "models": ["resnet18", "vgg11"],
    "ensembles": [["resnet18", "vgg11"]],
    "generators": ["ConvS", "UNetS_BER"],
    "train_bers": [0.01, {"range": [0.001, 0.0125], "log": True}, {"range": [0.002, 0.02], "log": False}],
    "lambdas": [1, 5],
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_item_survives_the_tune_hop_unchanged(path: Path) -> None:
    items = [it for stage in plan(load_config(str(path))).values() for it in stage]
    assert items
    for it in items:
        wire = json.loads(json.dumps({"item": it.to_dict()}))  # what Tune stores and hands the trial
        assert Item.from_dict(wire["item"]) == it


def test_specs_are_typed_final_and_frozen() -> None:
    items = plan(parse_config(RANGED))
    assert all(isinstance(it.spec, BaseSpec) for it in items["base"])
    gens = items["generator"]
    assert all(type(it.spec) is GeneratorSpec for it in gens)
    assert all(isinstance(it.spec, EvalSpec) for s in ("eval", "transfer") for it in items[s])
    ranged = [it.spec for it in gens if it.spec.generator == "UNetS_BER"]
    # the range in its final form: nf_core's BERRange, no placeholder BER beside it
    assert {s.ber for s in ranged} == {BERRange(0.001, 0.0125, True), BERRange(0.002, 0.02, False)}
    assert all(s.train_ber is None and s.ber_range is s.ber for s in ranged)
    assert all(isinstance(it.spec.ber, float) and it.spec.ber_range is None for it in gens if it.spec not in ranged)
    assert {it.spec.source for it in gens} == {("resnet18",), ("vgg11",), ("resnet18", "vgg11")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        gens[0].spec.lam = 2.0  # type: ignore[misc]
    # the params (MLflow, checkpoint hash, done.json) keep the sweep syntax of the range
    p = next(it for it in gens if it.spec.ber == BERRange(0.002, 0.02, False)).params
    assert p["ber"] is None and p["ber_range"] == {"range": [0.002, 0.02], "log": False}


def test_the_training_config_takes_the_spec_as_it_is() -> None:
    from nf_core.ber_conditioned import BERSampledChips
    from nf_core.eopm import RandomChips
    from orchestration.sweep.experiment import generator_train_config

    gens = plan(parse_config(RANGED))["generator"]
    stage = GeneratorStage(epochs=2, prefetch=True)
    for it in gens:
        cfg = generator_train_config(it.spec, stage)
        assert cfg.ber is it.spec.ber and cfg.lam == it.spec.lam and cfg.n_chips == it.spec.n
        assert cfg.prefetch is True and cfg.epochs == 2
        models = cfg.perturbed_models([])
        assert type(models) is (BERSampledChips if it.spec.ber_range else RandomChips)

"""Adversarially trained generators in a sweep (paper App. I, Table 25): the config's `generator.chips` and
`generator.adversarial`, their item ids, sweeps/appendix_i_adversarial.yaml, each config's `reproduces`,
and a tiny adversarial generator trained and evaluated by the stage trainables, its rows matched to Table 25."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.spec.config import ConfigError, load_config, parse_config
from orchestration.spec.plan import Item, plan

ROOT = Path(__file__).resolve().parents[1]
BASE: dict[str, Any] = {"name": "adv", "models": ["resnet18"], "generators": ["ConvL"], "transfer": False}


def _gen(**generator: Any) -> dict[str, Any]:
    return {**BASE, "generator": generator}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_gen(chips="adversary"), "generator.chips: 'adversary' is not a valid chips source (did you mean "),
        (_gen(chips="adversarial", adversarial={"budget": 0}), "generator.adversarial.budget: 0 is out of range"),
        (_gen(chips="adversarial", adversarial={"budget": [5, 5]}), "5 appears more than once in [5, 5]"),
        (_gen(chips="adversarial", adversarial={"budget": True}), "true is not an integer"),
        (_gen(chips="mixed", adversarial={"fraction": 1.0}), "generator.adversarial.fraction: 1.0 is out of range"),
        (_gen(chips="adversarial", adversarial={"steps": 0}), "generator.adversarial.steps: 0 is out of range"),
        (_gen(chips="adversarial", adversarial={"budgte": 5}), "unknown field 'budgte' (did you mean 'budget'?)"),
        (_gen(adversarial={"budget": 7}), "generator.adversarial: {'budget': [7], 'steps': 5, 'fraction': 0.5} is"),
        ({**_gen(chips="mixed"), "ns": [1]}, "ns: 1 is not possible with chips mixed"),
        (_gen(chips="adversarial", access="pool"), "generator.access: 'pool' is not possible with chips 'adversarial'"),
        (
            {**_gen(chips="adversarial"), "generators": ["ConvS_BER"], "train_bers": [{"range": [0.001, 0.01]}]},
            "generator.chips: 'adversarial' is not possible with BER-conditioned generators (ConvS_BER)",
        ),
        ({**BASE, "reproduces": "Table 25"}, "reproduces: 'Table 25' is not a list of names"),
        ({**BASE, "reproduces": ["Table 25", 3]}, "is not a list of names"),
    ],
)
def test_schema_errors_are_one_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_chip_modes_come_from_nf_core() -> None:
    from nf_core import catalog
    from nf_core.adversarial import CHIP_MODES

    assert catalog.names("chips") == CHIP_MODES


def test_ids_and_params_of_random_chips_are_unchanged() -> None:
    items = plan(parse_config(BASE))
    (g,) = items["generator"]
    assert g.id == "digits.resnet18.ConvL.p0.01.l5.n5.stuck_at.wrap.b8g8.s0"  # the id every EOPM sweep had
    assert not {"chips", "budget", "attack_steps", "fraction"} & set(g.params)  # so are its checkpoint hashes
    assert g.spec.flipped_bits is None


def test_one_generator_per_budget_with_tagged_ids() -> None:
    cfg = parse_config(_gen(chips="adversarial", adversarial={"budget": [10, 100], "steps": 2}))
    items = plan(cfg)
    ids = [it.id for it in items["generator"]]
    assert ids == [
        "digits.resnet18.ConvL.p0.01.l5.n5.adv10.stuck_at.wrap.b8g8.s0",
        "digits.resnet18.ConvL.p0.01.l5.n5.adv100.stuck_at.wrap.b8g8.s0",
    ]
    assert [it.id for it in items["eval"]] == [f"eval.{i}" for i in ids]
    spec = items["eval"][1].spec
    assert (spec.chips, spec.budget, spec.attack_steps, spec.fraction, spec.flipped_bits) == (
        "adversarial",
        100,
        2,
        None,
        100,
    )
    back = Item.from_dict(items["eval"][1].to_dict())  # the transport form across Ray Tune
    assert back.spec == spec
    mixed = plan(parse_config({**_gen(chips="mixed", adversarial={"budget": 50, "fraction": 0.4}), "ns": [5]}))
    (m,) = mixed["generator"]
    assert m.id == "digits.resnet18.ConvL.p0.01.l5.n5.mix50f0.4.stuck_at.wrap.b8g8.s0"
    assert m.params["fraction"] == 0.4 and Item.from_dict(m.to_dict()).spec == m.spec


def test_appendix_i_sweep_is_table_25() -> None:
    from nf_core.paper import load

    cfg = load_config(str(ROOT / "sweeps" / "appendix_i_adversarial.yaml"))
    paper = load()
    budgets = sorted(int(b) for b in paper.loc[paper["table"] == "25", "flipped_bits"].dropna().unique())
    assert cfg.generator.chips == "adversarial" and sorted(cfg.generator.adversarial.budget) == budgets
    assert cfg.models == ["resnet18"] and cfg.generators == ["ConvL"] and cfg.evaluation.bers == [0.01]
    assert [d.name for d in cfg.datasets] == ["cifar10"] and cfg.reproduces == ["Table 25"]
    assert len(plan(cfg)["generator"]) == len(budgets)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sweep_names_what_it_reproduces(path: Path) -> None:
    from orchestration.commands.views import format_plan

    raw = yaml.safe_load(path.read_text())
    assert "reproduces" in raw, f"{path.name}: add `reproduces: [Table …]` (or [] with a comment why)"
    cfg = load_config(str(path))
    text = format_plan(cfg, plan(cfg))
    assert all(t in text for t in cfg.reproduces)


# ---------------------------------------------------------------- a tiny adversarial generator, end to end
def test_adversarial_generator_trains_and_its_rows_match_table_25(tmp_path: Path) -> None:
    from nf_core.paper import match
    from orchestration.store.item_files import item_dir
    from orchestration.store.results import results_table
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.trainables import TRAINABLES

    cfg = parse_config(
        {
            **_gen(chips="adversarial", adversarial={"budget": 100, "steps": 1}, epochs=1, batch_size=64),
            "storage": str(tmp_path / "store"),
            "datasets": [{"name": "digits", "train_subset": 64, "test_subset": 40}],
            "width": 0.125,
            "ns": [2],
            "base": {"epochs": 1, "batch_size": 64},
            "evaluation": {"bers": [0.01], "chips": 2},
        }
    )
    store = sweep_store(cfg)
    done = {}
    for stage in ("base", "generator", "eval"):
        (it,) = plan(cfg)[stage]
        TRAINABLES[stage]({"item": it.to_dict()}, cfg=cfg, store=store.spec())
        done[stage] = store.read_json(f"{item_dir(stage, it.id)}/done.json")
    hist = done["generator"]["history"][-1]
    assert hist["attack_loss"] > 0  # the adversarial chips' loss: AdversarialChips ran in EOPM's place
    (row,) = done["eval"]["rows"]
    assert row["flipped_bits"] == 100 and row["train_chips"] == "adversarial"
    assert results_table([row]).to_pylist()[0]["flipped_bits"] == 100  # kept in the Parquet schema

    # Our digits row relabelled as CIFAR-10: it meets Table 25's 100-bit generator row, never an EOPM one
    as_cifar = [{**row, "dataset": "cifar10"}]
    m = match(as_cifar)
    gen = m[m["generator"].notna()]
    assert set(gen["table"]) == {"25"} and set(gen["flipped_bits"]) == {100}
    assert set(gen["metric"]) == {"CA_NF", "PA_NF", "RP"}
    eopm = match([{**as_cifar[0], "flipped_bits": None}])
    assert "25" not in set(eopm.loc[eopm["generator"].notna(), "table"])

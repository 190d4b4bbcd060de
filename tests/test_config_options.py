"""The config schema's BER ranges, measured fault maps and speed options: how a BER range pairs with
BER-conditioned generators in the plan, one-line errors for bad pairs and ranges, the speed options'
defaults per device, and measured fault maps checked before Ray starts (`nf sweep plan` stops on a bad map).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from orchestration.spec.config import ConfigError, parse_config, resolve_auto
from orchestration.spec.plan import plan
from orchestration.sweep.preflight import check_dataset_roots, check_fault_maps
from tests.sweep_support import TINY_RANGES as TINY
from tests.sweep_support import measured_config as _measured
from tests.sweep_support import write_fault_maps as _write_maps


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

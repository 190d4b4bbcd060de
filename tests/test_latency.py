"""nf_core.latency: batch-1 timings of a base model alone and behind a generator (paper Table 9)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from nf_core.generators import create_generator
from nf_core.latency import device_description, measure_latency, summarise, time_passes


def _tiny_base() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.Flatten(), nn.LazyLinear(10))


def test_structure_and_generator_adds_time() -> None:
    torch.manual_seed(0)
    base = _tiny_base()
    base(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer
    res = measure_latency(base, {"ConvS": create_generator("ConvS")}, 32, runs=30, warmup=3)
    assert res["batch_size"] == 1 and res["runs"] == 30 and res["warmup"] == 3 and res["input_size"] == 32
    assert res["device"].startswith("cpu (") and f"{torch.get_num_threads()} torch threads" in res["device"]
    base_row, gen_row = res["rows"]
    assert base_row["generator"] is None and base_row["added_ms"] is None
    assert gen_row["generator"] == "ConvS"
    for r in res["rows"]:
        assert 0 < r["median_ms"] <= r["p90_ms"]
    # A pass through G then the base does strictly more work than the base alone.
    assert gen_row["median_ms"] >= base_row["median_ms"]
    assert gen_row["added_ms"] == pytest.approx(gen_row["median_ms"] - base_row["median_ms"])


def test_time_passes_counts_runs_and_warmup() -> None:
    calls = {"a": 0, "b": 0}

    def bump(k: str):
        return lambda: calls.__setitem__(k, calls[k] + 1)

    times = time_passes({"a": bump("a"), "b": bump("b")}, runs=7, warmup=2)
    assert calls == {"a": 9, "b": 9}  # warm-up passes run but are not timed
    assert [len(v) for v in times.values()] == [7, 7]
    with pytest.raises(ValueError, match="runs 0"):
        time_passes({"a": bump("a")}, runs=0)


def test_summarise_median_and_p90() -> None:
    s = summarise([float(i) for i in range(1, 11)])  # 1..10
    assert s["median_ms"] == 5.5
    assert s["p90_ms"] == pytest.approx(9.1)  # numpy's linear interpolation: 1 + 0.9 * 9


def test_device_named() -> None:
    assert device_description("cpu").startswith("cpu (")


def test_nf_profile_latency_json(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.commands.profile import main

    assert main(["--model", "vgg11", "--generator", "ConvS", "--dataset", "digits", "--latency", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    lat = out["latency"]
    assert out["model"]["params"] > 0 and lat["model"] == "vgg11" and lat["runs"] == 2
    assert [r["generator"] for r in lat["rows"]] == [None, "ConvS"]
    assert lat["device"].startswith("cpu (")


def test_nf_profile_latency_needs_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.commands.profile import main

    assert main(["--generator", "ConvS", "--dataset", "digits", "--latency"]) == 2
    assert "--latency times a base model" in capsys.readouterr().err

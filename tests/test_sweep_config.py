"""Sweep configs: every invalid field is rejected up front, naming the value and the choices."""

import re
import subprocess
import sys

import pytest
import yaml

from orchestration.spec.config import ConfigError, load_config, parse_config
from orchestration.spec.plan import plan

GOOD = {
    "name": "t",
    "models": ["resnet18", "vgg11"],
    "generators": ["ConvS", "UIP"],
    "train_bers": [0.01, 0.02],
    "lambdas": [1.0, 5.0],
    "ns": [5],
    "ensembles": [["resnet18", "vgg11"]],
}

BAD = [
    ({"models": ["resnet34"]}, "resnet34.*resnet18, resnet50, vgg11, vgg16, vgg19"),
    ({"generators": ["ConvM"]}, "ConvM.*ConvL"),
    ({"datasets": ["mnist"]}, "mnist.*cifar10"),
    ({"datasets": [{"name": "cifar10"}]}, "root"),
    ({"datasets": [{"name": "digits", "train_subset": 0}]}, "train_subset"),
    ({"train_bers": [1.5]}, "train_bers.*1.5"),
    ({"evaluation": {"bers": [-0.1]}}, "evaluation.bers"),
    ({"lambdas": [-1]}, "lambdas.*-1"),
    ({"ns": [0]}, "ns.*0"),
    ({"fault_model": "random"}, "random.*stuck_at, flip"),
    ({"layout": "tiled"}, "tiled.*wrap, flat, reference"),
    ({"bits": 9}, "bits.*9"),
    ({"generator": {"generator_bits": 1}}, "generator_bits"),
    ({"seeds": [-1]}, "seeds"),
    ({"base": {"optimizer": "lbfgs"}}, "lbfgs.*sgd, adam"),
    ({"base": {"schedule": "linear"}}, "linear.*none, cosine"),
    ({"base": {"epochs": 0}}, "base.epochs"),
    ({"base": {"epoch": 3}}, "epoch.*epochs"),
    ({"generator": {"access": "remote"}}, "remote.*in_process, pool"),
    ({"evaluation": {"chips": 0}}, "evaluation.chips"),
    ({"resources": {"gpus": -1}}, "resources.gpus"),
    ({"resources": {"gpus": 1.5}}, "whole numbers"),
    ({"storage": "gs://bucket/x"}, "gs://.*s3://"),
    ({"ensembles": [["resnet18"]]}, "at least two"),
    ({"ensembles": [["resnet18", "vgg19"]]}, "vgg19.*not in models"),
    ({"name": "a/b"}, "name"),
    ({"device": "tpu"}, "tpu.*auto, cpu, cuda"),
    ({"transfer": "yes"}, "transfer"),
    ({"colour": "red"}, "colour.*valid fields"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[str(list(c)[0]) + str(i) for i, (c, _) in enumerate(BAD)])
def test_each_invalid_field_is_rejected(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**GOOD, **change})


def test_plan_counts_are_the_grid_product() -> None:
    cfg = parse_config(GOOD)
    items = plan(cfg)
    sources = 2 + 1  # two models and one ensemble
    assert len(items["base"]) == 2
    assert len(items["generator"]) == sources * 2 * 2 * 2 * 1
    assert len(items["eval"]) == len(items["generator"])
    assert len(items["transfer"]) == 2 * 2 * 2 * 2  # the ensemble has no other model to transfer to
    assert len({i.id for s in items.values() for i in s}) == sum(map(len, items.values()))
    assert items == plan(parse_config(GOOD))  # stable ids


def test_bad_config_fails_before_ray_starts(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "train_bers": [0.01, 7], "storage": str(tmp_path / "store")}))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "sweep", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "train_bers" in proc.stderr and "Traceback" not in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # never got as far as starting Ray
    assert not (tmp_path / "store").exists()  # nothing written


def test_plan_command_runs_nothing(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "storage": str(tmp_path / "store")}))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "sweep", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"generator\s+24\n", proc.stdout) and "total" in proc.stdout
    assert not (tmp_path / "store").exists()


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    (tmp_path / "x.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(tmp_path / "x.yaml"))


def test_generators_are_8_bit_by_default_and_recorded() -> None:
    from orchestration.sweep.resume import item_params

    for raw, want in ((GOOD, 8), ({**GOOD, "generator": {"generator_bits": None}}, None)):
        cfg = parse_config(raw)
        assert cfg.generator.generator_bits == want
        items = plan(cfg)
        for stage in ("generator", "eval", "transfer"):  # MLflow params of every trial that runs a generator
            assert items[stage] and all(item_params(cfg, it)["generator_bits"] == want for it in items[stage])
        assert all((".b8g8." in it.id) == (want == 8) for it in items["generator"])


def test_implausible_bers_warn_once_in_plan_and_run(tmp_path) -> None:
    """A BER ≥ 0.5 is valid but almost surely a percentage (`train_bers: [1]` = 100 %): one `nf: warning:` line
    per value, naming the field, in `nf sweep plan` and `nf sweep run`; the command goes on."""
    raw = {**GOOD, "train_bers": [1, 0.01], "evaluation": {"bers": [0.01, 0.5]}, "storage": str(tmp_path / "store")}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    expected = [
        "nf: warning: train_bers[0]: 1 is a BER of 100 % (half or more of the memory cells faulty); "
        "a BER is a fraction: did you mean 0.01 (1 %)?",
        "nf: warning: evaluation.bers[1]: 0.5 is a BER of 50 % (half or more of the memory cells faulty); "
        "a BER is a fraction: did you mean 0.005 (0.5 %)?",
    ]
    plan_proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "sweep", "plan", str(path)], capture_output=True, text=True
    )
    assert plan_proc.returncode == 0, plan_proc.stderr
    assert [ln for ln in plan_proc.stderr.splitlines() if "warning" in ln] == expected
    assert "total" in plan_proc.stdout  # a warning, not an error: the plan is printed
    # run: warned once, then it goes on (here to a missing dataset root, which stops it before Ray starts)
    path.write_text(yaml.safe_dump({**raw, "datasets": [{"name": "cifar10", "root": str(tmp_path / "none")}]}))
    run_proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "sweep", "run", str(path)], capture_output=True, text=True
    )
    warned = [ln for ln in run_proc.stderr.splitlines() if "warning" in ln]
    assert warned == expected and run_proc.returncode == 2 and "nf: error:" in run_proc.stderr
    ranged = {**GOOD, "generators": ["ConvS", "ConvS_BER"], "train_bers": [0.49, {"range": [0.001, 0.6]}]}
    path.write_text(yaml.safe_dump(ranged))
    from orchestration.spec.config import implausible_bers

    assert [ln.split(":")[0] for ln in implausible_bers(load_config(str(path)))] == ["train_bers[1].range[1]"]

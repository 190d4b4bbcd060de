"""The sweep config schema: strict types, ranges, registry names, unique grids, one-line errors;
dataset roots (local and S3) checked before Ray starts."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nf_core import catalog, validation
from orchestration.spec.config import BaseStage, ConfigError, GeneratorStage, SweepConfig, load_config, parse_config
from orchestration.sweep.preflight import check_dataset_roots
from tests.test_data import write_cifar10, write_cifar100, write_gtsrb, write_imagenet10

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"name": "t", "models": ["resnet18", "vgg11"], "generators": ["ConvS"], "train_bers": [0.01, 0.02]}


def _error(change: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, **change})
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and "pydantic" not in message
    return message


def test_registered_names_are_read_from_the_registries_once_then_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nf_core.generators import GENERATORS
    from nf_core.models import MODELS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    catalog.catalog.cache_clear()
    try:
        assert catalog.catalog() == catalog.read_registries()  # first call: the registries themselves
    finally:
        catalog.catalog.cache_clear()
    assert (tmp_path / "nf" / f"registries-{catalog.fingerprint()}.json").is_file()
    code = "import sys\nfrom nf_core import catalog\nprint(list(catalog.names('models')), 'torch' in sys.modules)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert out.stdout.split("] ")[1].strip() == "False", out.stderr  # a later process: the cache, no torch
    assert out.stdout.startswith(str(MODELS.names()))
    assert catalog.descriptions("generators")["ConvL"] == GENERATORS.get("ConvL").__doc__.strip().splitlines()[0]
    assert all(catalog.is_ber_conditioned(g) == g.endswith("_BER") for g in GENERATORS.names())


def test_stage_defaults_are_nf_core_training_defaults() -> None:
    from nf_core.train import BaseTrainConfig, GeneratorTrainConfig

    for section, tc in ((BaseStage(), BaseTrainConfig), (GeneratorStage(), GeneratorTrainConfig)):
        defaults = {f.name: f.default for f in dataclasses.fields(tc) if f.default is not dataclasses.MISSING}
        if "training" in defaults:  # a grid in the config (one base item per mode), one mode in nf_core
            defaults["training"] = [defaults["training"]]
        # "auto" (on with CUDA) is what nf_core spells None (GeneratorTrainConfig.prefetch)
        shared = {k: None if v == "auto" else v for k, v in section.model_dump().items() if k in defaults}
        assert len(shared) >= 7
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items() if k in shared} == shared


def test_config_module_imports_no_torch() -> None:
    code = "import sys, orchestration.spec.config, orchestration.sweep.preflight; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert out.stdout.strip() == "False", out.stderr


# Each bad value of the issue: the message names the path, the value and what is valid.
BAD = [
    ({"base": {"lr": "fast"}}, r"^base\.lr: 'fast' is not a number; expected a number > 0"),
    ({"generator": {"lr": -1}}, r"^generator\.lr: -1 is out of range; expected a number > 0"),
    ({"generator": {"betas": 5}}, r"^generator\.betas: 5 is not a list of two numbers; expected .*\[0\.5, 0\.999\]"),
    (
        {"generator": {"betas": [0.5, 1.0]}},
        r"^generator\.betas\[1\]: 1\.0 is out of range; expected a number in \[0, 1\)",
    ),
    ({"train_bers": [True]}, r"^train_bers\[0\]: true is not a number; expected a number in \[0, 1\]"),
    ({"evaluation": {"bers": [True]}}, r"^evaluation\.bers\[0\]: true is not a number"),
    ({"lambdas": [True]}, r"^lambdas\[0\]: true is not a number; expected a number >= 0"),
    ({"ns": [True]}, r"^ns\[0\]: true is not an integer; expected an integer >= 1"),
    ({"ns": [2.5]}, r"^ns\[0\]: 2\.5 is not an integer"),
    ({"width": True}, r"^width: true is not a number; expected a number > 0"),
    ({"width": float("nan")}, r"^width: nan is not a finite number"),
    ({"resources": {"cpus": 0}}, r"^resources\.cpus: 0 is out of range; expected a number > 0"),
    ({"resources": {"pool_actor_gpus": 2.5}}, r"^resources\.pool_actor_gpus: 2\.5 is not possible.*whole numbers"),
    (
        {"datasets": [{"name": "cifar10", "root": "/d", "download": "maybe"}]},
        r"^datasets\[0\]\.download: 'maybe' is not a boolean; expected true or false",
    ),
    ({"transfer": 1}, r"^transfer: 1 is not a boolean"),
    (
        {"mlflow": {"tracking_uri": 12}},
        r"^mlflow\.tracking_uri: 12 is not a non-empty string; expected an MLflow tracking URI",
    ),
    (
        {"evaluation": {"bers": 0.01}},
        r"^evaluation\.bers: 0\.01 is not a list; expected a list such as \[0\.01, 0\.005\]",
    ),
    ({"evaluation": 0.01}, r"^evaluation: 0\.01 is not a mapping; expected a mapping with fields bers, chips"),
    ({"models": "resnet18"}, r"^models: 'resnet18' is not a list"),
    ({"models": []}, r"^models: \[\] is too short; expected a list of at least one entry"),
    (
        {"models": ["resnet34"]},
        (
            r"^models\[0\]: 'resnet34' is not a valid model \(did you mean 'resnet(18|50)'\?\); "
            r"valid choices: resnet18, resnet50, vgg11, vgg16, vgg19, vit, preact_resnet18$"
        ),
    ),
    ({"generators": [True]}, r"^generators\[0\]: true is not a valid generator; valid choices: ConvL, ConvS"),
    ({"datasets": ["mnist"]}, r"^datasets\[0\]\.name: 'mnist' is not a valid dataset; valid choices: cifar10"),
    (
        {"fault_model": "stuck-at"},
        (
            r"^fault_model: 'stuck-at' is not a valid fault model \(did you mean 'stuck_at'\?\); "
            r"valid choices: stuck_at, flip$"
        ),
    ),
    ({"evaluation": {"layout": 3}}, r"^evaluation\.layout: 3 is not a valid memory layout; valid choices: wrap, flat"),
    ({"base": {"optimizer": "adamw"}}, r"^base\.optimizer: 'adamw' is not a valid optimizer.*valid choices: sgd, adam"),
    ({"generator": {"batching": "vmapp"}}, r"^generator\.batching: 'vmapp' .*did you mean 'vmap'.*vmap, loop"),
    ({"bits": 16}, r"^bits: 16 is out of range; expected an integer in \[2, 8\]"),
    ({"evaluation": {"bits": [8, 1]}}, r"^evaluation\.bits\[1\]: 1 is out of range"),
    ({"sources": [["resnet18", "vgg13"]]}, r"^sources\[0\]: 'vgg13' is not a valid model .*valid choices: resnet18"),
    ({"sources": ["vgg16"]}, r"^sources\[0\]: model 'vgg16' is not in models; valid choices: resnet18, vgg11$"),
    ({"datasets": [{"name": "gtsrb"}]}, r"^datasets\[0\]\.root: null is not possible: dataset 'gtsrb' needs a root"),
    (
        {"datasets": [{"name": "imagenet10", "root": "/d", "download": True}]},
        r"^datasets\[0\]\.download: true is not possible: imagenet10 cannot be downloaded",
    ),
    ({"name": "a b"}, r"^name: 'a b' is not valid; expected a sweep name"),
    ({"storage": 5}, r"^storage: 5 is not a non-empty string"),
    ({"resources": {"max_failures": -1}}, r"^resources\.max_failures: -1 is out of range; expected an integer >= 0"),
]


@pytest.mark.parametrize("change,pattern", BAD, ids=[f"{i}-{next(iter(c))}" for i, (c, _) in enumerate(BAD)])
def test_bad_value_is_one_line_naming_path_value_and_choices(change: dict, pattern: str) -> None:
    message = _error(change)
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    "change,pattern",
    [
        (
            {"genrator": {"lr": 0.1}},
            r"^genrator: unknown field 'genrator' \(did you mean 'generator'\?\); valid fields: name,",
        ),
        (
            {"base": {"learning_rate": 0.1}},
            r"^base\.learning_rate: unknown field 'learning_rate'.*valid fields: epochs,",
        ),
        ({"evaluation": {"ber": [0.1]}}, r"^evaluation\.ber: unknown field 'ber' \(did you mean 'bers'\?\)"),
        ({"resources": {"cpu": 2}}, r"^resources\.cpu: unknown field 'cpu' \(did you mean 'cpus'\?\)"),
        # the unknown field is reported before the "missing name" it causes
        ({"datasets": [{"nam": "digits"}]}, r"^datasets\[0\]\.nam: unknown field 'nam' \(did you mean 'name'\?\)"),
        ({"mlflow": {"tracking-uri": "x"}}, r"^mlflow\.tracking-uri: .*did you mean 'tracking_uri'"),
    ],
)
def test_misspelled_field_names_the_closest_valid_one(change: dict, pattern: str) -> None:
    message = _error(change)
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"train_bers": [0.03, 0.03]}, r"^train_bers: 0\.03 appears more than once in \[0\.03, 0\.03\]"),
        ({"lambdas": [5, 5.0]}, r"^lambdas: 5\.0 appears more than once"),  # the same number, so the same trials
        ({"ns": [2, 3, 2]}, r"^ns: 2 appears more than once"),
        ({"seeds": [0, 0]}, r"^seeds: 0 appears more than once"),
        ({"models": ["vgg11", "vgg11"]}, r"^models: 'vgg11' appears more than once"),
        ({"generators": ["ConvS", "ConvS"]}, r"^generators: 'ConvS' appears"),
        ({"evaluation": {"bers": [0.01, 0.01]}}, r"^evaluation\.bers: 0\.01 appears"),
        ({"evaluation": {"bits": [4, 4]}}, r"^evaluation\.bits: 4 appears"),
        ({"ensembles": [["resnet18", "vgg11"], ["resnet18", "vgg11"]]}, r"^ensembles: \['resnet18', 'vgg11'\] appears"),
        ({"datasets": ["digits", {"name": "digits"}]}, r"^datasets\[1\]\.name: 'digits' appears more than once"),
    ],
)
def test_duplicate_grid_values_are_rejected(change: dict, pattern: str) -> None:
    message = _error(change)
    assert re.search(pattern, message), message


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    assert re.search(r"^width: .*\(and 2 more problems\)$", _error({"width": 0, "bits": 1, "ns": [0]}))


def test_good_values_and_normal_forms() -> None:
    cfg = parse_config({**GOOD, "lambdas": [5], "datasets": ["digits"], "base": None, "resources": {"cpus": 2}})
    assert cfg.lambdas == [5.0] and isinstance(cfg.lambdas[0], float)  # 5 and 5.0: one config
    assert cfg.resources.cpus == 2.0 and cfg.datasets[0].name == "digits" and cfg.base == BaseStage()
    assert cfg.generator.lr == 1e-3 and cfg.generator.betas == [0.5, 0.999]
    assert cfg.source_list() == [["resnet18"], ["vgg11"]]
    assert isinstance(cfg, SweepConfig) and vars(cfg.evaluation)["chips"] == 10  # runner flattens sections so
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["name", "t"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "sweeps").glob("*.yaml")) + [ROOT / "orchestration" / "demo.yaml"], ids=lambda p: p.name
)
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    cfg = load_config(str(path))
    # sweep.yaml holds to_dict(); a resume parses it again and must find the same config
    stored = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert parse_config(stored).to_dict() == cfg.to_dict()


def test_json_schema_documents_every_field() -> None:
    schema = SweepConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    undocumented = [
        f"{model}.{k}"
        for model, m in [("sweep", schema), *schema["$defs"].items()]
        for k, v in m.get("properties", {}).items()
        if not v.get("description")
    ]
    assert not undocumented
    assert schema["properties"]["fault_model"]["enum"] == list(validation.FAULT_MODELS)


# ------------------------------------------------------------------ dataset roots (preflight)
def _cfg(name: str, root: str, **extra) -> SweepConfig:
    return parse_config({"name": "t", "datasets": [{"name": name, "root": root, **extra}]})


@pytest.mark.parametrize(
    "name,write",
    [
        ("cifar10", write_cifar10),
        ("cifar100", write_cifar100),
        ("gtsrb", write_gtsrb),
        ("imagenet10", write_imagenet10),
    ],
)
def test_dataset_root_with_the_loaders_files_passes(tmp_path: Path, name: str, write) -> None:
    write(tmp_path)  # the on-disk formats tests/test_data.py loads with nf_core.data
    check_dataset_roots(_cfg(name, str(tmp_path)))
    nope = re.escape(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=rf"^datasets\[0\]\.root: '{nope}': does not exist"):
        check_dataset_roots(_cfg(name, str(tmp_path / "nope")))


def test_dataset_root_missing_files_are_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"lacks cifar-10-batches-py/data_batch_3; expected cifar-10-batches-py/"):
        check_dataset_roots(_cfg("cifar10", str(tmp_path)))
    write_gtsrb(tmp_path / "g", n_classes=40)
    with pytest.raises(ConfigError, match="has 40 class folders; expected 43"):
        check_dataset_roots(_cfg("gtsrb", str(tmp_path / "g")))
    write_imagenet10(tmp_path / "i")
    (tmp_path / "i" / "val" / "n00000003" / "val_3.JPEG").unlink()
    (tmp_path / "i" / "val" / "n00000003").rmdir()
    with pytest.raises(ConfigError, match=r"class folders of train/ \(10\) and val/ \(9\)"):
        check_dataset_roots(_cfg("imagenet10", str(tmp_path / "i")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_dataset_roots(_cfg("cifar100", str(tmp_path / "file")))
    check_dataset_roots(_cfg("cifar10", str(tmp_path / "later"), download=True))  # torchvision fetches it there
    check_dataset_roots(parse_config({"name": "t"}))  # digits: nothing to check


def _nf(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`nf …` in this process (the same entry point as the command, without a second torch import)."""
    from orchestration.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ray_starts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The sweep driver's Ray start-ups (`_init_ray` calls): the session may already share a local Ray
    (tests/sweep_support.ensure_ray), so "Ray is up" alone cannot tell whether the command started it."""
    from orchestration.sweep import runner

    calls: list[object] = []
    real = runner._init_ray

    def spy(*a: object, **k: object) -> None:
        calls.append(a)
        real(*a, **k)

    monkeypatch.setattr(runner, "_init_ray", spy)
    return calls


def test_missing_local_root_stops_plan_and_run_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture, ray_starts: list[object]
) -> None:
    path = tmp_path / "s.yaml"
    missing = tmp_path / "data" / "cifar10"
    path.write_text(
        yaml.safe_dump(
            {**GOOD, "storage": str(tmp_path / "store"), "datasets": [{"name": "cifar10", "root": str(missing)}]}
        )
    )
    for command in ("plan", "run"):
        code, out, err = _nf(capsys, "sweep", command, str(path))
        assert code == 2, out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"nf: error: datasets[0].root: '{missing}': does not exist")
        assert not ray_starts and not (tmp_path / "store").exists()
    code, out, err = _nf(capsys, "sweep", "plan", str(path), "--no-data-check")  # capacity planning without the data
    assert code == 0 and "total" in out, err


def test_s3_dataset_root_checked_on_a_real_s3_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, s3_server, ray_starts: list[object]
) -> None:
    import boto3

    endpoint = s3_server  # the session's moto server (tests/conftest.py)
    env = {"AWS_ACCESS_KEY_ID": "nf-test", "AWS_SECRET_ACCESS_KEY": "nf-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="data")
    write_cifar10(tmp_path / "c10")
    for f in (tmp_path / "c10").rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), "data", f"sets/cifar10/{f.relative_to(tmp_path / 'c10')}")

    def cfg(root: str) -> SweepConfig:
        return parse_config({"name": "t", "s3_endpoint": endpoint, "datasets": [{"name": "cifar10", "root": root}]})

    check_dataset_roots(cfg("s3://data/sets/cifar10"))
    with pytest.raises(ConfigError, match=r"^datasets\[0\]\.root: 's3://data/sets/cifar100': no object under this"):
        check_dataset_roots(cfg("s3://data/sets/cifar100"))
    s3.delete_object(Bucket="data", Key="sets/cifar10/cifar-10-batches-py/test_batch")
    with pytest.raises(ConfigError, match="lacks cifar-10-batches-py/test_batch"):
        check_dataset_roots(cfg("s3://data/sets/cifar10"))
    with pytest.raises(ConfigError, match=r"^datasets\[0\]\.root: .*s3://nobucket/x"):
        check_dataset_roots(cfg("s3://nobucket/x"))

    path = tmp_path / "s3.yaml"
    s3.create_bucket(Bucket="sweeps")
    path.write_text(
        yaml.safe_dump(
            {
                **GOOD,
                "storage": "s3://sweeps/team",
                "s3_endpoint": endpoint,
                "datasets": [{"name": "cifar10", "root": "s3://data/sets/missing"}],
            }
        )
    )
    code, _, err = _nf(capsys, "sweep", "run", str(path))
    assert code == 2 and err.startswith("nf: error: datasets[0].root: 's3://data/sets/missing': no object"), err
    assert not ray_starts
    assert s3.list_objects_v2(Bucket="sweeps").get("KeyCount") == 0  # nothing written

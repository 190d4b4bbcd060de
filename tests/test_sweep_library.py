"""sweeps/: the paper's programme as ready configs. Each passes the project's validation,
plans exactly the grid its YAML spells out (counted here independently of plan()), keeps the
paper's hyperparameters (METHOD.md), and together they cover the experiments of PAPER.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.config import load_config
from orchestration.plan import plan

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
PAPER = [p for p in SWEEPS if p.stem != "smoke"]
ALL_MODELS = ["resnet18", "resnet50", "vgg11", "vgg16", "vgg19"]
ALL_GENERATORS = ["ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS"]


def raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def by_name(name: str) -> dict[str, Any]:
    return raw(ROOT / "sweeps" / f"{name}.yaml")


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_passes_validation(path: Path) -> None:
    cfg = load_config(str(path))
    assert cfg.name == path.stem  # `nf sweep status NAME` finds the sweep by its file's name


def expected_trials(r: dict[str, Any]) -> dict[str, int]:
    """The grid's product, from the YAML alone: datasets x seeds x sources x generators x BERs x lambdas x Ns."""
    d, s = len(r["datasets"]), len(r.get("seeds", [0]))
    models = r["models"]
    if "sources" in r:  # the proposed field: a model name or a list of models (an ensemble)
        sources = [[x] if isinstance(x, str) else x for x in r["sources"]]
    else:
        sources = [[m] for m in models] + r.get("ensembles", [])
    per_source = (len(r["generators"]) * len(r.get("train_bers", [0.01])) * len(r.get("lambdas", [5.0]))
                  * len(r.get("ns", [5])))
    transferable = sum(1 for src in sources if set(models) - set(src))
    return {"base": d * s * len(models), "generator": d * s * len(sources) * per_source,
            "eval": d * s * len(sources) * per_source,
            "transfer": d * s * transferable * per_source if r.get("transfer", True) else 0}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_plan_counts_equal_the_grid_product(path: Path) -> None:
    counts = {stage: len(items) for stage, items in plan(load_config(str(path))).items()}
    assert counts == expected_trials(raw(path))


def test_paper_programme_sizes() -> None:
    # The numbers a reader can check by hand against PAPER.md's programme.
    sizes = {p.stem: {k: len(v) for k, v in plan(load_config(str(p))).items()} for p in PAPER}
    assert sizes["relaxed_cifar10"]["generator"] == 5 * 6 * 2
    assert sizes["relaxed_gtsrb"]["generator"] == 5 * 6 * 2
    assert sizes["relaxed_imagenet10"]["generator"] == 5 * 6 * 1
    assert sizes["relaxed_cifar100"]["generator"] == 5 * 6 * 3
    assert sizes["restricted_transfer"]["transfer"] == 3 * 5 * 2 * 3  # datasets x sources x generators x BERs
    assert sizes["ensemble"]["generator"] == (5 + 1) * 2  # five single sources and the ensemble
    assert sizes["ablation_lambda"]["generator"] == 5
    assert sum(sizes[f"ablation_precision_b{b}"]["generator"] for b in range(2, 9)) == 7 * 2 * 2 * 2


# ---------------------------------------------------------------- the paper's hyperparameters
@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_hyperparameters(path: Path) -> None:
    r = raw(path)
    g, b = r["generator"], r["base"]
    # EOPM generator training (METHOD.md): Adam(1e-3, betas (0.5, 0.999)), StepLR each iteration (500, 0.96), 150 epochs.
    assert (g["epochs"], g["lr"], g["betas"], g["step_size"], g["gamma"]) == (150, 1e-3, [0.5, 0.999], 500, 0.96)
    # Base models as the reference trained them: QAT, SGD lr 1e-3 momentum 0.9, 300 epochs, no decay, no schedule.
    assert (b["epochs"], b["optimizer"], b["lr"], b["momentum"], b["weight_decay"], b["schedule"]) == \
        (300, "sgd", 1e-3, 0.9, 0.0, "none")
    big = any(d["name"] == "imagenet10" for d in r["datasets"])
    assert g["batch_size"] == b["batch_size"] == (64 if big else 256)  # 256 for 32x32 data
    if path.stem != "ablation_lambda":
        assert r["lambdas"] == [5.0]
    if path.stem != "ablation_n":
        assert r["ns"] == [5]
    assert r["fault_model"] == "stuck_at"  # the paper's numbers come from stuck-at cells
    assert r["layout"] == "wrap" and r["seeds"] == [0]
    assert r["bits"] == (int(path.stem[-1]) if path.stem.startswith("ablation_precision") else 8)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_cluster_ready_storage_and_tracking(path: Path) -> None:
    r = raw(path)
    assert r["storage"] == "s3://YOUR-BUCKET/neuralfuse"
    for d in r["datasets"]:
        if d["name"] != "digits":
            assert d["root"] == f"s3://YOUR-BUCKET/datasets/{d['name']}"
    assert r["mlflow"]["tracking_uri"] == "http://127.0.0.1:5000"  # the head's server (clusters/*.yaml)
    assert r["resources"]["max_failures"] >= 2  # spot reclaims count as failures


# ---------------------------------------------------------------- the programme is covered
def test_relaxed_access_programme() -> None:
    want = {"relaxed_cifar10": ("cifar10", [0.01, 0.005]), "relaxed_gtsrb": ("gtsrb", [0.01, 0.005]),
            "relaxed_imagenet10": ("imagenet10", [0.005]), "relaxed_cifar100": ("cifar100", [0.01, 0.005, 0.0035])}
    for name, (dataset, bers) in want.items():
        r = by_name(name)
        assert [d["name"] for d in r["datasets"]] == [dataset]
        assert (r["models"], r["generators"]) == (ALL_MODELS, ALL_GENERATORS)
        assert r["train_bers"] == bers and r["evaluation"]["bers"] == bers
        assert r["transfer"] is False


def test_restricted_access_programme() -> None:
    r = by_name("restricted_transfer")
    assert {d["name"] for d in r["datasets"]} == {"cifar10", "gtsrb", "cifar100"}
    assert r["models"] == ALL_MODELS and r["transfer"] is True  # every target has its base model
    assert {"resnet18", "vgg19"} <= set(r.get("sources", r["models"]))
    assert r["generators"] == ["ConvL", "UNetL"]
    assert r["train_bers"] == r["evaluation"]["bers"] == [0.015, 0.01, 0.005]


def test_ensemble_programme() -> None:
    r = by_name("ensemble")
    assert ["resnet18", "vgg19"] in r["ensembles"] and r["models"] == ALL_MODELS and r["transfer"] is True
    assert r["train_bers"] == [0.015] and r["evaluation"]["bers"] == [0.015, 0.01, 0.005]


def test_ablations() -> None:
    assert by_name("ablation_lambda")["lambdas"] == [0.01, 0.1, 1.0, 5.0, 10.0]
    n = by_name("ablation_n")
    assert 5 in n["ns"] and 10 in n["ns"] and min(n["ns"]) == 1 and n["generators"] == ["ConvL", "ConvS"]
    assert by_name("ablation_uip")["generators"] == ["UIP"]


def test_precision_ablation_is_one_sweep_per_bit_width() -> None:
    # `bits` is one value per sweep: b2..b8 must differ in their name and bits alone.
    def strip(text: str, b: int) -> str:
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        return body.replace(f"ablation_precision_b{b}", "NAME").replace(f"bits: {b}\n", "bits: B\n")

    texts = {b: (ROOT / "sweeps" / f"ablation_precision_b{b}.yaml").read_text() for b in range(2, 9)}
    assert len({strip(t, b) for b, t in texts.items()}) == 1
    assert [load_config(str(ROOT / "sweeps" / f"ablation_precision_b{b}.yaml")).bits for b in range(2, 9)] == \
        list(range(2, 9))
    assert 0.0 in by_name("ablation_precision_b4")["evaluation"]["bers"]  # bit-error-free low precision too


def test_smoke_sweep_is_cpu_sized() -> None:
    cfg = load_config(str(ROOT / "sweeps" / "smoke.yaml"))
    counts = {k: len(v) for k, v in plan(cfg).items()}
    assert all(counts.values()), counts  # every stage, transfer included, runs
    assert cfg.resources.gpus == 0 and [d.name for d in cfg.datasets] == ["digits"]
    assert cfg.base.epochs * cfg.generator.epochs <= 4 and cfg.width <= 0.25
    assert cfg.resources.cpus == 1  # one CPU per trial: lands on any worker

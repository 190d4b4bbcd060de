"""sweeps/: the paper's programme as ready configs. Each passes the project's validation,
plans exactly the grid its YAML spells out (counted here independently of plan()), keeps the
paper's hyperparameters (docs/method.md), and together they cover the paper's experiments; one of them
(sweeps/ber_conditioned.yaml) runs small, end to end, on a local Ray.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.spec.config import load_config, parse_config
from orchestration.spec.plan import plan

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
# protection_baselines: beyond the paper (Stutz et al.'s base-training recipe for both base modes)
PAPER = [p for p in SWEEPS if p.stem not in ("smoke", "protection_baselines")]
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
    """The grid's product, from the YAML alone: datasets x seeds x sources x generators x BERs x lambdas x Ns.
    Base models: every model (sources' and transfer targets'); transfer: sources with a model outside them.
    A BER range ({range: ...}) trains only *_BER generators, and a single BER only the others."""
    # each base-training mode (base.training) repeats the grid with its own base items
    d, s = len(r["datasets"]), len(r.get("seeds", [0])) * len((r.get("base") or {}).get("training", ["standard"]))
    models = r["models"]
    if r.get("sources") is not None:  # each a model name, or a list of models (an ensemble)
        sources = [[x] if isinstance(x, str) else x for x in r["sources"]]
    else:  # absent: every model, and every ensemble
        sources = [[m] for m in models] + r.get("ensembles", [])
    pairs = sum(g.endswith("_BER") == isinstance(b, dict) for g in r["generators"] for b in r.get("train_bers", [0.01]))
    per_source = pairs * len(r.get("lambdas", [5.0])) * len(r.get("ns", [5]))
    gen = r.get("generator") or {}
    if gen.get("chips", "random") != "random":  # adversarially trained: one generator per flipped-bit budget
        budget = (gen.get("adversarial") or {}).get("budget", [100])
        per_source *= len(budget) if isinstance(budget, list) else 1
    transferable = sum(1 for src in sources if set(models) - set(src))
    return {
        "base": d * s * len(models),
        "generator": d * s * len(sources) * per_source,
        "eval": d * s * len(sources) * per_source,
        "transfer": d * s * transferable * per_source if r.get("transfer", True) else 0,
    }


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_plan_counts_equal_the_grid_product(path: Path) -> None:
    counts = {stage: len(items) for stage, items in plan(load_config(str(path))).items()}
    assert counts == expected_trials(raw(path))


def test_paper_programme_sizes() -> None:
    # The numbers a reader can check by hand against the paper's programme.
    sizes = {p.stem: {k: len(v) for k, v in plan(load_config(str(p))).items()} for p in PAPER}
    assert sizes["relaxed_cifar10"]["generator"] == 5 * 6 * 2
    assert sizes["relaxed_gtsrb"]["generator"] == 5 * 6 * 2
    assert sizes["relaxed_imagenet10"]["generator"] == 5 * 6 * 1
    assert sizes["relaxed_cifar100"]["generator"] == 5 * 6 * 3
    # datasets x sources (resnet18, vgg19) x generators x BERs; base models: datasets x all five models
    assert sizes["restricted_transfer"] == {
        "base": 3 * 5,
        "generator": 3 * 2 * 2 * 3,
        "eval": 3 * 2 * 2 * 3,
        "transfer": 3 * 2 * 2 * 3,
    }
    assert sizes["ensemble"]["generator"] == (2 + 1) * 2  # resnet18, vgg19 and their ensemble x 2 generators
    assert sizes["ablation_lambda"]["generator"] == 5
    # Precision: generators trained once (8 bits), no longer once per bit width.
    assert sizes["ablation_precision"]["generator"] == 2 * 2 * 2  # datasets x models x generators
    assert sizes["ablation_precision_imagenet10"]["generator"] == 2 * 2
    # One BER-conditioned ConvS_BER per source next to three per-BER ConvS, all evaluated at three BERs.
    assert sizes["ber_conditioned"]["generator"] == 2 * (3 + 1)


# ---------------------------------------------------------------- the paper's hyperparameters
@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_hyperparameters(path: Path) -> None:
    r = raw(path)
    g, b = r["generator"], r["base"]
    # EOPM training (docs/method.md): Adam(1e-3, betas (0.5, 0.999)), StepLR per iteration (500, 0.96), 150 epochs.
    assert (g["epochs"], g["lr"], g["betas"], g["step_size"], g["gamma"]) == (150, 1e-3, [0.5, 0.999], 500, 0.96)
    if b.get("training") == ["awp"]:  # App. J: Wu et al.'s AT-AWP recipe (SGD 0.1, momentum 0.9, 5e-4, cosine, 200)
        recipe = (b["epochs"], b["optimizer"], b["lr"], b["momentum"], b["weight_decay"], b["schedule"])
        assert recipe == (200, "sgd", 0.1, 0.9, 5e-4, "cosine")
        assert r["models"] == ["preact_resnet18"] and b["batch_size"] == 128
    else:  # base models as the reference trained them: QAT, SGD lr 1e-3 momentum 0.9, 300 epochs, no decay
        assert (b["epochs"], b["optimizer"], b["lr"], b["momentum"], b["weight_decay"], b["schedule"]) == (
            300,
            "sgd",
            1e-3,
            0.9,
            0.0,
            "none",
        )
        big = any(d["name"] == "imagenet10" for d in r["datasets"])
        assert g["batch_size"] == b["batch_size"] == (64 if big else 256)  # 256 for 32x32 data
    if path.stem != "ablation_lambda":
        assert r["lambdas"] == [5.0]
    if path.stem != "ablation_n":
        assert r["ns"] == [5]
    assert r["fault_model"] == "stuck_at"  # the paper's numbers come from stuck-at cells
    assert r["layout"] == "wrap" and r["seeds"] == [0]
    assert r["bits"] == 8  # the paper's 8-bit weights; lower precisions are evaluation.bits
    eval_bits = r["evaluation"].get("bits")
    assert eval_bits is None or r["bits"] in eval_bits  # the trained precision is a row too


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
    want = {
        "relaxed_cifar10": ("cifar10", [0.01, 0.005]),
        "relaxed_gtsrb": ("gtsrb", [0.01, 0.005]),
        "relaxed_imagenet10": ("imagenet10", [0.005]),
        "relaxed_cifar100": ("cifar100", [0.01, 0.005, 0.0035]),
    }
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
    assert r["sources"] == ["resnet18", "vgg19"]  # the paper's white-box surrogates, and only they
    assert r["generators"] == ["ConvL", "UNetL"]
    assert r["train_bers"] == r["evaluation"]["bers"] == [0.015, 0.01, 0.005]
    # Each surrogate's generators transfer to the four other models of its dataset.
    items = plan(load_config(str(ROOT / "sweeps" / "restricted_transfer.yaml")))
    for it in items["transfer"]:
        assert it.params["targets"] == [m for m in ALL_MODELS if m not in it.params["source"]]
    assert {tuple(it.params["source"]) for it in items["generator"]} == {("resnet18",), ("vgg19",)}


def test_ensemble_programme() -> None:
    r = by_name("ensemble")
    # Table 21: the ResNet18+VGG19 ensemble, next to Table 1's single surrogates on the same base models.
    assert r["sources"] == ["resnet18", "vgg19", ["resnet18", "vgg19"]]
    assert r["models"] == ALL_MODELS and r["transfer"] is True
    assert r["train_bers"] == [0.015] and r["evaluation"]["bers"] == [0.015, 0.01, 0.005]
    # Table 1's setting: restricted_transfer's CIFAR-10, 1.5% slice, same generators and evaluation.
    t1 = by_name("restricted_transfer")
    assert [d["name"] for d in r["datasets"]] == ["cifar10"] and 0.015 in t1["train_bers"]
    assert r["generators"] == t1["generators"] and r["evaluation"] == t1["evaluation"]
    items = plan(load_config(str(ROOT / "sweeps" / "ensemble.yaml")))
    ens = [it for it in items["transfer"] if it.params["source"] == ["resnet18", "vgg19"]]
    assert len(ens) == 2 and all(it.params["targets"] == ["resnet50", "vgg11", "vgg16"] for it in ens)


def test_ablations() -> None:
    assert by_name("ablation_lambda")["lambdas"] == [0.01, 0.1, 1.0, 5.0, 10.0]
    n = by_name("ablation_n")
    assert 5 in n["ns"] and 10 in n["ns"] and min(n["ns"]) == 1 and n["generators"] == ["ConvL", "ConvS"]
    assert by_name("ablation_uip")["generators"] == ["UIP"]


def test_precision_ablation_evaluates_8_bit_generators_at_every_precision() -> None:
    # Sec. 4.6 / App. H: generators trained at 8 bits, applied to the base model re-quantized to
    # 8..2 bits (one sweep; no per-precision training), bit-error-free and with bit errors.
    assert not list((ROOT / "sweeps").glob("ablation_precision_b*.yaml"))
    want = {
        "ablation_precision": ({"cifar10", "gtsrb"}, [0.01], 256),  # App. H.1, H.2 (Fig. 4: GTSRB)
        "ablation_precision_imagenet10": ({"imagenet10"}, [0.005], 64),
    }  # App. H.3
    for name, (datasets, train_bers, batch) in want.items():
        r = by_name(name)
        cfg = load_config(str(ROOT / "sweeps" / f"{name}.yaml"))
        assert {d.name for d in cfg.datasets} == datasets and cfg.train_bers == train_bers
        assert cfg.models == ["resnet18", "vgg19"] and cfg.generators == ["ConvL", "UNetL"]
        assert cfg.bits == 8 and cfg.generator.generator_bits == 8  # the authors trained G at 8 bits
        assert cfg.evaluation.bits == [2, 3, 4, 5, 6, 7, 8]
        bers = cfg.evaluation.bers
        assert 0.0 in bers and 0.005 in bers  # bit-error-free low precision; the appendix's 0.5% BER
        assert set(train_bers) <= set(bers)  # and the training BER
        assert cfg.transfer is False and r["base"]["batch_size"] == batch
        items = plan(cfg)
        assert all(it.params["bits"] == 8 for stage in items.values() for it in stage)
    fig4 = [
        it
        for it in plan(load_config(str(ROOT / "sweeps" / "ablation_precision.yaml")))["eval"]
        if it.params["dataset"] == "gtsrb" and it.params["targets"] == ["resnet18"]
    ]
    assert sorted(it.params["generator"] for it in fig4) == ["ConvL", "UNetL"] and fig4[0].params["ber"] == 0.01


def test_smoke_sweep_is_cpu_sized() -> None:
    cfg = load_config(str(ROOT / "sweeps" / "smoke.yaml"))
    counts = {k: len(v) for k, v in plan(cfg).items()}
    assert all(counts.values()), counts  # every stage, transfer included, runs
    assert cfg.resources.gpus == 0 and [d.name for d in cfg.datasets] == ["digits"]
    assert cfg.base.epochs * cfg.generator.epochs <= 4 and cfg.width <= 0.25
    assert cfg.resources.cpus == 1  # one CPU per trial: lands on any worker


# ------------------------------------------------------------------ a shipped config, run small
def test_ber_conditioned_sweep_runs_small(tmp_path: Path, ray_local) -> None:
    """sweeps/ber_conditioned.yaml as shipped, shrunk to digits on the CPU, through run_sweep on a local Ray."""
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
    rows = run_sweep(cfg, verbose=0, log=lambda _: None)
    bers = raw["evaluation"]["bers"]
    assert sorted((r["generator"], r["train_ber"] or 0.0, r["eval_ber"]) for r in rows) == sorted(
        [("ConvS", tb, eb) for tb in raw["train_bers"][:3] for eb in bers] + [("ConvS_BER", 0.0, eb) for eb in bers]
    )
    cond = [r for r in rows if r["generator"] == "ConvS_BER"]
    assert all(r["train_ber_range"] == {"range": [0.001, 0.0125], "log": True} for r in cond)
    assert (tmp_path / "store" / "ber_conditioned" / "results" / "results.parquet").exists()

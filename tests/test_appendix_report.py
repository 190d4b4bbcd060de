"""A stored sweep's report, appendix sections (orchestration/report/appendix.py): the paper beside ours,
latency stored by `nf profile --latency --sweep NAME`, and — with `nf report --embeddings` — the t-SNE
panels and the gallery drawn from the stored checkpoints, loaded in Chromium like the other sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan

NAME = "appx"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny random-chip sweep (ConvS and UNetS on ResNet18, digits), trained and evaluated by the trainables."""
    from orchestration.store.roots import CONFIG_FILE, sweep_store
    from orchestration.sweep.trainables import TRAINABLES

    root = tmp_path_factory.mktemp("appendix") / "sweeps"
    cfg = parse_config(
        {
            "name": NAME,
            "storage": str(root),
            "datasets": [{"name": "digits", "train_subset": 64, "test_subset": 40}],
            "models": ["resnet18"],
            "width": 0.125,
            "generators": ["ConvS", "UNetS"],
            "ns": [2],
            "base": {"epochs": 1, "batch_size": 64},
            "generator": {"epochs": 1, "batch_size": 64},
            "evaluation": {"bers": [0.01], "chips": 2},
            "transfer": False,
        }
    )
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    for stage in ("base", "generator", "eval"):
        for it in plan(cfg)[stage]:
            TRAINABLES[stage]({"item": it.to_dict()}, cfg=cfg, store=store.spec())
    return cfg, root


def test_default_report_says_how_to_get_each_appendix_section(sweep, tmp_path) -> None:
    from orchestration.report.build import report_sweep

    cfg, root = sweep
    index = report_sweep(NAME, str(root), out=str(tmp_path / "r"), track=False, log=lambda _: None)
    page = Path(index).read_text(encoding="utf-8")
    for key in ("paper", "latency", "embeddings", "transformed_inputs"):
        assert f'<section id="{key}">' in page
    assert "no result row has a configuration the paper reports" in page  # digits: nothing to match
    assert f"--latency --sweep {NAME}" in page and f"nf report {NAME} --embeddings" in page
    assert not (tmp_path / "r" / "figures" / "embeddings_tsne.png").exists()  # t-SNE only when asked


def test_latency_stored_by_profile_shows_in_the_report(sweep, tmp_path, capsys) -> None:
    from orchestration import cli

    cfg, root = sweep
    args = ["profile", "--model", "resnet18", "--dataset", "digits", "--width", "0.125", "--latency", "3"]
    assert cli.main([*args, "--sweep", NAME, "--storage", str(root)]) == 0
    assert f"shown by nf report {NAME}" in capsys.readouterr().err
    stored = root / NAME / "latency" / "digits.resnet18.w0.125.json"
    assert stored.exists()
    assert cli.main(["report", NAME, "--storage", str(root), "--out", str(tmp_path / "r")]) == 0
    t = pd.read_csv(tmp_path / "r" / "tables" / "latency.csv")
    assert len(t) == 7 and list(t["generator"].iloc[1:]) == ["ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS"]
    assert (t["median_ms"] > 0).all() and t["device"].str.startswith("cpu").all() and (t["runs"] == 3).all()
    # one generator timed later: a file of its own, the full table stays
    assert cli.main([*args, "--generator", "ConvS", "--sweep", NAME, "--storage", str(root)]) == 0
    assert stored.exists() and (stored.parent / "digits.resnet18.w0.125.ConvS.json").exists()
    capsys.readouterr()
    # the timings come from the stored file, not from the report: the same numbers again
    assert cli.main(["report", NAME, "--storage", str(root), "--out", str(tmp_path / "r2")]) == 0
    again = pd.read_csv(tmp_path / "r2" / "tables" / "latency.csv")
    assert again["median_ms"].tolist()[2:] == t["median_ms"].tolist() and len(again) == 9  # ConvS file sorts first


def test_embeddings_from_stored_checkpoints_load_in_chromium(sweep, tmp_path) -> None:
    from orchestration import cli
    from tests.test_report_browser import _image_widths

    cfg, root = sweep
    out = tmp_path / "emb"
    assert cli.main(["report", NAME, "--storage", str(root), "--out", str(out), "--embeddings"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Left out: Fig. 15" not in page
    for stem in ("embeddings_tsne", "transformed_inputs"):
        assert (out / "figures" / f"{stem}.png").exists() and (out / "figures" / f"{stem}.svg").exists()
    assert "digits, resnet18, trained at BER 0.01" in page  # which checkpoints were drawn
    widths = _image_widths(out, tmp_path)
    assert "figures/embeddings_tsne.png" in widths and "figures/transformed_inputs.png" in widths
    assert all(w > 0 for w in widths.values()), widths


def test_pick_generators_prefers_convl_convs_and_says_why_not() -> None:
    from orchestration.report.appendix import pick_generators

    cfg = parse_config({"name": "p", "models": ["vgg11", "resnet18"], "generators": ["UNetS", "ConvS", "ConvL"]})
    items = plan(cfg)["generator"]
    chosen, why = pick_generators(cfg, items)
    assert why == "" and [it.spec.generator for it in chosen] == ["ConvL", "ConvS"]
    assert {it.spec.source for it in chosen} == {("resnet18",)}  # the paper's base model when the sweep has it
    none = parse_config({"name": "p", "generators": ["UNetS"]})
    chosen, why = pick_generators(none, plan(none)["generator"])
    assert chosen == [] and why.startswith("Fig. 15 compares ConvL and ConvS; this sweep trained neither")


def test_paper_section_matches_rows_of_a_paper_configuration(sweep, tmp_path) -> None:
    from orchestration.report.appendix import appendix_sections
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import collect_rows

    cfg, _ = sweep
    store = sweep_store(cfg)
    rows = [{**r, "dataset": "cifar10"} for r in collect_rows(cfg, store)]  # ConvS on ResNet18 at 1 %: Table 12
    paper = appendix_sections(cfg, store, rows, str(tmp_path))[0]
    assert paper.key == "paper" and paper.skipped is None
    card = pd.read_csv(tmp_path / "tables" / "paper_scorecard.csv")
    matched = pd.read_csv(tmp_path / "tables" / "paper_matched.csv")
    assert 0 < card.set_index("metric").loc["total", "matched"] <= len(matched)  # a config in several tables: once
    assert "12" in set(matched["table"].astype(str))

"""Report section: the paper's numbers beside ours, and the reproduction scorecard (nf_core.paper).

``paper_section(rows, out_dir)`` → a Section with a figure (ours against the paper's, ±1 and ±2 chip std
bands), the scorecard table and the matched table (written as CSV/LaTeX/Markdown under tables/).
``latency_section(results, out_dir)`` → Table 9 as measured by `nf profile --latency`, the paper's ms beside it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from orchestration.report import tables as T
from orchestration.report.html import Section

FIG_DIR = "figures"
TAB_DIR = "tables"
_LABEL = {"CA": "CA", "PA": "PA", "CA_NF": "CA (NF)", "PA_NF": "PA (NF)", "RP": "RP", "efficiency": "efficiency"}


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _name(v: Any) -> str:
    return v if isinstance(v, str) and v else "-"


def _add_table(
    section: Section, out_dir: str, df: pd.DataFrame, head: list[str], body: list[list[str]], stem: str, caption: str
) -> None:
    paths = T.write_table(df, os.path.join(out_dir, TAB_DIR), stem, caption)
    section.tables.append((head, body, {k: os.path.relpath(p, out_dir) for k, p in paths.items()}))


def matched_display(matched: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the matched table for people: paper mean ± std, ours, Δ, Δ in std units."""
    head = [
        "table",
        "dataset",
        "source → model",
        "generator",
        "training BER",
        "evaluation BER",
        "λ",
        "bits",
        "metric",
        "paper",
        "ours",
        "runs",
        "Δ",
        "Δ / std",
        "std from",
        "fault model",
    ]
    body = []
    for _, r in matched.iterrows():
        src = r["source"] if r["source"] == r["model"] else f"{r['source']} → {r['model']}"
        paper = _fmt(r["paper_mean"], ".1f") + ("" if math.isnan(r["paper_std"]) else f" ± {r['paper_std']:.1f}")
        ours = _fmt(r["ours"]) + ("" if math.isnan(r["ours_std"]) else f" ± {r['ours_std']:.2f}")
        body.append(
            [
                str(r["table"]),
                r["dataset"],
                src,
                _name(r["generator"]),
                _fmt(r["train_ber"], "g"),
                _fmt(r["eval_ber"], "g"),
                _fmt(r["lam"], "g"),
                _fmt(r["bits"], ".0f"),
                _LABEL.get(r["metric"], r["metric"]),
                paper,
                ours,
                str(int(r["runs"])),
                _fmt(r["diff"], "+.2f"),
                _fmt(r["z"], "+.2f"),
                r["std_from"],
                _name(r["fault_model"]),
            ]
        )
    return head, body


def scatter(matched: pd.DataFrame, out_dir: str) -> str:
    """Ours against the paper's (PA, PA (NF), RP), error bars: the unit std; returns the PNG's file name."""
    from orchestration.report.figures import _plt, _save

    plt = _plt()
    m = matched[matched["metric"].isin(["PA", "PA_NF", "RP"])]
    fig, ax = plt.subplots(figsize=(6.2, 5.6), constrained_layout=True)
    lo = float(min(m["paper_mean"].min(), m["ours"].min(), 0.0)) - 2
    hi = float(max(m["paper_mean"].max(), m["ours"].max(), 1.0)) + 2
    ax.plot([lo, hi], [lo, hi], color="#444", lw=1, label="ours = paper")
    for metric, marker in (("PA", "o"), ("PA_NF", "s"), ("RP", "^")):
        d = m[m["metric"] == metric]
        if not d.empty:
            ax.errorbar(
                d["paper_mean"],
                d["ours"],
                xerr=d["std"].fillna(0),
                fmt=marker,
                ms=5,
                capsize=2,
                alpha=0.8,
                label=f"{_LABEL[metric]} (bars: ±1 std)",
            )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("paper (Sun et al., NeurIPS 2024), %")
    ax.set_ylabel("ours, %")
    ax.set_title("Reproduction: ours against the paper's")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, os.path.join(out_dir, FIG_DIR), "paper_scatter")


def paper_section(rows: Any, out_dir: str | os.PathLike) -> Section:
    """The paper beside ours: a scatter, the scorecard and the matched table; skipped when nothing matches."""
    from nf_core.paper import CITATION, match, scorecard

    out_dir = os.fspath(out_dir)
    s = Section(
        "paper",
        "g. The paper beside ours",
        f"Every result row whose configuration the paper reports ({CITATION}, Tables 1, 3, 10-26): the paper's "
        "mean ± chip std, ours (mean over seeds ± our chip std), Δ = ours − paper and Δ in units of the chip "
        "std — the paper's; for RP the paper's PA (NF) std; ours where the paper prints none or 0. CA and CA (NF) "
        "do not vary over chips: no unit. A configuration the paper prints in several tables counts once in "
        "the scorecard.",
    )
    matched = match(rows)  # results rows: dicts, an Arrow results table or a DataFrame
    if matched.empty:
        s.skipped = "no result row has a configuration the paper reports (dataset, model, generator, BERs, λ, bits)"
        return s
    if matched["metric"].isin(["PA", "PA_NF", "RP"]).any():
        s.figures.append(f"{FIG_DIR}/{scatter(matched, out_dir)}")
    card = scorecard(matched)
    head = ["metric", *card.columns[1:]]
    body = [
        [_LABEL.get(r["metric"], r["metric"]), *(str(int(r[c])) for c in card.columns[1:])] for _, r in card.iterrows()
    ]
    _add_table(s, out_dir, card, head, body, "paper_scorecard", "Reproduction scorecard: |ours − paper| in chip stds")
    head, body = matched_display(matched)
    _add_table(s, out_dir, matched, head, body, "paper_matched", "The paper's numbers beside ours")
    return s


def latency_section(results: list[dict[str, Any]], out_dir: str | os.PathLike) -> Section:
    """Table 9: measured batch-1 latency (nf_core.latency results) with the paper's ms beside it where printed."""
    from nf_core.paper import load

    out_dir = os.fspath(out_dir)
    s = Section(
        "latency",
        "h. Inference latency at batch size 1 (paper Table 9)",
        "Median and 90th percentile over the timed runs (warm-up excluded), on the device named; the paper "
        "measured on its own GPU, so only the added cost of a generator is comparable in kind, not in ms.",
    )
    if not results:
        s.skipped = "no latency measured (nf profile --model NAME --dataset DATASET --latency)"
        return s
    paper = load()
    paper = paper[paper["metric"] == "latency_ms"]
    recs = []
    for res in results:
        for r in res["rows"]:
            g = r["generator"] or ""
            p = paper[
                (paper["model"] == res["model"]) & (paper["dataset"] == res["dataset"]) & (paper["generator"] == g)
            ]
            recs.append(
                {
                    "dataset": res["dataset"],
                    "model": res["model"],
                    "generator": r["generator"] or "-",
                    "median_ms": r["median_ms"],
                    "p90_ms": r["p90_ms"],
                    "added_ms": r["added_ms"],
                    "paper_ms": float(p["mean"].iloc[0]) if len(p) else math.nan,
                    "device": res["device"],
                    "runs": res["runs"],
                }
            )
    df = pd.DataFrame(recs)
    head = ["dataset", "base model", "generator", "median ms", "p90 ms", "added ms", "paper ms", "runs", "device"]
    body = [
        [
            r["dataset"],
            r["model"],
            r["generator"],
            _fmt(r["median_ms"]),
            _fmt(r["p90_ms"]),
            _fmt(r["added_ms"], "+.2f"),
            _fmt(r["paper_ms"]),
            str(r["runs"]),
            r["device"],
        ]
        for _, r in df.iterrows()
    ]
    _add_table(s, out_dir, df, head, body, "latency", "Batch-1 latency: base model alone and with each generator")
    return s

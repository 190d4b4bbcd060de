"""The paper's reported numbers beside ours (Sun et al., NeuralFuse, NeurIPS 2024, arXiv 2306.16869).

``load()`` reads nf_core/data/paper_results.csv (Tables 1, 3, 9-26, one number per row; docs/paper_results.md).
``match(rows)`` puts the paper's value beside ours wherever a results row (orchestration.store.results' schema)
has a paper configuration, and says how far apart they are in units of the chip std; ``scorecard``
counts how many land within 1 and 2 of those units.

Matching rules (why, in short):
- CA and PA are the base model's alone: they match on dataset, model (our ``target``), evaluation BER and
  bits, whatever generator our row carries; generator metrics (CA_NF, PA_NF, RP, efficiency) also on the
  source (an ensemble matches whatever order its members are listed in), generator, training BER, λ, N.
- A blank paper field (N everywhere: the paper does not say per table; λ and training BER of Table 25's
  adversarially trained generators) matches any value of ours; our blank ``bits`` is the 8-bit default.
- Table 25's rows (``flipped_bits``) match only results that carry a ``flipped_bits`` column with that budget;
  every other paper row matches only results without one (or with it blank): adversarial and EOPM
  generators are never compared with each other.
- The access scenario is the paper's label of the table (restricted: Tables 1, 16-21); it is not a key,
  because it is implied by source vs target and training BER (Table 1's ResNet18 → ResNet18 row is the
  same experiment as a relaxed one trained at 1.5 %).
- Our rows are averaged over seeds per fault model and layout (those stay apart: ``runs`` counts seeds).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CSV_PATH = Path(__file__).parent / "data" / "paper_results.csv"
CITATION = (
    'Sun et al., "NeuralFuse: Learning to Recover the Accuracy of Access-Limited Neural Network Inference '
    'in Low-Voltage Regimes", NeurIPS 2024, arXiv 2306.16869'
)
# Paper metric -> (our mean column, our chip-std column or None)
METRICS: dict[str, tuple[str, str | None]] = {
    "CA": ("ca", None),
    "PA": ("pa_mean", "pa_std"),
    "CA_NF": ("ca_nf", None),
    "PA_NF": ("pa_nf_mean", "pa_nf_std"),
    "RP": ("rp", None),
    "efficiency": ("efficiency", None),
}
BASE_METRICS = ("CA", "PA")  # the base model's alone
CONFIG = ["dataset", "source", "model", "generator", "train_ber", "eval_ber", "lam", "n", "bits", "flipped_bits"]
BUCKETS = ("|Δ| ≤ 1 std", "1 < |Δ| ≤ 2 std", "|Δ| > 2 std", "no chip std")
_FLOAT_KEYS = ("train_ber", "eval_ber", "lam")


@functools.cache
def _load() -> pd.DataFrame:
    df = pd.read_csv(CSV_PATH, comment="#", dtype={"table": str, "generator": str})
    df["generator"] = df["generator"].fillna("")
    return df


def load() -> pd.DataFrame:
    """The paper's numbers, long format: table, dataset, source, model, generator, train_ber, eval_ber, lam, n,
    bits, access, flipped_bits, metric, mean, std (blank generator: the base model alone)."""
    return _load().copy()


def _source_key(s: Any) -> str:
    return "+".join(sorted(str(s).split("+"))) if isinstance(s, str) else ""


def _ours(rows: Any) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
    else:
        from_rows = list(rows) if isinstance(rows, Iterable) and not hasattr(rows, "to_pandas") else None
        df = pd.DataFrame(from_rows) if from_rows is not None else rows.to_pandas()
    if "target" not in df:
        df["target"] = df["source"]
    df["target"] = df["target"].fillna(df["source"])
    for c in ("generator", "fault_model", "layout"):
        df[c] = df[c].fillna("") if c in df else ""
    for c in ("train_ber", "lam", "n", "seed", "flipped_bits", *(v for pair in METRICS.values() for v in pair if v)):
        if c not in df:
            df[c] = np.nan
    df["bits"] = df["bits"].fillna(8) if "bits" in df else 8
    for c in _FLOAT_KEYS:
        df[c] = df[c].astype(float).round(9)
    df["eval_ber"] = df["eval_ber"].astype(float).round(9)
    df["src_key"] = df["source"].map(_source_key)
    df["row"] = range(len(df))
    return df


def _same(paper: pd.Series, ours: pd.Series) -> pd.Series:
    """Paper blank → any value; else equal (our blank never equals a paper value)."""
    return paper.isna() | (paper.astype(float) == ours.astype(float))


def match(rows: Iterable[Mapping[str, Any]] | Any) -> pd.DataFrame:
    """Each paper number that has a configuration among ``rows``, with ours beside it.

    Columns: the paper row's table, access and configuration; metric; paper_mean, paper_std; ours (mean over
    seeds), ours_std (our chip std, PA/PA_NF only), runs, fault_model, layout; diff = ours − paper_mean;
    std (the unit) and std_from ("paper", "paper PA_NF" for RP, "ours" when the paper gives none, "none");
    z = diff / std (NaN where there is no chip std: CA, CA_NF, efficiency)."""
    ours = _ours(rows)
    paper = load()
    paper = paper[paper["metric"].isin(list(METRICS))].reset_index(names="paper_row")
    for c in _FLOAT_KEYS:
        paper[c] = paper[c].round(9)
    paper["eval_ber"] = paper["eval_ber"].round(9)
    paper["src_key"] = paper["source"].map(_source_key)
    out = []
    base = paper["metric"].isin(BASE_METRICS)
    b = paper[base].merge(
        ours,
        left_on=["dataset", "model", "eval_ber", "bits"],
        right_on=["dataset", "target", "eval_ber", "bits"],
        suffixes=("", "_o"),
    )
    # One base model per seed: its CA/PA sits on each of its generator rows, count it once.
    b = b.drop_duplicates(["paper_row", "seed", "fault_model", "layout"])
    out.append(b)
    g = paper[~base].merge(
        ours,
        left_on=["dataset", "src_key", "model", "generator", "eval_ber", "bits"],
        right_on=["dataset", "src_key", "target", "generator", "eval_ber", "bits"],
        suffixes=("", "_o"),
    )
    keep = _same(g["train_ber"], g["train_ber_o"]) & _same(g["lam"], g["lam_o"]) & _same(g["n"], g["n_o"])
    adv = g["flipped_bits"].isna() & g["flipped_bits_o"].isna()
    adv |= g["flipped_bits"].notna() & (g["flipped_bits"].astype(float) == g["flipped_bits_o"].astype(float))
    out.append(g[keep & adv])
    m = pd.concat(out, ignore_index=True)
    cols = [
        "table",
        "access",
        *CONFIG,
        "metric",
        "paper_mean",
        "paper_std",
        "ours",
        "ours_std",
        "runs",
        "fault_model",
        "layout",
        "diff",
        "std",
        "std_from",
        "z",
    ]
    if m.empty:
        return pd.DataFrame(columns=cols)
    m["ours_v"] = m.apply(lambda r: r[METRICS[r["metric"]][0]], axis=1).astype(float)
    m["ours_s"] = m.apply(lambda r: r[METRICS[r["metric"]][1]] if METRICS[r["metric"]][1] else np.nan, axis=1)
    grp = m.groupby(["paper_row", "fault_model", "layout"], sort=True, dropna=False)
    agg = grp.agg(ours=("ours_v", "mean"), ours_std=("ours_s", "mean"), runs=("ours_v", "count")).reset_index()
    res = agg.merge(paper.rename(columns={"mean": "paper_mean", "std": "paper_std"}), on="paper_row")
    res = res[res["ours"].notna()]
    pa_nf_std = _pa_nf_std(paper)
    units = [_unit(r, pa_nf_std) for _, r in res.iterrows()]
    res["std"] = [u[0] for u in units]
    res["std_from"] = [u[1] for u in units]
    res["diff"] = res["ours"] - res["paper_mean"]
    res["z"] = [_z(d, s) for d, s in zip(res["diff"], res["std"])]
    res["generator"] = res["generator"].replace("", None)
    return res.sort_values(["paper_row", "fault_model", "layout"])[cols].reset_index(drop=True)


_PA_NF_KEYS = (
    "table",
    "dataset",
    "src_key",
    "model",
    "generator",
    "train_ber",
    "eval_ber",
    "lam",
    "bits",
    "flipped_bits",
)


def _pa_nf_std(paper: pd.DataFrame) -> dict[tuple, float]:
    pa = paper[paper["metric"] == "PA_NF"]
    return {tuple(_key(r[k]) for k in _PA_NF_KEYS): r["std"] for _, r in pa.iterrows()}


def _key(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _unit(r: pd.Series, pa_nf_std: dict[tuple, float]) -> tuple[float, str]:
    """The chip std a difference is measured in, and where it came from."""
    if not math.isnan(r["paper_std"]) and r["paper_std"] > 0:
        return float(r["paper_std"]), "paper"
    if r["metric"] == "RP":  # RP moves with PA (NF): its chip spread is the unit
        s = pa_nf_std.get(tuple(_key(r[k]) for k in _PA_NF_KEYS))
        if s is not None and not math.isnan(s) and s > 0:
            return float(s), "paper PA_NF"
    if not math.isnan(r["ours_std"]) and r["ours_std"] > 0:
        return float(r["ours_std"]), "ours"
    return math.nan, "none"


def _z(diff: float, std: float) -> float:
    return diff / std if not math.isnan(std) else math.nan


def bucket(z: float) -> str:
    """The scorecard bucket of one difference in std units."""
    if math.isnan(z):
        return BUCKETS[3]
    a = round(abs(z), 9)  # 1.7 / 1.7 must be 1, not 1.0000000000000002 from the subtraction before it
    return BUCKETS[0] if a <= 1 else BUCKETS[1] if a <= 2 else BUCKETS[2]


def scorecard(matched: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``match`` per bucket (|Δ| ≤ 1 std, 1-2, > 2, no chip std), per metric and in total.

    A configuration the paper prints in several tables (e.g. Table 16's ResNet18 rows again in Table 22)
    is counted once."""
    cols = [*BUCKETS]
    if matched.empty:
        return pd.DataFrame({"metric": ["total"], **{c: [0] for c in cols}, "matched": [0]})
    m = matched.drop_duplicates([*CONFIG, "metric", "fault_model", "layout", "paper_mean"]).copy()
    m["bucket"] = m["z"].astype(float).map(bucket)
    t = pd.crosstab(m["metric"], m["bucket"]).reindex(columns=cols, fill_value=0)
    order = [k for k in METRICS if k in t.index]
    t = t.reindex(order)
    t.loc["total"] = t.sum()
    t["matched"] = t.sum(axis=1)
    return t.reset_index().rename(columns={"index": "metric"}).rename_axis(columns=None)

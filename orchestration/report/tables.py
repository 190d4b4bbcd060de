"""Report tables: the paper-style main table, and writers for CSV, LaTeX (booktabs) and Markdown."""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from orchestration.store.results import Rows, results_table

# Keys that tell two generator configurations apart; a report shows only those the sweep varies.
# flipped_bits: the budget of an adversarially trained generator (paper Table 25), one generator per budget.
VARIANT_KEYS = (
    "source",
    "base_training",
    "train_ber",
    "lam",
    "n",
    "flipped_bits",
    "fault_model",
    "layout",
    "bits",
    "eval_ber",
)
_METRICS = ("ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "rp", "rp_std", "efficiency")


def frame(rows: Rows) -> pd.DataFrame:
    """Rows (dicts, a results table, or such a DataFrame) → a DataFrame with the results schema's columns."""
    if isinstance(rows, pd.DataFrame):
        return rows
    return results_table(rows).to_pandas()


def is_ensemble(source: Any) -> bool:
    return isinstance(source, str) and "+" in source


def own_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of generators evaluated on the model they were trained for (the target is, or is part of, the source).

    Transfer rows (a generator applied to another model) are the transfer matrices' business."""
    if df.empty:
        return df
    keep = [
        isinstance(g, str) and t in str(s).split("+") for g, s, t in zip(df["generator"], df["source"], df["target"])
    ]
    return df[keep]


def varying(df: pd.DataFrame, keys: tuple[str, ...] = VARIANT_KEYS) -> list[str]:
    """The keys that take more than one value in ``df`` (nulls count as a value)."""
    return [k for k in keys if k in df and df[k].astype(str).nunique() > 1]


ABLATION_KEYS = ("lam", "n", "bits")


def main_values(df: pd.DataFrame) -> dict[str, Any]:
    """The setting the main figures show for each ablation key: the highest precision, and for λ and N
    the value most rows use (ties: the largest). The ablation sections show the others."""
    out: dict[str, Any] = {}
    for k in ABLATION_KEYS:
        vals = df[k].dropna() if k in df else pd.Series(dtype=float)
        if vals.nunique() < 2:
            continue
        if k == "bits":
            out[k] = vals.max()
        else:
            counts = vals.value_counts()
            out[k] = max(v for v, c in counts.items() if c == counts.max())
    return out


def main_slice(df: pd.DataFrame, keep: str | None = None) -> pd.DataFrame:
    """The rows at ``main_values`` (all values of ``keep``, the key an ablation varies)."""
    for k, v in main_values(df).items():
        if k != keep:
            df = df[df[k] == v]
    return df


def average_seeds(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of every metric over the rows sharing ``keys`` (seeds); ``runs`` counts them."""
    if df.empty:
        return pd.DataFrame(columns=[*keys, *_METRICS, "runs"])
    g = df.groupby(keys, dropna=False, sort=True)
    # seeds: the mean of each metric and of each std over chips (as for PA's std)
    out = g[[m for m in _METRICS if m in df]].mean().reset_index()
    for m in _METRICS:
        if m not in out:
            out[m] = float("nan")  # a results table written before the column existed
    out["runs"] = g.size().to_numpy()
    return out


def main_table(rows: Rows, keep: str | None = None) -> pd.DataFrame:
    """The paper's main table: dataset × base model × generator (× whatever the sweep varies) →
    CA, PA ± std, CA (NF), PA (NF) ± std, RP, efficiency ratio; averaged over seeds. λ, N and bits are
    held at ``main_values`` except ``keep`` (the key an ablation table varies)."""
    df = main_slice(own_rows(frame(rows)), keep)
    # source is a column only when some generator was trained for an ensemble; otherwise it is the model
    ens = any(is_ensemble(x) for x in df["source"]) if not df.empty else False
    keys = ["dataset", "target", "generator", *[k for k in varying(df) if k != "dataset" and (k != "source" or ens)]]
    out = average_seeds(df, keys).rename(columns={"target": "model"})
    cols = ["dataset", "model", "generator", *keys[3:], *_METRICS, "runs"]
    return out[cols].reset_index(drop=True)


_HEAD = {
    "model": "base model",
    "train_ber": "training BER",
    "eval_ber": "evaluation BER",
    "lam": "λ",
    "n": "N",
    "fault_model": "fault model",
    "ca": "CA",
    "pa": "PA",
    "ca_nf": "CA (NF)",
    "pa_nf": "PA (NF)",
    "rp": "RP",
    "efficiency": "efficiency",
    "runs": "runs",
    "bits": "bits",
    "flipped_bits": "flipped bits",
}
_LATEX_HEAD = {
    **_HEAD,
    "lam": r"$\lambda$",
    "n": "$N$",
    "pa": r"PA ($\pm$ std)",
    "pa_nf": r"PA (NF) ($\pm$ std)",
    "rp": r"RP ($\pm$ std)",
}


def _cell(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def display_table(df: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and body cells for people: PA, PA (NF) and RP as mean ± std over chips, 2 decimals, BERs as %g."""
    pm = r" $\pm$ " if latex else " ± "
    head, body = [], []
    cols = [c for c in df.columns if c not in ("pa_std", "pa_nf_std", "rp_std")]
    for c in cols:
        name = "pa" if c == "pa_mean" else "pa_nf" if c == "pa_nf_mean" else c
        head.append((_LATEX_HEAD if latex else _HEAD).get(name, name))
    for _, r in df.iterrows():
        line = []
        for c in cols:
            v = r[c]
            if c in ("pa_mean", "pa_nf_mean"):
                std = r.get(c.replace("_mean", "_std"))
                line.append(_cell(v) if _cell(std) == "-" else f"{_cell(v)}{pm}{_cell(std)}")
            elif c in ("train_ber", "eval_ber", "lam"):
                line.append(_cell(v, "g"))
            elif c == "rp":
                std = r.get("rp_std")
                line.append(_cell(v, "+.2f") if _cell(std) == "-" else f"{_cell(v, '+.2f')}{pm}{_cell(std)}")
            elif c == "efficiency":
                line.append(_cell(v, ".3g"))
            elif isinstance(v, float) and c in ("n", "bits", "runs", "flipped_bits") and not math.isnan(v):
                line.append(str(int(v)))
            else:
                line.append(_cell(v))
        body.append(line)
    return head, body


_TEX_UNICODE = {"±": r"$\pm$", "λ": r"$\lambda$", "×": r"$\times$", "−": "--", "·": r"$\cdot$"}  # plain-ASCII .tex
_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}


def _tex(s: str) -> str:
    if "$" in s:  # already LaTeX (our own ± and λ)
        return s
    return "".join(_TEX_ESCAPE.get(ch, _TEX_UNICODE.get(ch, ch)) for ch in s)


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular of ``df`` (display formatting), with a caption when given."""
    head, body = display_table(df, latex=True)
    align = "".join("l" if i < 3 else "r" for i in range(len(head)))
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (display formatting)."""
    head, body = display_table(df)

    def esc(s: str) -> str:
        return s.replace("|", r"\|")

    lines = [
        "| " + " | ".join(map(esc, head)) + " |",
        "|" + "|".join(":---" if i < 3 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, stem: str, caption: str = "") -> dict[str, str]:
    """``stem``.csv (raw numbers), .tex (booktabs) and .md under ``out_dir``; returns {format: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("csv", "tex", "md")}
    df.to_csv(paths["csv"], index=False)
    with open(paths["tex"], "w", encoding="utf-8") as f:
        f.write(to_latex(df, caption))
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(to_markdown(df))
    return paths

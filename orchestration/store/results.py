"""Evaluation results as tables: Parquet, transfer matrices, RP heat-maps, console tables.

One row per (item, evaluation BER). Accuracies and RP are in percent / percentage points,
as nf_core.evaluate returns them. Pure pyarrow/pandas/matplotlib: no MLflow here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Column order is the schema's order; every column but the required ones may be null.
SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),  # the sweep item (eval/transfer) that produced the row: links to its MLflow run
        ("stage", pa.string()),
        ("dataset", pa.string()),
        ("source", pa.string()),  # base model id, or ensemble id, the generator was trained with
        ("base_training", pa.string()),  # the base models' training mode (nf_core.base_modes); null read as standard
        ("generator", pa.string()),  # null: the base model evaluated without NeuralFuse
        ("train_ber", pa.float64()),
        ("lam", pa.float64()),
        ("n", pa.int64()),
        ("fault_model", pa.string()),
        ("layout", pa.string()),  # memory layout of the chips: results differ per layout
        ("bits", pa.int64()),
        ("seed", pa.int64()),
        ("chips", pa.int64()),  # number of evaluation chips behind pa_*_mean/std
        ("eval_ber", pa.float64()),
        ("target", pa.string()),  # model evaluated; defaults to the source
        ("ca", pa.float64()),
        ("pa_mean", pa.float64()),
        ("pa_std", pa.float64()),
        ("ca_nf", pa.float64()),
        ("pa_nf_mean", pa.float64()),
        ("pa_nf_std", pa.float64()),
        ("rp", pa.float64()),
        ("rp_std", pa.float64()),  # std over chips of the paired per-chip RP (PA (NF)_chip − PA_chip)
        ("efficiency", pa.float64()),
        # adversarially trained generators (generator.chips adversarial/mixed); null: EOPM's random chips
        ("train_chips", pa.string()),
        ("flipped_bits", pa.int64()),  # the adversarial chips' budget of flipped bit cells (paper Table 25)
    ]
)
REQUIRED = ("dataset", "source", "eval_ber")
COLUMNS = tuple(SCHEMA.names)

Rows = Iterable[Mapping[str, Any]] | pa.Table


def recovery_std(pa_per_chip: Sequence[float] | None, pa_nf_per_chip: Sequence[float] | None) -> float | None:
    """RP's spread: the population std (ddof 0, as nf_core.evaluate's PA std) over chips of the paired
    per-chip recovery PA (NF)_chip − PA_chip; None without two equally long per-chip lists."""
    if not pa_per_chip or not pa_nf_per_chip or len(pa_per_chip) != len(pa_nf_per_chip):
        return None
    d = [float(b) - float(a) for a, b in zip(pa_per_chip, pa_nf_per_chip)]
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))


def _normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    missing = [c for c in REQUIRED if row.get(c) is None]
    if missing:
        raise ValueError(f"result row lacks {missing}: {dict(row)!r}")
    out = {c: row.get(c) for c in COLUMNS}  # extra keys (per-chip lists, …) are not tabulated
    if out["target"] is None:
        out["target"] = out["source"]
    if out["base_training"] is None:
        out["base_training"] = "standard"  # rows from before the base-training modes
    if out["rp"] is None and out["pa_nf_mean"] is not None and out["pa_mean"] is not None:
        out["rp"] = out["pa_nf_mean"] - out["pa_mean"]  # RP = PA (NF) mean − PA mean
    if out["rp_std"] is None:
        out["rp_std"] = recovery_std(row.get("pa_per_chip"), row.get("pa_nf_per_chip"))
    return out


def results_table(rows: Rows) -> pa.Table:
    """Rows (dicts) → a table with the fixed SCHEMA; missing optional fields become null."""
    if isinstance(rows, pa.Table):
        return rows
    return pa.Table.from_pylist([_normalise(r) for r in rows], schema=SCHEMA)


def write_parquet(table: pa.Table, path_or_buffer: str | os.PathLike | IO[bytes]) -> None:
    """Write a results table as Parquet (a path, or a binary file object)."""
    dst = os.fspath(path_or_buffer) if isinstance(path_or_buffer, os.PathLike) else path_or_buffer
    pq.write_table(table, dst)


def read_parquet(path_or_buffer: str | os.PathLike | IO[bytes]) -> pa.Table:
    """Read a results table written by write_parquet."""
    src = os.fspath(path_or_buffer) if isinstance(path_or_buffer, os.PathLike) else path_or_buffer
    return pq.read_table(src)


def _frame(rows: Rows) -> pd.DataFrame:
    return results_table(rows).to_pandas()


_KEYS = ["source", "base_training", "generator", "train_ber", "fault_model", "target", "eval_ber"]


def transfer_matrix(rows: Rows, dataset: str) -> pa.Table:
    """Long-form source × target × eval BER table of one dataset: mean PA, PA (NF), RP and RP's std over chips.

    Rows repeated over seeds are averaged (``runs`` counts them). Fault models stay
    separate keys: numbers from stuck-at and flip chips are never mixed.
    """
    df = _frame(rows)
    # Transfer is about generators: rows of bare base models (no generator, no RP) are left out.
    df = df[(df["dataset"] == dataset) & df["generator"].notna()]
    if "rp_std" not in df:  # a table written before the column existed
        df = df.assign(rp_std=float("nan"))
    cols = _KEYS + ["pa_mean", "pa_nf_mean", "rp", "rp_std", "runs"]
    if df.empty:
        return pa.Table.from_pandas(pd.DataFrame(columns=cols), preserve_index=False)
    g = df.groupby(_KEYS, dropna=False, sort=True)
    out = g[["pa_mean", "pa_nf_mean", "rp", "rp_std"]].mean().reset_index()
    out["runs"] = g.size().to_numpy()
    return pa.Table.from_pandas(out[cols], preserve_index=False)


def _fmt_ber(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def heatmap_png(
    rows: Rows,
    dataset: str,
    path: str | os.PathLike,
    fault_model: str | None = None,
    also: Sequence[str | os.PathLike] = (),
) -> str:
    """RP heat-map of one dataset and fault model: rows = source / generator / training BER,
    columns = target × evaluation BER, values annotated (± RP's std over chips where known).
    ``also``: more paths (e.g. an .svg) the same figure is saved to, drawn once. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run on servers without a display
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    df = transfer_matrix(rows, dataset).to_pandas()
    models = sorted(df["fault_model"].dropna().unique()) if not df.empty else []
    if fault_model is None:
        if len(models) > 1:
            raise ValueError(f"{dataset}: several fault models {models}; pick one with fault_model=")
        fault_model = models[0] if models else None
    if fault_model is not None:
        df = df[df["fault_model"] == fault_model]
    if df.empty:
        raise ValueError(f"no results for dataset {dataset!r} (fault model {fault_model!r})")

    df = df.assign(
        row=[
            f"{s} / {g if isinstance(g, str) else '-'} / training BER {_fmt_ber(b)}"
            for s, g, b in zip(df["source"], df["generator"], df["train_ber"])
        ],
        col=[f"{t} @ {_fmt_ber(b)}" for t, b in zip(df["target"], df["eval_ber"])],
    )
    rows_order = list(dict.fromkeys(df["row"]))
    cols_order = list(dict.fromkeys(df.sort_values(["target", "eval_ber"])["col"]))
    grid = df.pivot_table(index="row", columns="col", values="rp", aggfunc="mean", dropna=False)
    grid = grid.reindex(index=rows_order, columns=cols_order)
    z = grid.to_numpy(dtype=float)
    spread = df.pivot_table(index="row", columns="col", values="rp_std", aggfunc="mean", dropna=False)
    sd = spread.reindex(index=rows_order, columns=cols_order).to_numpy(dtype=float)

    label_w = 0.09 * max(len(r) for r in rows_order)  # inches for the row labels
    fig, ax = plt.subplots(
        figsize=(max(6.0, 2.5 + label_w + 0.9 * len(cols_order)), max(3.5, 2.2 + 0.45 * len(rows_order))),
        constrained_layout=True,
    )
    finite = z[np.isfinite(z)]
    span = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-9)
    # Diverging and centred on 0: a negative RP (the generator hurts) must stand out.
    im = ax.imshow(np.ma.masked_invalid(z), cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    ax.set_xticks(range(len(cols_order)), cols_order, rotation=45, ha="right")
    ax.set_yticks(range(len(rows_order)), rows_order)
    ax.set_xlabel("target model @ evaluation BER")
    ax.set_ylabel("source / generator / training BER")
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if np.isfinite(z[i, j]):
                dark = abs(z[i, j]) > 0.6 * span  # white text on the saturated ends of the map
                text = f"{z[i, j]:.1f}" + (f"\n±{sd[i, j]:.1f}" if np.isfinite(sd[i, j]) else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_title(f"RP (pp, ± std over chips) — {dataset}, fault model {fault_model or 'unknown'}")
    fig.colorbar(im, ax=ax, label="RP (percentage points)")
    for i, p in enumerate((path, *also)):
        if i == 1:
            fig.set_layout_engine("none")  # laid out once: later formats reuse the first one's positions
        fig.savefig(os.fspath(p), dpi=120)
    plt.close(fig)
    return os.fspath(path)


def _num(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _pm(mean: Any, std: Any, spec: str = ".2f") -> str:
    if mean is None:
        return "-"
    return _num(mean, spec) if std is None else f"{_num(mean, spec)} ± {_num(std)}"


def format_table(rows: Rows) -> str:
    """Console table: source (with its base training when not standard), generator, BERs, target, CA, PA,
    CA (NF), PA (NF), RP (numbers right-aligned);
    PA, PA (NF) and RP ± their std over the evaluation chips (RP's: paired per chip, when the rows hold them)."""
    from orchestration.tables import table

    head = ["source", "generator", "training BER", "evaluation BER", "target", "CA", "PA", "CA (NF)", "PA (NF)", "RP"]
    body = [
        [
            r["source"] + ("" if r["base_training"] in (None, "standard") else f" ({r['base_training']})"),
            r["generator"] or "-",
            _fmt_ber(r["train_ber"]),
            _fmt_ber(r["eval_ber"]),
            r["target"],
            _num(r["ca"]),
            _pm(r["pa_mean"], r["pa_std"]),
            _num(r["ca_nf"]),
            _pm(r["pa_nf_mean"], r["pa_nf_std"]),
            _pm(r["rp"], r.get("rp_std"), "+.2f"),  # a table written before rp_std existed lacks it
        ]
        for r in results_table(rows).to_pylist()
    ]
    align = ["left", "left", "right", "right", "left"] + ["right"] * 5
    flipped = [r.get("flipped_bits") for r in results_table(rows).to_pylist()]
    if any(f is not None for f in flipped):  # adversarially trained generators: their budget tells rows apart
        head.insert(2, "flipped bits")
        align.insert(2, "right")
        for row, f in zip(body, flipped):
            row.insert(2, "-" if f is None else f"{f:,}")
    return table(head, body, align)

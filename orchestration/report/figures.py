"""Report figures (matplotlib, headless): each builder takes a results DataFrame and an output folder,
writes PNG + SVG files and returns their PNG names; it raises ``Skip`` with a one-line reason when the
sweep lacks the data. ``pareto_front`` is the pure part of the energy figure."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from orchestration.report.tables import (
    average_seeds,
    frame,
    is_ensemble,
    main_slice,
    own_rows,
    varying,
)

BAR_METRICS = (
    ("ca", None, "CA"),
    ("pa_mean", "pa_std", "PA"),
    ("ca_nf", None, "CA (NF)"),
    ("pa_nf_mean", "pa_nf_std", "PA (NF)"),
)
_SHORT = {
    "train_ber": "training BER ",
    "lam": "λ=",
    "n": "N=",
    "bits": "b=",
    "flipped_bits": "flipped ",
    "fault_model": "",
    "layout": "",
    "source": "src ",
}


class Skip(Exception):
    """A figure the sweep has no data for; the message is the one-line reason shown in the report."""


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: reports are built on servers without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_dir: str, stem: str) -> str:
    """``stem``.png (for the page) and ``stem``.svg (for papers); returns the PNG's file name."""
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(os.path.join(out_dir, f"{stem}.png"), dpi=110)
    fig.set_layout_engine("none")  # laid out once: the SVG reuses the PNG's positions (layout is half the cost)
    fig.savefig(os.path.join(out_dir, f"{stem}.svg"))
    _plt().close(fig)
    return f"{stem}.png"


def _slug(*parts: Any) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-").replace("+", "-") for p in parts)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def variant_label(row: pd.Series | dict, keys: Sequence[str]) -> str:
    """Generator name plus the values that tell it apart from its siblings, e.g. ``ConvS training BER 0.03 λ=5``."""
    parts = [str(row["generator"])]
    for k in keys:
        v = row[k]
        if k == "source" and not is_ensemble(v):
            continue  # a single-model source is the base model the figure is about
        parts.append(_SHORT.get(k, f"{k}=") + _fmt(v))
    return " ".join(parts)


def _per_model_over_bers(df: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """Per (dataset, base model): the rows averaged over seeds per generator variant and evaluation BER,
    with a ``label`` column naming the variant."""
    for (ds, model), part in df.groupby(["dataset", "target"], sort=True):
        keys = [k for k in varying(part) if k != "eval_ber"]
        avg = average_seeds(part, ["generator", *keys, "eval_ber"])
        avg["label"] = [variant_label(r, keys) for _, r in avg.iterrows()]
        yield ds, model, avg


def reference_ber(df: pd.DataFrame) -> float:
    """The evaluation BER a one-BER figure uses: the most common training BER when it was evaluated,
    else the highest evaluation BER."""
    evals = sorted(df["eval_ber"].dropna().unique())
    trains = df["train_ber"].dropna()
    if not trains.empty and trains.mode().iloc[0] in evals:
        return float(trains.mode().iloc[0])
    return float(evals[-1])


# --- a. grouped bars -------------------------------------------------------------------------------


def bars(rows: Any, out_dir: str) -> list[str]:
    """Per dataset × base model: CA, PA, CA (NF), PA (NF) per generator, PA std as error bars;
    one panel per evaluation BER."""
    import numpy as np

    df = main_slice(own_rows(frame(rows)))
    if df.empty:
        raise Skip("no evaluated generator yet")
    plt = _plt()
    files = []
    for ds, model, avg in _per_model_over_bers(df):
        bers = sorted(avg["eval_ber"].unique())
        labels = list(dict.fromkeys(avg["label"]))
        width = max(5.0, 1.5 + 1.0 * len(labels))
        side = len(bers) * len(labels) <= 8  # panels side by side while the page can hold them
        fig, axes = plt.subplots(
            1 if side else len(bers),
            len(bers) if side else 1,
            squeeze=False,
            figsize=(width * len(bers) if side else width, 4.2 if side else 3.6 * len(bers)),
            constrained_layout=True,
        )
        axes = [list(axes.flat)]
        x = np.arange(len(labels))
        w = 0.2
        for ax, ber in zip(axes[0], bers):
            sub = avg[avg["eval_ber"] == ber].set_index("label").reindex(labels)
            for i, (col, err, name) in enumerate(BAR_METRICS):
                yerr = sub[err].to_numpy(dtype=float) if err else None
                ax.bar(x + (i - 1.5) * w, sub[col].to_numpy(dtype=float), w, yerr=yerr, capsize=3, label=name)
            tilt = len(labels) > 3 or max(len(lb) for lb in labels) > 14
            ax.set_xticks(x, labels, rotation=20 if tilt else 0, ha="right" if tilt else "center")
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(0, 105)
            ax.set_title(f"{ds} · {model} · evaluation BER {ber:g}")
            ax.grid(axis="y", alpha=0.3)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside upper center", ncols=4, fontsize=9)  # above the bars, never on them
        files.append(_save(fig, out_dir, _slug("bars", ds, model)))
    return files


# --- b. PA vs evaluation BER------------------------------------------------------------------------


def _band(ax: Any, x: Any, mean: Any, std: Any, **kw: Any) -> Any:
    """A line with markers and its ± std band; returns the line."""
    (h,) = ax.plot(x, mean, marker="o", **kw)
    ax.fill_between(x, mean - std, mean + std, color=h.get_color(), alpha=0.15, lw=0)
    return h


def ber_curves(rows: Any, out_dir: str) -> list[str]:
    """Per dataset × base model: PA (NF) versus evaluation BER, one small panel per generator variant, each
    beside the base model's PA without NeuralFuse (dashed, the same in every panel); ± std bands.

    One panel per variant, not one crowded axis: with five or more series the bands of one axis overlap
    into a single brown area."""
    df = main_slice(own_rows(frame(rows)))
    if df.empty:
        raise Skip("no evaluated generator yet")
    if df["eval_ber"].nunique() < 2:
        raise Skip(
            f"the sweep evaluates at one evaluation BER only ({df['eval_ber'].iloc[0]:g}); a curve needs two or more"
        )
    plt = _plt()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    files = []
    for ds, model, avg in _per_model_over_bers(df):
        labels = list(dict.fromkeys(avg["label"]))
        ncols = len(labels) if len(labels) <= 3 else 2 if len(labels) == 4 else 3
        nrows = -(-len(labels) // ncols)
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(3.6 * ncols + 0.4, 2.9 * nrows + 0.7),
            sharex=True,
            sharey=True,
            squeeze=False,
            constrained_layout=True,
        )
        base = avg.groupby("eval_ber")[["pa_mean", "pa_std"]].mean()  # the same base model in every panel
        x = base.index.to_numpy(dtype=float)
        for i, ax in enumerate(axes.flat):
            if i >= len(labels):
                ax.set_visible(False)
                continue
            line = avg[avg["label"] == labels[i]].sort_values("eval_ber")
            _band(ax, x, base["pa_mean"], base["pa_std"], color="k", ls="--", ms=4, label="PA (no NeuralFuse)")
            _band(
                ax,
                line["eval_ber"].to_numpy(dtype=float),
                line["pa_nf_mean"],
                line["pa_nf_std"],
                color=colors[i % len(colors)],
                label="PA (NF), the panel's generator",
            )
            ax.set_title(labels[i], fontsize=10)
            ax.set_xticks(x, [f"{b:g}" for b in x])  # the BERs evaluated, not a continuum
            ax.set_ylim(0, 105)
            ax.grid(alpha=0.3)
            if i % ncols == 0:
                ax.set_ylabel("perturbed accuracy (%)")
            if i + ncols >= len(labels):  # the lowest panel of its column: its BERs (sharex hides the others')
                ax.set_xlabel("evaluation BER")
                ax.xaxis.set_tick_params(labelbottom=True)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9)  # below: never on the title
        fig.suptitle(f"{ds} · {model}: PA vs evaluation BER (bands: ± std over chips)", fontsize=11, x=0.02, ha="left")
        files.append(_save(fig, out_dir, _slug("ber", ds, model)))
    return files


# --- c. transfer matrices --------------------------------------------------------------------------


def transfer_heatmaps(rows: Any, out_dir: str) -> list[str]:
    """The RP heat-map of orchestration.store.results, one per dataset and fault model."""
    from orchestration.store.results import heatmap_png

    df = frame(rows)
    df = df[df["generator"].notna()]
    if df.empty:
        raise Skip("no evaluated generator yet")
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for (ds, fm), _ in df.groupby(["dataset", "fault_model"], sort=True, dropna=False):
        stem = _slug("transfer", ds, fm)
        heatmap_png(  # drawn once, saved twice; matplotlib picks the format from the name
            rows,
            ds,
            os.path.join(out_dir, f"{stem}.png"),
            fault_model=fm if isinstance(fm, str) else None,
            also=[os.path.join(out_dir, f"{stem}.svg")],
        )
        files.append(f"{stem}.png")
    return files


# --- d. energy saving vs RP ------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, maximising both coordinates, in ascending x.

    A point dominates another when it is at least as good in both coordinates and better in one."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox >= x and oy >= y) and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


EnergyFn = Callable[[str, str, str, float], float]


def cost_model_saving(
    model: str, generator: str, dataset: str, ber: float, voltage_table_path: str | None = None, width: float = 1.0
) -> float:
    """Energy saving (%) of ``model`` (at ``width``) behind ``generator`` at ``ber``: `nf profile`'s cost model
    (nf_core.cost.network_saving, the pricing `nf select` uses too)."""
    from nf_core.cost import network_saving
    from nf_core.voltage import load_voltage_table

    return network_saving(model, generator, dataset, load_voltage_table(voltage_table_path).energy_ratio(ber), width)


def energy_points(rows: Any, energy: EnergyFn = cost_model_saving) -> tuple[pd.DataFrame, list[str]]:
    """Per dataset × evaluation BER × base model × generator: energy saving (%) and RP (pp), with
    ``pareto`` marking the front within each dataset × evaluation BER. Also the reasons for points left out."""
    df = main_slice(own_rows(frame(rows)))
    df = df[[not is_ensemble(s) for s in df["source"]]] if not df.empty else df
    keys = ["dataset", "eval_ber", "target", "generator", *[k for k in varying(df) if k not in ("eval_ber", "source")]]
    avg = average_seeds(df, keys) if not df.empty else pd.DataFrame()
    out, why = [], []
    for _, r in avg.iterrows():
        try:
            es = energy(r["target"], r["generator"], r["dataset"], float(r["eval_ber"]))
        except (ValueError, KeyError) as e:
            reason = str(e).split(";")[0]
            if reason not in why:
                why.append(reason)
            continue
        out.append({**{k: r[k] for k in keys}, "energy_saving": es, "rp": r["rp"], "rp_std": r["rp_std"]})
    pts = pd.DataFrame(out, columns=[*keys, "energy_saving", "rp", "rp_std"])
    pts["pareto"] = False
    for _, grp in pts.groupby(["dataset", "eval_ber"]):
        front = pareto_front(list(zip(grp["energy_saving"], grp["rp"])))
        pts.loc[grp.index[front], "pareto"] = True
    return pts.rename(columns={"target": "model"}), why


def energy_figures(
    points: pd.DataFrame, out_dir: str, convention: str = "paper full-size networks (width 1)"
) -> list[str]:
    """Energy saving vs RP, one figure per dataset × evaluation BER; the Pareto front joined by a line."""
    if points.empty:
        raise Skip("no point has both an RP and an energy saving")
    plt = _plt()
    files = []
    keys = [
        k
        for k in points.columns
        if k not in ("dataset", "eval_ber", "model", "energy_saving", "rp", "rp_std", "pareto")
    ]
    for (ds, ber), grp in points.groupby(["dataset", "eval_ber"], sort=True):
        fig, ax = plt.subplots(figsize=(9.6, 4.6), constrained_layout=True)
        markers = dict(zip(sorted(grp["model"].unique()), "osD^vP*X"))
        # points sit close (one generator at several training BERs): each gets a number, named in a key beside
        stack = grp.groupby("energy_saving")["rp"].rank(method="first", ascending=False).astype(int) - 1
        key = []
        for n, (i, r) in enumerate(grp.iterrows(), 1):
            gl = variant_label(r, [k for k in keys if k != "generator"])
            if pd.notna(r.get("rp_std")):  # RP's paired std over chips
                ax.errorbar(r["energy_saving"], r["rp"], yerr=r["rp_std"], color="0.5", lw=1, capsize=3, zorder=2)
            ax.scatter(
                r["energy_saving"],
                r["rp"],
                marker=markers[r["model"]],
                s=60,
                edgecolors="k" if r["pareto"] else "none",
                linewidths=1.5,
                zorder=3,
            )
            ax.annotate(
                str(n),
                (r["energy_saving"], r["rp"]),
                fontsize=7,
                xytext=(6, 2 - 9 * int(stack[i])),
                textcoords="offset points",
            )
            key.append(f"{n:>2}  {r['model']} / {gl}: {r['energy_saving']:.1f}%, RP {r['rp']:+.2f}")
        ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, fontsize=7, va="top", family="monospace")
        front = grp[grp["pareto"]].sort_values("energy_saving")
        ax.plot(front["energy_saving"], front["rp"], "k-", lw=1, alpha=0.6, label="Pareto front", zorder=2)
        ax.set_xlabel(f"energy saving (%)\ncost model, {convention}, generator at nominal voltage")
        ax.set_ylabel("RP (pp), ± std over chips")
        ax.set_title(f"{ds} · evaluation BER {ber:g}: recovery vs energy saving")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, out_dir, _slug("energy", ds, f"{ber:g}")))
    return files


# --- e. ablations, precision, UIP --------------------------------------------------------------------


def ablation(rows: Any, out_dir: str, key: str) -> list[str]:
    """RP vs ``key`` (``lam`` or ``n``), one line per generator, per dataset × base model, at the reference BER."""
    df = own_rows(frame(rows))
    name = {"lam": "λ", "n": "N"}[key]
    if df.empty or df[key].nunique() < 2:
        raise Skip(f"the sweep does not vary {name}")
    ber = reference_ber(df)
    df = main_slice(df[df["eval_ber"] == ber], keep=key)
    plt = _plt()
    files = []
    for (ds, model), part in df.groupby(["dataset", "target"], sort=True):
        if part[key].nunique() < 2:
            continue  # e.g. a model only an ensemble's generator was trained for
        keys = [k for k in varying(part) if k not in (key, "eval_ber")]
        avg = average_seeds(part, ["generator", *keys, key])
        avg["label"] = [variant_label(r, keys) for _, r in avg.iterrows()]
        fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
        for label, line in avg.groupby("label", sort=False):
            line = line.sort_values(key)
            ax.errorbar(line[key].astype(float), line["rp"], yerr=_err(line), marker="o", capsize=3, label=label)
        ax.set_xticks(sorted(avg[key].astype(float).unique()))  # the values the sweep ran, not a continuum
        ax.set_xlabel(name)
        ax.set_ylabel("RP (pp), ± std over chips")
        ax.set_title(f"{ds} · {model}: RP vs {name} (evaluation BER {ber:g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, out_dir, _slug("ablation", key, ds, model)))
    return files


def precision(rows: Any, out_dir: str) -> list[str]:
    """PA and PA (NF) vs weight precision (bits), per dataset × base model, at the reference BER."""
    df = own_rows(frame(rows))
    if df.empty or df["bits"].nunique() < 2:
        raise Skip("the sweep evaluates at one precision only")
    ber = reference_ber(df)
    df = main_slice(df[df["eval_ber"] == ber], keep="bits")
    plt = _plt()
    files = []
    for (ds, model), part in df.groupby(["dataset", "target"], sort=True):
        if part["bits"].nunique() < 2:
            continue
        keys = [k for k in varying(part) if k not in ("bits", "eval_ber")]
        avg = average_seeds(part, ["generator", *keys, "bits"])
        avg["label"] = [variant_label(r, keys) for _, r in avg.iterrows()]
        fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
        base = avg.groupby("bits")["pa_mean"].mean()
        ax.plot(base.index.astype(int), base.to_numpy(), "k--", marker="o", label="PA (no NeuralFuse)")
        for label, line in avg.groupby("label", sort=False):
            line = line.sort_values("bits")
            ax.plot(line["bits"].astype(int), line["pa_nf_mean"], marker="o", label=f"PA (NF) {label}")
        ax.set_xticks(sorted(avg["bits"].astype(int).unique()))
        ax.set_xlabel("weight precision (bits)")
        ax.set_ylabel("perturbed accuracy (%)")
        ax.set_title(f"{ds} · {model}: PA vs precision (evaluation BER {ber:g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, out_dir, _slug("precision", ds, model)))
    return files


def _err(df: pd.DataFrame) -> Any:
    """RP's error bars (std over chips of the paired per-chip RP), or None when the rows lack it."""
    std = df["rp_std"].to_numpy(dtype=float) if "rp_std" in df else None
    return None if std is None or pd.isna(std).all() else std


def _rp_bars(ax: Any, labels: list[str], avg: pd.DataFrame, highlight: list[bool], title: str) -> None:
    colors = ["#999999" if h else "#1f77b4" for h in highlight]
    bars_ = ax.bar(range(len(labels)), avg["rp"].to_numpy(dtype=float), color=colors, yerr=_err(avg), capsize=3)
    for b, h in zip(bars_, highlight):
        if h:
            b.set_hatch("//")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("RP (pp), ± std over chips")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def uip(rows: Any, out_dir: str) -> list[str]:
    """RP of the UIP baseline (grey, hatched) beside the generators, per dataset × base model."""
    df = main_slice(own_rows(frame(rows)))
    if df.empty or not (df["generator"] == "UIP").any():
        raise Skip("the sweep has no UIP baseline")
    ber = reference_ber(df)
    df = df[df["eval_ber"] == ber]
    plt = _plt()
    groups = [(k, g) for k, g in df.groupby(["dataset", "target"], sort=True) if (g["generator"] == "UIP").any()]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 4.0), squeeze=False, constrained_layout=True)
    for ax, ((ds, model), part) in zip(axes[0], groups):
        keys = [k for k in varying(part) if k != "eval_ber"]
        avg = average_seeds(part, ["generator", *keys])
        _rp_bars(
            ax,
            [variant_label(r, keys) for _, r in avg.iterrows()],
            avg,
            list(avg["generator"] == "UIP"),
            f"{ds} · {model} (evaluation BER {ber:g})",
        )
    return [_save(fig, out_dir, "uip")]


# --- f. ensembles ----------------------------------------------------------------------------------


def ensembles(rows: Any, out_dir: str) -> list[str]:
    """Per dataset × generator: RP on each base model of a generator trained for that model alone,
    for an ensemble containing it, and (transfer) for other single models; at the reference BER."""
    import numpy as np

    df = frame(rows)
    df = df[df["generator"].notna()]
    if df.empty or not any(is_ensemble(s) for s in df["source"]):
        raise Skip("the sweep trains no generator on an ensemble")
    ber = reference_ber(df)
    df = main_slice(df[df["eval_ber"] == ber])
    plt = _plt()
    files = []
    for (ds, gen), part in df.groupby(["dataset", "generator"], sort=True):
        avg = average_seeds(part, ["target", "source"])
        targets = sorted(avg["target"].unique())
        sources = sorted(avg["source"].unique(), key=lambda s: (is_ensemble(s), s))
        fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(targets) + 2), 4.2), constrained_layout=True)
        w = 0.8 / max(len(sources), 1)
        x = np.arange(len(targets))
        for i, s in enumerate(sources):
            sub = avg[avg["source"] == s].set_index("target").reindex(targets)
            ax.bar(
                x + (i - (len(sources) - 1) / 2) * w,
                sub["rp"].to_numpy(dtype=float),
                w,
                yerr=_err(sub),
                capsize=3,
                label=f"trained on {s}" + (" (ensemble)" if is_ensemble(s) else ""),
                hatch="//" if is_ensemble(s) else None,
            )
        ax.set_xticks(x, targets)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("evaluated base model")
        ax.set_ylabel("RP (pp), ± std over chips")
        ax.set_title(f"{ds} · {gen}: ensemble vs single-model generators (evaluation BER {ber:g})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, out_dir, _slug("ensembles", ds, gen)))
    return files

"""Report section: input-side (NeuralFuse) vs weight-side (RandBET, clipping) protection on the same chips.

For each dataset × base model × evaluation BER, the options a deployer has, each scored on the same
evaluation chips (the eval items draw `evaluation_chip_seeds` for every base model alike, so chip k
has the same faulty cells under every option): the standard base model alone (PA), standard + a
generator trained for it (PA (NF)), a weight-protected base alone (e.g. RandBET, Stutz et al. 2021;
``base_training`` of the rows) and weight-protected + a generator trained for *that* model. Beside
the accuracy (mean ± std over chips): what each option costs — training device-hours measured from
the runs (the base item's epoch times, plus the generator's for NF options), inference energy saving
from the cost model (`nf_core.cost.network_saving` through the report's energy function, the same
numbers as section d and `nf select`), and whether it needs access to the base model's weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd

from orchestration.report.tables import average_seeds, frame

# base_training (nf_core.base_modes) → how the option is named on the page
MODE_LABEL = {"standard": "standard", "clip": "clipped", "randbet": "RandBET", "awp": "AWP"}
COLUMNS = [
    "dataset",
    "model",
    "eval_ber",
    "option",
    "accuracy",
    "accuracy_std",
    "chips",
    "train_hours",
    "energy_saving",
    "weight_access",
]

READING = (
    "Each group of bars is one dataset · base model · evaluation BER; every bar is scored on the same "
    "evaluation chips (error bars: std of the accuracy over those chips). Read across a group: the "
    "standard base alone is the unprotected floor; '+ NF' puts a generator in front of the unchanged "
    "model (input side); a weight-protected base (RandBET: clipping + random bit error training, Stutz "
    "et al. 2021) is retrained, so its accuracy includes what retraining cost in clean accuracy. The "
    "table prices each option: training device-hours measured from this sweep's runs (base training, "
    "plus the generator's for '+ NF'; on the device the sweep ran on), inference energy saving from the "
    "cost model (the generator runs at nominal voltage and costs its own accesses; a retrained base costs "
    "nothing extra at inference), and whether the option needs the base model's weights (retraining does; "
    "a generator needs only the model's outputs and input gradients, or only its predictions with a "
    "surrogate). Options agree only where every number came from the same chips, bits and fault model."
)


def has_weight_protection(rows: Any) -> bool:
    """Whether the rows hold generators of a base model trained in a mode other than standard."""
    df = frame(rows)
    return "base_training" in df and df["generator"].notna().any() and (df["base_training"] != "standard").any()


def options_table(
    rows: Any,
    energy: Callable[[str, str | None, str, float], float] | None = None,
    hours: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per dataset × model × evaluation BER × option (base training, with or without each generator);
    ``hours``: item id → device-hours (base and generator items); also the reasons an energy was left out."""
    df = frame(rows)
    df = df[df["generator"].notna() & (df["stage"].fillna("eval") == "eval")]
    df = df.assign(model=df["target"], base_training=df["base_training"].fillna("standard"))
    hours = hours or {}
    out: list[dict[str, Any]] = []
    why: list[str] = []

    def saving(model: str, gen: str | None, ds: str, ber: float) -> float | None:
        if energy is None:
            return None
        try:
            return energy(model, gen, ds, ber)
        except (ValueError, KeyError) as e:
            reason = str(e).split(";")[0]
            if reason not in why:
                why.append(reason)
            return None

    keys = ["dataset", "model", "eval_ber", "base_training"]
    for (ds, model, ber, mode), part in df.groupby(keys, sort=True):
        label = MODE_LABEL.get(mode, mode)
        base_h = _mean_hours(part, hours, "base")
        access = "no" if mode == "standard" else "yes (retrained)"
        # the base alone: every eval row of this base carries its PA on the same chips; one number
        base = average_seeds(part.assign(_b=0), ["_b"]).iloc[0]
        out.append(
            {
                "dataset": ds,
                "model": model,
                "eval_ber": ber,
                "option": f"{label} base",
                "base_training": mode,
                "generator": None,
                "accuracy": base["pa_mean"],
                "accuracy_std": base["pa_std"],
                "clean_accuracy": base["ca"],
                "chips": int(part["chips"].max()),
                "train_hours": base_h,
                "energy_saving": saving(model, None, ds, float(ber)),
                "weight_access": "no (unprotected)" if mode == "standard" else access,
            }
        )
        for gen, g in part.groupby("generator", sort=True):
            avg = average_seeds(g.assign(_b=0), ["_b"]).iloc[0]
            gen_h = _mean_hours(g, hours, "generator")
            out.append(
                {
                    "dataset": ds,
                    "model": model,
                    "eval_ber": ber,
                    "option": f"{label} + NF ({gen})",
                    "base_training": mode,
                    "generator": gen,
                    "accuracy": avg["pa_nf_mean"],
                    "accuracy_std": avg["pa_nf_std"],
                    "clean_accuracy": avg["ca_nf"],
                    "chips": int(g["chips"].max()),
                    "train_hours": None if base_h is None or gen_h is None else base_h + gen_h,
                    "energy_saving": saving(model, gen, ds, float(ber)),
                    "weight_access": "no (input side)" if mode == "standard" else access,
                }
            )
    cols = [*COLUMNS[:4], "base_training", "generator", "accuracy", "accuracy_std", "clean_accuracy", *COLUMNS[6:]]
    table = pd.DataFrame(out, columns=cols)
    # standard first, then the weight-protected modes; each base alone before its generators
    order = {m: i for i, m in enumerate(MODE_LABEL)}
    table = table.assign(
        _m=table["base_training"].map(lambda m: order.get(m, len(order))), _g=table["generator"].fillna("")
    )
    table = table.sort_values(["dataset", "model", "eval_ber", "_m", "_g"], kind="stable")
    return table.drop(columns=["_m", "_g"]).reset_index(drop=True), why


def _num(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(float(v), spec)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The options table as the page shows it: accuracy ± std over chips, hours to 3 significant digits."""
    return pd.DataFrame(
        {
            "dataset": table["dataset"],
            "base model": table["model"],
            "BER": [f"{b:g}" for b in table["eval_ber"]],
            "option": table["option"],
            "accuracy (%)": [
                f"{_num(a, '.2f')} ± {_num(s, '.2f')}" for a, s in zip(table["accuracy"], table["accuracy_std"])
            ],
            "CA (%)": [_num(v, ".2f") for v in table["clean_accuracy"]],
            "chips": table["chips"].astype(int).astype(str),
            "training (device-h)": [_num(v, ".3g") for v in table["train_hours"]],
            "ES (%)": [_num(v, ".1f") for v in table["energy_saving"]],
            "needs the weights": table["weight_access"],
        }
    )


def _mean_hours(part: pd.DataFrame, hours: dict[str, float], stage: str) -> float | None:
    """Device-hours of the base (``stage`` base) or generator items behind these eval rows, averaged over seeds."""
    ids = {(i, s) for i, s in zip(part["item_id"], part["seed"]) if isinstance(i, str)}
    found = []
    for item_id, _ in ids:
        gid = item_id.removeprefix("eval.")
        h = hours.get(gid) if stage == "generator" else hours.get(f"base-of:{gid}")
        if h is not None:
            found.append(h)
    return sum(found) / len(found) if found else None


def training_hours(cfg: Any, store: Any) -> dict[str, float]:
    """Measured training device-hours from the items' done.json (sum of the epochs' ``seconds``): generator
    item id → its hours, and ``base-of:<generator id>`` → the hours of the base item(s) it was trained for."""
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import read_done

    def hours(stage: str, item_id: str) -> float | None:
        done = read_done(store, stage, item_id)
        if done is None or not done.get("history"):
            return None
        return sum(float(h.get("seconds", 0.0)) for h in done["history"]) / 3600.0

    out: dict[str, float] = {}
    for it in plan(cfg)["generator"]:
        g = hours("generator", it.id)
        if g is not None:
            out[it.id] = g
        bases = [hours("base", b) for b in it.needs]
        if bases and all(b is not None for b in bases):
            out[f"base-of:{it.id}"] = sum(bases)
    return out


def figure(table: pd.DataFrame, out_dir: str) -> list[str]:
    """Accuracy (± std over chips) of every option, grouped by evaluation BER; one panel per dataset × model."""
    from orchestration.report.figures import Skip, _plt, _save

    if table.empty:
        raise Skip("the sweep has no weight-protected base model with a generator")
    plt = _plt()
    panels = list(table.groupby(["dataset", "model"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False, constrained_layout=True)
    options = list(dict.fromkeys(table["option"]))  # the table's order: standard first, each base before its NF
    colours = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(options))
    for ax, ((ds, model), part) in zip(axes[0], panels):
        bers = sorted(part["eval_ber"].unique())
        for j, opt in enumerate(options):
            sub = part[part["option"] == opt].set_index("eval_ber").reindex(bers)
            nf = "+ NF" in opt
            ax.bar(
                [i + (j - (len(options) - 1) / 2) * width for i in range(len(bers))],
                sub["accuracy"],
                width,
                yerr=sub["accuracy_std"].fillna(0),
                capsize=3,
                label=opt,
                color=colours(j),
                hatch="//" if nf else None,
                edgecolor="white" if nf else None,
            )
        ax.set_xticks(range(len(bers)), [f"{b:g}" for b in bers])
        ax.set_xlabel("evaluation BER")
        ax.set_ylabel("accuracy on the chips (%)")
        ax.set_title(f"{ds} · {model}")
        ax.set_ylim(0, 100)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(options)), fontsize=8)
    return [_save(fig, out_dir, "protection")]


def section(
    rows: Any,
    out_dir: str,
    energy: Callable[[str, str | None, str, float], float] | None,
    hours: dict[str, float] | None,
    add_table: Callable[[Any, pd.DataFrame, str, str, str], None],
    convention: str = "paper full-size networks (width 1)",
) -> Any:
    """The page section (figure, table, reading guidance), or None when the sweep compares no base-training modes."""
    from orchestration.report.figures import Skip
    from orchestration.report.html import Section

    if not has_weight_protection(rows):
        return None
    s = Section(
        "protection", "g. Input-side vs weight-side protection on the same chips", f"{READING} Energy: {convention}."
    )
    table, why = options_table(rows, energy, hours)
    try:
        s.figures += [f"figures/{n}" for n in figure(table, os.path.join(out_dir, "figures"))]
    except Skip as e:
        s.skipped = str(e)
        return s
    add_table(
        s,
        display_frame(table),
        out_dir,
        "protection",
        "Options per dataset × model × evaluation BER: accuracy (%) ± std over the same chips; CA, the clean accuracy; "
        "training device-hours measured from the runs (base, plus generator for NF); ES, the inference energy saving "
        f"(%, cost model; energy: {convention}); whether the option needs the base model's weights",
    )
    s.notes += [f"Energy left out: {w}" for w in why]
    return s

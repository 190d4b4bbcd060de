"""Operating-point selection: at which voltage to run a base model, with which generator.

Input: evaluation rows (one per generator × target model × evaluation BER, as the sweeps
write them: ``source``, ``target``, ``generator`` (None: no NeuralFuse), ``train_ber``, ``eval_ber``,
``ca``, ``pa_mean``, ``pa_nf_mean`` and, for percentiles, the per-chip lists ``pa_per_chip`` /
``pa_nf_per_chip``), an accuracy floor A, a voltage table, and the TWMA of every model and
generator (keyed by name, or by (dataset, name) when datasets differ in shape).

A weight-protected base model (``base_training`` of the rows, e.g. RandBET: Stutz et al. 2021) is a
deployment of its own: alone ("RandBET (weights retrained)") and with each generator trained for it;
they compete with the standard base's candidates, while the answer "without NeuralFuse" stays the
standard base alone (the unprotected reference).

A candidate with NeuralFuse is one generator: its source (the model(s) it was trained on), its
name, its training BER, on one target at one evaluation BER. A generator transferred from another
model is a candidate of its own, labelled with its source (``candidate_label``), never averaged with
the target's own generator of the same name; only repeated rows of one candidate (seeds) are averaged.

For each (dataset, target model, fault model) the answer is the candidate whose accuracy
statistic is ≥ A and whose total energy saving is largest (ES formula of the cost model, the
generator's own accesses at nominal voltage), ties broken by the higher BER, then accuracy. That
is the lowest voltage meeting A unless a generator costs more than the lower voltage saves: then
a higher voltage (or no generator) is the better answer, and it is the one given. The statistic
is the mean over chips, or the
q-th percentile of the per-chip accuracies (``percentile=10``: 90% of chips do at least this
well — a deployed chip is one draw, not the mean). Nominal voltage (BER 0, accuracy CA, ES 0) is
always a candidate, so "nothing meets A" means even the error-free model is below the floor.
The same answer without NeuralFuse is given beside it, so the gain is explicit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nf_core.cost import energy_saving
from nf_core.voltage import VoltageTable


@dataclass(frozen=True)
class Candidate:
    """One operating point of one base model: a BER (voltage), with or without a generator."""

    dataset: str
    model: str
    fault_model: str | None
    bits: int | None  # weight precision: 8- and 4-bit copies of a model are separate deployments
    generator: str | None  # None: the base model alone
    source: str | None  # what the generator was trained on (the model itself, another model, an ensemble)
    train_ber: float | None
    ber: float
    voltage: float | None
    energy_ratio: float
    accuracy: float  # the statistic (mean or percentile over chips), percent
    energy_saving: float  # percent, ES with the generator's accesses at nominal voltage
    meets: bool
    # the base model's training mode (nf_core.base_modes): a weight-protected base (e.g. RandBET) is a
    # deployment of its own, with or without a generator trained for it
    base_training: str = "standard"


def accuracy_statistic(mean: float | None, per_chip: Iterable[float] | None, percentile: float | None) -> float | None:
    """The mean over chips, or the ``percentile``-th percentile (linear interpolation) of the per-chip list."""
    if percentile is None:
        return None if mean is None else float(mean)
    chips = list(per_chip or [])
    if not chips:
        return None
    return float(np.percentile(np.asarray(chips, dtype=float), percentile))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def candidate_label(c: Mapping[str, Any] | Candidate) -> str:
    """The generator's name, with its source when it was trained on another model ("ConvS from vgg11")."""
    c = asdict(c) if isinstance(c, Candidate) else c
    mode = c.get("base_training") or "standard"
    retrained = f"{BASE_LABEL.get(mode, mode)} (weights retrained)"
    if c["generator"] is None:
        return "-" if mode == "standard" else retrained
    own = c.get("source") in (None, c["model"])
    name = c["generator"] if own else f"{c['generator']} from {c['source']}"
    return name if mode == "standard" else f"{name} on {retrained}"


# how a base-training mode is named in labels (Stutz et al. 2021's "RandBET")
BASE_LABEL = {"clip": "clipped", "randbet": "RandBET", "awp": "AWP"}


def _twma(twma: Mapping[Any, int], dataset: str | None, name: str, what: str) -> int:
    if (dataset, name) in twma:
        return twma[(dataset, name)]
    if name in twma:
        return twma[name]
    have = sorted({k[1] if isinstance(k, tuple) else k for k in twma})
    raise ValueError(f"no TWMA for {what} {name!r}; have: {', '.join(have)}")


def operating_candidates(
    rows: Iterable[Mapping[str, Any]],
    min_accuracy: float,
    table: VoltageTable,
    twma: Mapping[str, int],
    percentile: float | None = None,
    interpolate: bool = False,
) -> tuple[list[Candidate], list[str]]:
    """Every scored operating point, and notes on rows that could not be scored (and why)."""
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile!r} must be in [0, 100]")
    if not 0 <= min_accuracy <= 100:
        raise ValueError(f"min accuracy {min_accuracy!r} must be a percentage in [0, 100]")
    cands: dict[tuple, list[float]] = {}
    meta: dict[tuple, tuple] = {}
    notes: set[str] = set()
    for r in rows:
        dataset, model = r.get("dataset"), r.get("target") or r.get("source")
        fm, bits, ber = r.get("fault_model"), r.get("bits"), float(r["eval_ber"])
        mode = r.get("base_training") or "standard"
        base_twma = _twma(twma, dataset, model, "base model")
        try:
            point = table.point(ber, interpolate=interpolate)
        except ValueError as e:
            notes.add(f"BER {ber:g} skipped: {e}")
            continue
        # Without NeuralFuse: every row carries the base model's PA at its BER (same chips).
        stat = accuracy_statistic(r.get("pa_mean"), r.get("pa_per_chip"), percentile)
        if stat is not None:
            key = (dataset, model, fm, bits, None, None, None, ber, mode)
            cands.setdefault(key, []).append(stat)
            meta[key] = (point, energy_saving(base_twma, 0, point.energy_ratio))
        if not _missing(r.get("ca")):
            key = (dataset, model, fm, bits, None, None, None, 0.0, mode)
            cands.setdefault(key, []).append(float(r["ca"]))
            meta[key] = (table.point(0.0) if 0.0 in table.bers() else None, 0.0)
        gen = r.get("generator")
        if gen is None:
            continue
        stat = accuracy_statistic(r.get("pa_nf_mean"), r.get("pa_nf_per_chip"), percentile)
        if stat is None:
            notes.add(f"{model}/{gen} at BER {ber:g}: no per-chip PA (NF) list for the percentile; row skipped")
            continue
        gen_twma = _twma(twma, dataset, gen, "generator")
        key = (dataset, model, fm, bits, gen, r.get("source") or model, r.get("train_ber"), ber, mode)
        cands.setdefault(key, []).append(stat)
        meta[key] = (point, energy_saving(base_twma, gen_twma, point.energy_ratio))
    out = []
    for key, stats in cands.items():
        dataset, model, fm, bits, gen, source, train_ber, ber, mode = key
        point, es = meta[key]
        acc = float(np.mean(stats))  # repeated rows (seeds, several items) are averaged
        out.append(
            Candidate(
                dataset,
                model,
                fm,
                bits,
                gen,
                source,
                train_ber,
                ber,
                point.voltage if point else 1.0,
                point.energy_ratio if point else 1.0,
                acc,
                es,
                acc >= min_accuracy,
                mode,
            )
        )
    out.sort(
        key=lambda c: (
            c.dataset or "",
            c.model,
            c.fault_model or "",
            c.bits or 0,
            c.base_training != "standard",
            c.ber,
            c.generator or "",
            c.source or "",
            -1 if c.train_ber is None else c.train_ber,
        )
    )
    return out, sorted(notes)


def _best(cands: list[Candidate]) -> Candidate | None:
    ok = [c for c in cands if c.meets]
    if not ok:
        return None
    # most energy saved (generator included); then the lower voltage; then accuracy
    return max(ok, key=lambda c: (round(c.energy_saving, 9), c.ber, c.accuracy))


def select_operating_points(
    rows: Iterable[Mapping[str, Any]],
    min_accuracy: float,
    table: VoltageTable,
    twma: Mapping[str, int],
    percentile: float | None = None,
    interpolate: bool = False,
    energy_convention: str | None = None,
) -> dict[str, Any]:
    """Per base model: the chosen point with NeuralFuse, without it, and the gain (see module doc).
    ``energy_convention`` names the networks the TWMA was counted on (nf_core.cost.energy_convention).

    No scorable row at all (no evaluation BER has a voltage-table row) is a ValueError saying so."""
    rows = list(rows)
    cands, notes = operating_candidates(rows, min_accuracy, table, twma, percentile, interpolate)
    if not cands and rows:
        bers = ", ".join(f"{b:g}" for b in sorted({float(r["eval_ber"]) for r in rows}))
        have = ", ".join(f"{b:g}" for b in table.bers())
        how = "" if interpolate else ", or --interpolate between its rows"
        raise ValueError(
            f"no evaluation BER of the sweep ({bers}) has a row in voltage table {table.source} (BERs there: "
            f"{have}): nothing can be priced; pass --voltage-table with rows for them{how}"
        )
    statistic = "mean over chips" if percentile is None else f"{percentile:g}th percentile over chips"
    groups: dict[tuple, list[Candidate]] = {}
    for c in cands:
        groups.setdefault((c.dataset, c.model, c.fault_model, c.bits), []).append(c)
    models = []
    for (dataset, model, fm, bits), cs in groups.items():
        with_nf = _best(cs)  # nominal voltage and bare-model points compete too: NF is chosen only if it wins
        # the unprotected reference: the standard base alone (a retrained base competes in with_nf)
        without = _best([c for c in cs if c.generator is None and c.base_training == "standard"])
        meeting = [c for c in cs if c.meets and c.ber > 0]
        if with_nf is None:
            msg = f"no operating point meets the floor {min_accuracy:g}% ({statistic}), not even nominal voltage"
        elif with_nf.ber == 0 and meeting:
            best = max(meeting, key=lambda c: (c.energy_saving, c.ber, c.accuracy))
            what = candidate_label(best) if best.generator else "no NeuralFuse"
            msg = (
                f"{len(meeting)} lower-voltage point(s) meet the floor but none saves energy (best: {what} at "
                f"evaluation BER {best.ber:g}, ES {best.energy_saving:+.2f}%): nominal voltage is the answer"
            )
        elif with_nf.ber == 0:
            msg = "only nominal voltage meets the floor: no energy saving"
        elif with_nf.generator is None and with_nf.base_training != "standard":
            msg = f"evaluation BER {with_nf.ber:g} with {candidate_label(with_nf)}, no generator"
        elif with_nf.generator is None:
            msg = f"evaluation BER {with_nf.ber:g} without NeuralFuse; no generator saves more energy at this floor"
        else:
            trained = "a BER range" if with_nf.train_ber is None else f"BER {with_nf.train_ber:g}"
            msg = f"evaluation BER {with_nf.ber:g} with {candidate_label(with_nf)} (trained at {trained})"
        gain = None if with_nf is None or without is None else with_nf.energy_saving - without.energy_saving
        models.append(
            {
                "dataset": dataset,
                "model": model,
                "fault_model": fm,
                "bits": bits,
                "with_nf": asdict(with_nf) if with_nf else None,
                "without_nf": asdict(without) if without else None,
                "energy_saving_gain": gain,
                "message": msg,
            }
        )
    return {
        "min_accuracy": min_accuracy,
        "statistic": statistic,
        "percentile": percentile,
        "voltage_table": table.source,
        "energy_convention": energy_convention,
        "models": models,
        "candidates": [asdict(c) for c in cands],
        "notes": notes,
    }


def _cell(c: Mapping[str, Any] | None, key: str, spec: str) -> str:
    if c is None or c.get(key) is None:
        return "-"
    return format(c[key], spec)


def format_selection(sel: Mapping[str, Any]) -> str:
    """Console table: one line per base model, the chosen point with and without NeuralFuse."""
    head = [
        "dataset",
        "model",
        "bits",
        "generator",
        "training BER",
        "evaluation BER",
        "V (Vmin)",
        "acc",
        "ES %",
        "| no NF: evaluation BER",
        "V",
        "acc",
        "ES %",
        "| ES gain",
    ]
    body = []
    for m in sel["models"]:
        w, n = m["with_nf"], m["without_nf"]
        body.append(
            [
                m["dataset"] or "-",
                m["model"],
                str(m["bits"] or "-"),
                candidate_label(w) if w else "-",
                _cell(w, "train_ber", "g"),
                _cell(w, "ber", "g"),
                _cell(w, "voltage", ".4f"),
                _cell(w, "accuracy", ".2f"),
                _cell(w, "energy_saving", ".2f"),
                "| " + _cell(n, "ber", "g"),
                _cell(n, "voltage", ".4f"),
                _cell(n, "accuracy", ".2f"),
                _cell(n, "energy_saving", ".2f"),
                "| " + ("-" if m["energy_saving_gain"] is None else f"{m['energy_saving_gain']:+.2f}"),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head] + body]
    lines.insert(1, "-" * len(lines[0]))
    energy = f"; energy: {sel['energy_convention']}" if sel.get("energy_convention") else ""
    table = f"voltage table {sel['voltage_table']}"
    lines.append(f"floor {sel['min_accuracy']:g}% on the {sel['statistic']}; {table}{energy}")
    for m in sel["models"]:
        bits = "" if m["bits"] in (None, 8) else f" ({m['bits']}-bit)"
        lines.append(f"  {m['model']}{bits}: {m['message']}")
    lines += [f"  note: {n}" for n in sel["notes"]]
    return "\n".join(lines)


def selection_figure(sel: Mapping[str, Any], path: str) -> str:
    """Energy saving vs accuracy per base model; every candidate a dot, the chosen points starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sel["models"]
    fig, axes = plt.subplots(
        1, max(1, len(models)), figsize=(5 * max(1, len(models)), 4), squeeze=False, constrained_layout=True
    )
    for ax, m in zip(axes[0], models):
        cs = [
            c
            for c in sel["candidates"]
            if (c["dataset"], c["model"], c["fault_model"], c["bits"])
            == (m["dataset"], m["model"], m["fault_model"], m["bits"])
        ]
        series: dict[tuple, list] = {}  # one line per generator (source, training BER apart)
        for c in cs:
            key = (c["generator"] or "", c["source"] or "", c["train_ber"] or 0.0, c.get("base_training") or "standard")
            series.setdefault(key, []).append(c)
        for (gen, _, train_ber, mode), group in sorted(series.items()):
            pts = sorted(group, key=lambda c: c["energy_saving"])
            ax.plot(
                [c["energy_saving"] for c in pts],
                [c["accuracy"] for c in pts],
                "o-" if gen else "s--",
                label=f"{candidate_label(pts[0])}, training BER {train_ber:g}"
                if gen
                else ("no NeuralFuse" if mode == "standard" else candidate_label(pts[0])),
                color=None if gen or mode != "standard" else "gray",
                ms=4,
            )
        for key, marker, label in (("with_nf", "*", "chosen"), ("without_nf", "X", "chosen, no NF")):
            c = m[key]
            if c is not None:
                ax.plot([c["energy_saving"]], [c["accuracy"]], marker, ms=16, mfc="none", mec="red", mew=2, label=label)
        ax.axhline(sel["min_accuracy"], color="red", lw=0.8, ls=":")
        ax.set_title(f"{m['model']} ({m['dataset']}, {m['bits'] or '-'}-bit)", fontsize=10)
        energy = f", {sel['energy_convention']}" if sel.get("energy_convention") else ""
        ax.set_xlabel(f"energy saving % (weight-memory accesses, generator included{energy})")
        ax.set_ylabel(f"accuracy % ({sel['statistic']})")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "Candidate",
    "accuracy_statistic",
    "candidate_label",
    "format_selection",
    "operating_candidates",
    "select_operating_points",
    "selection_figure",
]

"""`nf select NAME --min-accuracy A`: the operating voltage of each base model of a finished sweep.

Reads the sweep's evaluation and transfer rows (with their per-chip accuracies), prices every
model and generator with the cost model (nf_core.cost: TWMA of the sweep's own networks, at its
``width``, or of the paper's full-size networks with ``--full-size``), and prints nf_core.select's
answer as a table (or JSON), writing the energy-vs-accuracy figure beside the sweep's results.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestration.store.roots import add_storage_args

EPILOG = """\
exit codes: 0 with an answer (an operating point, nominal voltage included) for at least one base
model, and the figure written; 2, with one `nf: error:` line saying why and no figure, when there
is none: no operating point meets the floor (not even nominal voltage), or no evaluation BER of
the sweep has a row in the voltage table (pass --voltage-table, or --interpolate)."""


def sweep_twma(rows: list[dict[str, Any]], width: float) -> dict[tuple[str, str], int]:
    """TWMA of every target model (at ``width``) and generator named in ``rows``, keyed by (dataset, name):
    nf_core.cost's counts, the ones `nf profile --width` and the report's energy section use."""
    from nf_core.cost import profile_generator, profile_model

    out: dict[tuple[str, str], int] = {}
    for r in rows:
        ds, model, gen = r["dataset"], r.get("target") or r["source"], r.get("generator")
        if (ds, model) not in out:
            out[ds, model] = profile_model(model, ds, width)["twma"]
        if gen is not None and (ds, gen) not in out:
            out[ds, gen] = profile_generator(gen, ds)["twma"]
    return out


def energy_width(cfg: Any, full_size: bool) -> float:
    """The width the energy is priced at: the sweep's own networks, or the paper's (1) with --full-size."""
    return 1.0 if full_size else float(cfg.width)


def _no_answer(sel: dict[str, Any]) -> str | None:
    """Why no base model has an operating point (None when one has)."""
    if any(m["with_nf"] is not None for m in sel["models"]):
        return None
    best = max(sel["candidates"], key=lambda c: c["accuracy"], default=None)
    top = "" if best is None else f"; the most accurate point is {best['model']} at {best['accuracy']:.2f}%"
    return (
        f"no operating point of any base model meets the floor --min-accuracy {sel['min_accuracy']:g} "
        f"({sel['statistic']}), not even nominal voltage{top}; lower the floor"
    )


def run_select(args: argparse.Namespace) -> int:
    from nf_core.cost import energy_convention
    from nf_core.select import format_selection, select_operating_points
    from nf_core.voltage import load_voltage_table
    from orchestration.store.cost_counts import sweep_counts
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import collect_rows, open_sweep

    table = load_voltage_table(args.voltage_table)  # bad tables fail before the sweep is read
    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    store = sweep_store(cfg)
    rows = collect_rows(cfg, store)
    if not rows:
        raise ValueError(f"sweep {args.name!r} has no finished evaluation rows yet (see `nf sweep status {args.name}`)")
    width = energy_width(cfg, args.full_size)
    with sweep_counts(store):
        twma = sweep_twma(rows, width)
    sel = select_operating_points(
        rows, args.min_accuracy, table, twma, args.percentile, args.interpolate, energy_convention(width)
    )
    why = _no_answer(sel)
    if why:
        raise ValueError(why)
    sel["figure"] = _write_figure(sel, args, store)
    if args.json:
        json.dump(sel, sys.stdout, indent=1)
        print()
    else:
        print(format_selection(sel))
        print(f"figure: {sel['figure']}")
    return 0


def _write_figure(sel: dict[str, Any], args: argparse.Namespace, store: Any) -> str:
    """The figure at --figure, else with the answer's JSON in the sweep's results/; returns where.

    The figure is drawn once per answer: when results/ already holds this very answer (its JSON equal,
    byte for byte) and its figure, they are kept (matplotlib costs more than the rest of the command)."""
    from nf_core.select import selection_figure

    if args.figure:
        return selection_figure(sel, args.figure)
    import tempfile

    tag = f"select_{args.min_accuracy:g}" + ("" if args.percentile is None else f"_p{args.percentile:g}")
    tag += "_full_size" if args.full_size else ""
    png, answer = f"results/{tag}.png", json.dumps(sel, indent=1).encode()
    if store.exists(png) and store.exists(f"results/{tag}.json") and store.read_bytes(f"results/{tag}.json") == answer:
        return store.url(png)
    with tempfile.TemporaryDirectory() as tmp:
        local = selection_figure(sel, f"{tmp}/{tag}.png")
        with open(local, "rb") as f:
            store.write_bytes(png, f.read())
    store.write_bytes(f"results/{tag}.json", answer)  # after the figure: a kill in between redraws next time
    return store.url(png)


def add_select_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "select",
        help="per base model: the lowest voltage meeting an accuracy floor, "
        "which generator, the energy saving (with and without NeuralFuse)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("name", help="sweep name")
    s.add_argument("--min-accuracy", type=float, required=True, help="accuracy floor A in percent")
    s.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="judge the q-th percentile of the per-chip accuracies instead of the mean (e.g. 10)",
    )
    s.add_argument("--voltage-table", default=None, help="CSV voltage,ber,energy_ratio (default: the shipped one)")
    s.add_argument(
        "--interpolate",
        action="store_true",
        help="BERs between table rows: interpolate in log BER (never extrapolated)",
    )
    s.add_argument(
        "--full-size",
        action="store_true",
        help="price energy on the paper's full-size networks (width 1) instead of the sweep's own (its `width`)",
    )
    s.add_argument("--figure", default=None, help="write the figure here (default: the sweep's results/)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_storage_args(s)
    s.set_defaults(func=run_select)

"""`nf select NAME --min-accuracy A`: the operating voltage of each base model of a finished sweep.

Reads the sweep's evaluation and transfer rows (with their per-chip accuracies), prices every
model and generator with the cost model (TWMA at the sweep's width), and prints nf_core.select's
answer as a table (or JSON), writing the energy-vs-accuracy figure beside the sweep's results.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestration.store.roots import add_storage_args


def sweep_twma(cfg, rows: list[dict[str, Any]]) -> dict[str, int]:
    """TWMA of every target model (built at the sweep's width) and generator named in ``rows``."""
    import torch

    from nf_core.cost import dataset_shape, twma
    from nf_core.generators import create_generator
    from nf_core.models import create_model

    out: dict[str, int] = {}
    for r in rows:
        classes, size = dataset_shape(r["dataset"])
        model, gen = r.get("target") or r["source"], r.get("generator")
        with torch.device("meta"):  # shapes only
            if model not in out:
                out[model] = twma(create_model(model, num_classes=classes, input_size=size, width=cfg.width), size)
            if gen is not None and gen not in out:
                out[gen] = twma(create_generator(gen, input_size=size), size)
    return out


def run_select(args: argparse.Namespace) -> int:
    from nf_core.select import (
        format_selection,
        select_operating_points,
        selection_figure,
    )
    from nf_core.voltage import load_voltage_table
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import collect_rows, open_sweep

    table = load_voltage_table(args.voltage_table)  # bad tables fail before the sweep is read
    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    store = sweep_store(cfg)
    rows = collect_rows(cfg, store)
    if not rows:
        raise ValueError(f"sweep {args.name!r} has no finished evaluation rows yet (see `nf sweep status {args.name}`)")
    sel = select_operating_points(
        rows, args.min_accuracy, table, sweep_twma(cfg, rows), args.percentile, args.interpolate
    )
    tag = f"select_{args.min_accuracy:g}" + ("" if args.percentile is None else f"_p{args.percentile:g}")
    fig = args.figure or None
    if fig is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            local = selection_figure(sel, f"{tmp}/{tag}.png")
            with open(local, "rb") as f:
                store.write_bytes(f"results/{tag}.png", f.read())
            store.write_bytes(f"results/{tag}.json", json.dumps(sel, indent=1).encode())
        sel["figure"] = store.url(f"results/{tag}.png")
    else:
        sel["figure"] = selection_figure(sel, fig)
    if args.json:
        json.dump(sel, sys.stdout, indent=1)
        print()
    else:
        print(format_selection(sel))
        print(f"figure: {sel['figure']}")
    return 0


def add_select_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "select",
        help="per base model: the lowest voltage meeting an accuracy floor, "
        "which generator, the energy saving (with and without NeuralFuse)",
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
    s.add_argument("--figure", default=None, help="write the figure here (default: the sweep's results/)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_storage_args(s)
    s.set_defaults(func=run_select)

"""`nf report`'s command line: cheap to import (pandas and matplotlib load only when it runs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from orchestration.store.roots import add_storage_args


def add_parser(sub: Any) -> None:
    """`nf report NAME [--storage …] [--out DIR] [--embeddings] [--open]` on the CLI's subparsers."""
    p = sub.add_parser("report", help="a sweep's results as an offline HTML page with figures and tables")
    p.add_argument("name", nargs="+", help="the sweep's name (several: one report each)")
    add_storage_args(p)
    p.add_argument("--out", default=None, help="output folder (default: <storage>/<name>/report/)")
    p.add_argument(
        "--voltage-table",
        default=None,
        help="CSV voltage,ber,energy_ratio for the energy figure (default: the shipped paper table)",
    )
    p.add_argument(
        "--full-size",
        action="store_true",
        help="price the energy section on the paper's full-size networks (width 1) instead of the sweep's own",
    )
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="add the t-SNE embeddings (paper Fig. 15) and transformed inputs (Figs. 16-17), drawn from the "
        "stored ConvL/ConvS checkpoints (tens of seconds: t-SNE)",
    )
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """The body of `nf report`: build the page, print its path, optionally open it."""
    from orchestration.report.build import report_sweep

    names = args.name if isinstance(args.name, list) else [args.name]
    for name in names:
        # several sweeps and --out: one sub-folder each, so no report overwrites another
        out = os.path.join(args.out, name) if args.out and len(names) > 1 else args.out
        index = report_sweep(
            name,
            args.storage,
            out,
            args.s3_endpoint,
            args.voltage_table,
            full_size=args.full_size,
            embeddings=args.embeddings,
        )
        print(f"report: {os.path.abspath(index)}")
        if args.open:
            import pathlib
            import webbrowser

            webbrowser.open(pathlib.Path(index).resolve().as_uri())
    return 0

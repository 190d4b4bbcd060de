"""`nf profile`: parameters, MACs, TWMA and energy saving of base models and generators.

    nf profile --model NAME --dataset DATASET [--generator NAME] [--ber P] [--width W] [--json]
    nf profile --generator NAME --dataset DATASET [--json]
    nf profile --all --dataset DATASET [--ber P] [--width W] [--out FILE.csv|FILE.parquet] [--json]

The figures come from nf_core.cost (its shipped counts table answers without importing torch);
base models are the paper's full-size networks unless --width gives a sweep's channel multiplier,
and every saving is printed with the networks it was priced on.
`python -m orchestration.commands.profile ARGS` runs the same command standalone.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

OUT_SUFFIXES = (".csv", ".parquet")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME", help="registered base model (resnet18 resnet50 vgg11 vgg16 vgg19 vit)")
    p.add_argument(
        "--generator", metavar="NAME", help="registered generator (ConvL ConvS DeConvL DeConvS UNetL UNetS, or UIP)"
    )
    p.add_argument(
        "--dataset",
        metavar="DATASET",
        required=True,
        help="sets classes and input size: cifar10 cifar100 gtsrb imagenet10 digits",
    )
    p.add_argument(
        "--ber",
        type=float,
        metavar="P",
        help="bit-error rate of the low voltage (e.g. 0.01); adds energy savings in percent",
    )
    p.add_argument(
        "--voltage-table",
        metavar="PATH",
        help="CSV with columns voltage,ber,energy_ratio (default: the paper's point, BER 0.01 -> 0.694)",
    )
    p.add_argument(
        "--width",
        type=float,
        default=1.0,
        metavar="W",
        help="channel multiplier of the base models, as a sweep's `width` (default 1: the paper's full-size networks)",
    )
    p.add_argument("--all", action="store_true", help="every base model x the paper's six generators")
    p.add_argument("--out", metavar="FILE", help="with --all: also write the table as .csv or .parquet")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--latency",
        type=int,
        nargs="?",
        const=100,
        metavar="RUNS",
        help="with --model: also time batch-1 inference of the model alone and with --generator (default: "
        "the paper's six), median and p90 over RUNS timed runs (default 100) on this machine, its GPU if it "
        "has one (paper Table 9)",
    )


def _add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    from orchestration.store.roots import add_storage_args

    p.add_argument(
        "--sweep",
        metavar="NAME",
        help="with --latency: also store the timings in sweep NAME's storage (latency/), where `nf report NAME` "
        "reads them (the report never times anything itself)",
    )
    add_storage_args(p)


def add_profile_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `profile` on the `nf` CLI's subparsers; dispatch to run_profile(args)."""
    p = subparsers.add_parser(
        "profile",
        help="parameters, MACs, TWMA and energy saving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    _add_sweep_arguments(p)
    p.set_defaults(func=run_profile)


def _check_combination(args: argparse.Namespace) -> None:
    if not args.width > 0:
        raise ValueError(f"--width {args.width:g} must be > 0 (channel multiplier; 1 = the paper's networks)")
    if args.width != 1.0 and not (args.model or args.all):
        raise ValueError("--width scales base models; add --model NAME or --all (generators have no width)")
    if args.all and (args.model or args.generator):
        raise ValueError("--all profiles every model and generator; drop --model/--generator")
    if not args.all and not (args.model or args.generator):
        raise ValueError("give --model NAME, --generator NAME, or --all")
    if args.ber is not None and not args.all and not (args.model and args.generator):
        raise ValueError(
            "--ber needs --model and --generator (or --all): energy saving compares a base model "
            "at low voltage plus its generator at nominal voltage with the base model at nominal"
        )
    if getattr(args, "sweep", None) and args.latency is None:
        raise ValueError("--sweep stores latency timings; add --latency")
    if args.latency is not None and args.all:
        raise ValueError("--latency times one base model; use --model NAME instead of --all")
    if args.out and not args.all:
        raise ValueError("--out writes the --all table; add --all")
    if args.out and Path(args.out).suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"--out {args.out!r}: the file name must end in {' or '.join(OUT_SUFFIXES)}")


def _grid(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """First column left-aligned (names), the rest right-aligned (numbers)."""
    from orchestration.tables import table

    return table(header, rows, ["left"] + ["right"] * (len(header) - 1))


def _counts(named: list[tuple[str, dict]]) -> str:
    return _grid(
        ["", "params", "MACs", "TWMA"], [[n, f"{p['params']:,}", f"{p['macs']:,}", f"{p['twma']:,}"] for n, p in named]
    )


def _title(dataset: str, width: float = 1.0) -> str:
    from nf_core.cost import dataset_shape

    classes, size = dataset_shape(dataset)
    scaled = "" if width == 1.0 else f", base models at width {width:g}"
    return f"{dataset} ({size}x{size} input, {classes} classes{scaled})"


def _single_text(args: argparse.Namespace, result: dict, ratio: float | None) -> str:
    from nf_core.cost import energy_convention

    if not (args.model and args.generator):
        name = args.model or args.generator
        return f"{name} on {_title(args.dataset, args.width)}\n{_counts([(name, result)])}"
    text = f"{args.model} + {args.generator} on {_title(args.dataset, args.width)}\n"
    text += _counts([(args.model, result["model"]), (args.generator, result["generator"])])
    if ratio is not None:
        text += (
            f"\nenergy saving at BER {args.ber:g} (e_LV/e_NV = {ratio:g}): "
            f"{result['energy_saving']:.1f}% by TWMA, {result['mac_energy_saving']:.1f}% by MACs"
            f"  (energy: {energy_convention(args.width)})"
        )
    return text


def _pivot(rows: list[dict], key: str) -> str:
    gens = list(dict.fromkeys(r["generator"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["generator"]): r[key] for r in rows}
    return _grid(["", *gens], [[m, *(f"{cell[m, g]:.1f}" for g in gens)] for m in models])


def _table_text(dataset: str, rows: list[dict], width: float = 1.0) -> str:
    from nf_core.cost import energy_convention

    counts: dict[str, dict] = {}  # each model, then each generator, once, in table order
    for role in ("model", "generator"):
        for r in rows:
            counts.setdefault(r[role], {k: r[f"{role}_{k}"] for k in ("params", "macs", "twma")})

    def paper(tables: str) -> str:  # the paper's tables hold the full-size networks only
        return f" (paper {tables})" if width == 1.0 else ""

    parts = [f"{_title(dataset, width)}: parameters, MACs, TWMA{paper('Tables 6, 7')}", _counts(list(counts.items()))]
    if rows and rows[0]["energy_ratio"] is not None:
        where = f"at BER {rows[0]['ber']:g}, e_LV/e_NV = {rows[0]['energy_ratio']:g}"
        where += f"; energy: {energy_convention(width)}"
        parts += [
            "",
            f"Energy saving (%) by TWMA {where}{paper('Table 2')}",
            _pivot(rows, "energy_saving"),
            "",
            f"Energy saving (%) by MACs {where}{paper('Table 8')}",
            _pivot(rows, "mac_energy_saving"),
        ]
    return "\n".join(parts)


def write_table(rows: list[dict], path: str | Path) -> None:
    """Write profile_table rows as CSV, or as Parquet when pyarrow is installed."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"writing {str(path)!r} needs pyarrow, which is not installed; "
                f"pip install pyarrow, or write a .csv file"
            ) from None
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(args: argparse.Namespace) -> int:
    from nf_core import cost

    _check_combination(args)
    cost.dataset_shape(args.dataset)  # unknown dataset fails before any work
    table = cost.load_voltage_table(args.voltage_table) if (args.ber is not None or args.voltage_table) else None
    if args.all:
        rows = cost.profile_table(args.dataset, args.ber, table, width=args.width)
        if args.out:
            write_table(rows, args.out)
        print(json.dumps(rows, indent=2) if args.json else _table_text(args.dataset, rows, args.width))
        if args.out:
            print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
        return 0
    if args.model and args.generator:
        result = cost.profile_pair(args.model, args.generator, args.dataset, args.ber, table, args.width)
        if args.ber is not None:
            result["energy_convention"] = cost.energy_convention(args.width)
    elif args.model:
        result = cost.profile_model(args.model, args.dataset, args.width)
    else:
        result = cost.profile_generator(args.generator, args.dataset)
    ratio = table.energy_ratio(args.ber) if args.ber is not None else None
    text = _single_text(args, result, ratio)
    lat = _latency(args) if args.latency is not None else None
    if lat is not None:  # JSON: the counts as before, under "latency" the timings
        result = {**(result if args.generator else {"model": result}), "latency": lat}
    print(json.dumps(result) if args.json else text + _latency_text(lat))
    if lat is not None and getattr(args, "sweep", None):
        from orchestration.report.appendix import store_latency

        where = store_latency(args.sweep, lat, args.storage, args.s3_endpoint)
        print(f"latency stored: {where}  (shown by nf report {args.sweep})", file=sys.stderr)
    return 0


def _latency(args: argparse.Namespace) -> dict:
    """Table 9: measured batch-1 latency (nf_core.latency) of --model alone and with the generator(s)."""
    from nf_core.generators import PAPER_GENERATORS
    from nf_core.latency import latency_table

    if not args.model:
        raise ValueError("--latency times a base model; add --model NAME")
    if args.latency < 1:
        raise ValueError(f"--latency {args.latency}: the number of timed runs must be >= 1")
    gens = [args.generator] if args.generator else list(PAPER_GENERATORS)
    return latency_table(args.model, args.dataset, gens, runs=args.latency, width=getattr(args, "width", None) or 1.0)


def _latency_text(lat: dict | None) -> str:
    if lat is None:
        return ""
    rows = [
        [
            lat["model"] + (f" + {r['generator']}" if r["generator"] else ""),
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            "" if r["added_ms"] is None else f"{r['added_ms']:+.2f}",
        ]
        for r in lat["rows"]
    ]
    head = f"\n\nlatency at batch size 1 (paper Table 9), {lat['runs']} runs after {lat['warmup']} warm-up"
    head += f", on {lat['device']}"
    return head + "\n" + _grid(["", "median ms", "p90 ms", "added ms"], rows)


def run_profile(args: argparse.Namespace) -> int:
    """Run `nf profile`; returns the exit code (2 with one `nf: error: …` line on stderr for bad input)."""
    from orchestration.errors import EXIT_USAGE

    try:
        return _run(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        print(f"nf: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: `python -m orchestration.commands.profile --model resnet18 --dataset cifar10`."""
    parser = argparse.ArgumentParser(
        prog="nf profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_arguments(parser)
    return run_profile(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

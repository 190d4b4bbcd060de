"""`nf`: the user's command. Sweeps (Ray Tune + MLflow), the single-process pipeline, the cost model.

Only the standard library is imported here and in orchestration/commands/ at module level:
each command imports torch, Ray, MLflow … when it runs, so `nf --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from orchestration import errors
from orchestration.commands import export, listing, profile, select, single, sweep
from orchestration.report import command as report


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nf (neuralfuse-sweeps) {version('neuralfuse-sweeps')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "nf (neuralfuse-sweeps) unknown version (not installed)"


class _Version(argparse.Action):
    """`nf --version`: the installed package's version (read lazily: no metadata scan behind `nf --help`)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `nf` parser with every subcommand; each sets ``func(args) -> exit code``."""
    p = argparse.ArgumentParser(
        prog="nf",
        description="NeuralFuse experiments and sweeps",
        epilog=errors.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_Version, help="print the package version and exit")
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback too")
    sub = p.add_subparsers(dest="command", required=True)
    sweep.add_parsers(sub)  # demo, sweep run|resume|status|plan, ui
    single.add_parser(sub)  # the in-process pipeline (nf_core only)
    profile.add_profile_parser(sub)  # the cost model
    report.add_parser(sub)  # nf report NAME: the results as an offline page
    select.add_select_parser(sub)  # nf select NAME --min-accuracy A: the operating voltage
    listing.add_parser(sub)  # nf list models|generators|datasets
    export.add_parser(sub)  # nf export NAME ITEM --onnx OUT: a generator as ONNX, checked with onnxruntime
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `nf ARGS`. Any failure ends with one `nf: error: …` line and the exit code of
    ``orchestration.errors`` (listed in `nf --help`); `--debug` prints the traceback as well."""
    args = build_parser().parse_args(argv)  # usage errors: argparse's own line, exit code 2
    try:
        # SIGTERM/SIGHUP end a command the way Ctrl-C does: its clean-ups run (servers stopped,
        # MLflow runs ended KILLED) instead of the process vanishing mid-write.
        with errors.signals_raise():
            return int(args.func(args) or 0)
    except BaseException as e:  # noqa: BLE001 (every failure, interrupts included, becomes one line)
        if isinstance(e, SystemExit):
            raise
        code, line = errors.describe(e)
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"nf: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""`nf`: the user's command. Sweeps (Ray Tune + MLflow), the single-process pipeline, the cost model.

Only the standard library is imported here and in orchestration/commands/ at module level:
each command imports torch, Ray, MLflow … when it runs, so `nf --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from orchestration.commands import profile, select, single, sweep
from orchestration.report import command as report


def build_parser() -> argparse.ArgumentParser:
    """The `nf` parser with every subcommand; each sets ``func(args) -> exit code``."""
    p = argparse.ArgumentParser(prog="nf", description="NeuralFuse experiments and sweeps")
    sub = p.add_subparsers(dest="command", required=True)
    sweep.add_parsers(sub)  # demo, sweep run|resume|status|plan, ui
    single.add_parser(sub)  # the in-process pipeline (nf_core only)
    profile.add_profile_parser(sub)  # the cost model
    report.add_parser(sub)  # nf report NAME: the results as an offline page
    select.add_select_parser(sub)  # nf select NAME --min-accuracy A: the operating voltage
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `nf ARGS`; bad input ends with one `nf: error: …` line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
        print(f"nf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

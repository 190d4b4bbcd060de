"""The `nf` command."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from nf_core.pipeline import PipelineConfig, format_results, run_pipeline


def _demo(args: argparse.Namespace) -> int:
    default = PipelineConfig()
    # dataclasses.replace re-runs the configs' validation on the user's values
    cfg = PipelineConfig(model=args.model, generator=args.generator, device=args.device,
                         base=replace(default.base, epochs=args.base_epochs),
                         eopm=replace(default.eopm, ber=args.ber, epochs=args.generator_epochs))
    res = run_pipeline(cfg, args.out)
    print()
    print(f"{cfg.model} + {cfg.generator} on {cfg.dataset}")
    print(format_results(res))
    print(f"\ncheckpoints and results.json in {args.out}  ({res['seconds']:.0f} s)")
    return 0


def add_core_commands(sub: argparse._SubParsersAction, pipeline_name: str = "demo") -> None:
    """nf_core's commands: the single-process pipeline (as ``pipeline_name``) and `profile`."""
    d = sub.add_parser(pipeline_name, help="one experiment in one process on the offline digits dataset "
                                           "(train base → train generator → evaluate; CPU, a few minutes)")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--model", default="resnet18")
    d.add_argument("--generator", default="ConvS")
    d.add_argument("--ber", type=float, default=0.04)
    d.add_argument("--base-epochs", type=int, default=8)
    d.add_argument("--generator-epochs", type=int, default=5)
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_demo)
    try:
        from nf_core.profile_cli import add_profile_parser, run_profile
    except ImportError:  # the cost model is optional until it lands
        pass
    else:
        add_profile_parser(sub)
        sub.choices["profile"].set_defaults(func=run_profile)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nf", description="NeuralFuse experiments")
    add_core_commands(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        print(f"nf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

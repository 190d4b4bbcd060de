"""`nf single`: one experiment in one process with nf_core alone (no Ray, no MLflow)."""

from __future__ import annotations

import argparse
from typing import Any


def _single(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nf_core.pipeline import PipelineConfig, run_pipeline

    default = PipelineConfig()
    # dataclasses.replace re-runs the configs' validation on the user's values
    cfg = PipelineConfig(
        dataset=args.dataset,
        root=args.root,
        model=args.model,
        width=args.width,
        generator=args.generator,
        device=args.device,
        base=replace(default.base, epochs=args.base_epochs),
        eopm=replace(default.eopm, ber=args.ber, epochs=args.generator_epochs, generator_bits=args.generator_bits),
    )
    res = run_pipeline(cfg, args.out)
    print()
    print(format_results(res))
    print(f"\ncheckpoints and results.json in {args.out}  ({res['seconds']:.0f} s)")
    return 0


def format_results(res: dict[str, Any]) -> str:
    """One evaluation (nf_core.pipeline.run_pipeline's result) as a title line and a one-row table."""
    from orchestration.tables import table

    head = (
        f"{res['model']} + {res['generator']} on {res['dataset']}: BER {res['ber']:g} ({res['fault_model']}, "
        f"{res['layout']} layout, {res['bits']}-bit), {res['chips']} chips"
    )
    cols = ["CA", "PA", "CA (NF)", "PA (NF)", "RP", "RP / M params"]
    row = [
        f"{res['ca']:.2f}",
        f"{res['pa_mean']:.2f} ± {res['pa_std']:.2f}",
        f"{res['ca_nf']:.2f}",
        f"{res['pa_nf_mean']:.2f} ± {res['pa_nf_std']:.2f}",
        _rp(res),
        f"{res['efficiency']:.1f}",
    ]
    return head + "\n" + table(cols, [row], "right")


def _rp(res: dict) -> str:
    """RP ± the std over chips of the paired per-chip RP (the sweep's tables use the same function)."""
    from orchestration.store.results import recovery_std

    std = recovery_std(res.get("pa_per_chip"), res.get("pa_nf_per_chip"))
    return f"{res['rp']:+.2f}" + ("" if std is None else f" ± {std:.2f}")


def _bits_or_none(text: str) -> int | None:
    """argparse type of --generator-bits: an integer number of bits, or none/null/float for full precision."""
    if text.lower() in ("none", "null", "float"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of bits; use an integer such as 8, or none"
        ) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `single` on the `nf` parser."""
    d = sub.add_parser(
        "single",
        help="one experiment in one process, nf_core only (train base → train generator "
        "→ evaluate; on digits: CPU, a few minutes)",
    )
    d.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded, no download; default), cifar10, cifar100, gtsrb or imagenet10 (need --root)",
    )
    d.add_argument("--root", default=None, help="directory holding the dataset's files (not needed for digits)")
    d.add_argument(
        "--model", default="resnet18", help="base model: resnet18 resnet50 vgg11 vgg16 vgg19 (default: resnet18)"
    )
    d.add_argument(
        "--width",
        type=float,
        default=0.25,
        help="channel-width multiplier of the base model; 1.0 is the paper's architecture (default: 0.25)",
    )
    d.add_argument(
        "--generator",
        default="ConvS",
        help="generator: ConvL ConvS DeConvL DeConvS UNetL UNetS or UIP (default: ConvS)",
    )
    d.add_argument("--ber", type=float, default=0.04, help="bit-error rate the generator is trained at (default: 0.04)")
    d.add_argument(
        "--generator-bits",
        type=_bits_or_none,
        default=8,
        metavar="B",
        help="bits of the generator's fake-quantized weights, as the authors ran them; "
        "'none' trains and evaluates it in float (default: 8)",
    )
    d.add_argument("--base-epochs", type=int, default=8, help="epochs of QAT base-model training (default: 8)")
    d.add_argument("--generator-epochs", type=int, default=5, help="epochs of EOPM generator training (default: 5)")
    d.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    d.add_argument(
        "--out", default="runs/single", help="output folder for checkpoints and results.json (default: runs/single)"
    )
    d.set_defaults(func=_single)

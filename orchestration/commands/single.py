"""`nf single`: one experiment in one process with nf_core alone (no Ray, no MLflow)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# nf single's stage settings: the sweep's defaults (the paper's) with a short, CPU-sized base training.
SINGLE_BASE = {"batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"}
SINGLE_GENERATOR = {"batch_size": 64}
SINGLE_GRID = {"lam": 5.0, "n": 5, "fault_model": "stuck_at", "layout": "wrap", "bits": 8, "seed": 0}
EVAL_CHIPS = 10


def _single(args: argparse.Namespace) -> int:
    res = run_single(args)
    print()
    print(format_results(res))
    print(f"\ncheckpoints and results.json in {args.out}  ({res['seconds']:.0f} s)")
    return 0


def run_single(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Base model → generator → evaluation in this process, with the trainables' stage functions
    (orchestration/sweep/experiment.py); checkpoints and results.json go to ``args.out``."""
    import json
    import os
    import time
    from dataclasses import asdict

    from nf_core.checkpoint import save_checkpoint
    from nf_core.data import load_dataset, make_loader
    from nf_core.evaluate import evaluate, evaluation_chip_seeds
    from nf_core.generators import create_generator
    from nf_core.models import MODELS
    from orchestration.spec.config import BaseStage, GeneratorStage
    from orchestration.spec.trial import BaseSpec, GeneratorSpec
    from orchestration.sweep.experiment import (
        base_train_config,
        generator_train_config,
        train_base_stage,
        train_generator_stage,
        trained_generator,
    )

    g = SINGLE_GRID
    base_spec = BaseSpec(args.dataset, args.model, g["bits"], g["seed"], args.width)
    gen_spec = GeneratorSpec(
        dataset=args.dataset,
        source=(args.model,),
        generator=args.generator,
        ber=args.ber,
        generator_bits=args.generator_bits,
        width=args.width,
        **g,
    )
    base_stage = BaseStage(epochs=args.base_epochs, **SINGLE_BASE)
    gen_stage = GeneratorStage(epochs=args.generator_epochs, generator_bits=args.generator_bits, **SINGLE_GENERATOR)
    # Everything is checked before any compute: the training configs, then the names.
    base_cfg, gen_cfg = base_train_config(base_spec, base_stage), generator_train_config(gen_spec, gen_stage)
    MODELS.get(args.model)
    ds = load_dataset(args.dataset, args.root)
    create_generator(args.generator, ds.input_size, args.generator_bits)
    t0 = time.perf_counter()
    log(f"[1/3] QAT base model {args.model} (width {args.width}) on {args.dataset}: {args.base_epochs} epochs")
    base_ckpt, base = train_base_stage(
        base_spec,
        base_stage,
        ds,
        args.device,
        on_epoch=lambda e, m, c: log(f"  epoch {e}: loss {m['loss']:.3f} train acc {m['train_acc']:.1f}%"),
    )
    gbits = "float" if args.generator_bits is None else f"{args.generator_bits}-bit"
    log(
        f"[2/3] EOPM generator {args.generator} ({gbits}): BER {args.ber:g} ({g['fault_model']}, {g['layout']}), "
        f"λ {g['lam']:g}, N {g['n']}, {args.generator_epochs} epochs"
    )
    gen_ckpt = train_generator_stage(
        gen_spec,
        gen_stage,
        ds,
        [base],
        args.device,
        on_epoch=lambda ep, m, c: log(f"  epoch {ep}: loss {m['loss']:.3f}"),
    )
    log(f"[3/3] evaluation on {EVAL_CHIPS} chips")
    test = make_loader(ds.test, 256, shuffle=False)
    # G runs with the weights it was trained with: b-bit when it was trained quantized
    gen = trained_generator(gen_ckpt, args.generator, ds.input_size, args.device)
    res = evaluate(base, test, gen_cfg.chip, gen, evaluation_chip_seeds(EVAL_CHIPS))
    res.update(
        dataset=args.dataset,
        model=args.model,
        generator=args.generator,
        generator_bits=args.generator_bits,
        lam=g["lam"],
        n_chips=g["n"],
        seconds=time.perf_counter() - t0,
    )
    os.makedirs(args.out, exist_ok=True)
    save_checkpoint(base_ckpt, os.path.join(args.out, "base.pt"))
    save_checkpoint(gen_ckpt, os.path.join(args.out, "generator.pt"))
    config = {
        "dataset": args.dataset,
        "root": args.root,
        "model": args.model,
        "width": args.width,
        "generator": args.generator,
        "base": asdict(base_cfg),
        "eopm": asdict(gen_cfg),
        "eval_chips": EVAL_CHIPS,
        "device": args.device,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"config": config, "results": res}, f, indent=2)
    return res


def format_results(res: dict[str, Any]) -> str:
    """One evaluation (`run_single`'s result) as a title line and a one-row table."""
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


def _epochs(text: str) -> int:
    """argparse type of the epoch counts: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of epochs; use an integer >= 1")
    return n


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
    d.add_argument("--base-epochs", type=_epochs, default=8, help="epochs of QAT base-model training (default: 8)")
    d.add_argument("--generator-epochs", type=_epochs, default=5, help="epochs of EOPM generator training (default: 5)")
    d.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    d.add_argument(
        "--out", default="runs/single", help="output folder for checkpoints and results.json (default: runs/single)"
    )
    d.set_defaults(func=_single)

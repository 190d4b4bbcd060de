"""One BER-conditioned generator vs per-BER generators, and the operating point nf select picks (digits, CPU).

A QAT base model is trained once. Three ConvS generators are trained by EOPM, one at each
evaluation BER, and one ConvS_BER (ConvS + 27 parameters) with each batch's chips at a BER drawn
log-uniformly from [min, max] of those BERs — the same epochs, batch size, N and λ as each
per-BER generator. Every generator is evaluated at every BER on the same fixed chips (ConvS_BER
at the chip's BER). The rows then go through nf_core.select (what `nf select` runs on a sweep's
rows) with a voltage table on the documented curve (nf_core.voltage.curve_point; the digits
BERs lie above the shipped table's range, so this table is modelled, not measured).
Run: .venv/bin/python benchmarks/bench_beyond.py [--base-epochs 5] [--epochs 4] [--bers 0.02 0.03 0.05]
(about 2-3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import time

import torch

from nf_core.ber_conditioned import BERRange, operating_ber
from nf_core.chips import ChipConfig
from nf_core.cost import twma
from nf_core.data import load_dataset, make_loader
from nf_core.deployed import DeployedModel
from nf_core.evaluate import evaluate, evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.select import format_selection, select_operating_points
from nf_core.train import (
    BaseTrainConfig,
    GeneratorTrainConfig,
    train_base,
    train_generator,
)
from nf_core.voltage import curve_point, parse_voltage_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--base-epochs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4, help="EOPM epochs of every generator")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--chips", type=int, default=10)
    ap.add_argument("--bers", type=float, nargs="+", default=[0.02, 0.03, 0.05])
    ap.add_argument("--min-accuracy", type=float, nargs="+", default=[90.0, 80.0])
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model(args.model, ds.num_classes, ds.input_size, args.width)
    train_base(
        model,
        ds.train,
        BaseTrainConfig(epochs=args.base_epochs, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine"),
    )
    base = DeployedModel(model)
    test = make_loader(ds.test, 256, shuffle=False)
    seeds = evaluation_chip_seeds(args.chips)
    gens, train_s = {}, {}
    for ber in args.bers:
        torch.manual_seed(1)
        g = create_generator("ConvS")
        t = time.perf_counter()
        train_generator(
            g, [base], ds.train, GeneratorTrainConfig(ber=ber, epochs=args.epochs, batch_size=64, n_chips=args.n)
        )
        gens[f"ConvS@{ber:g}"], train_s[f"ConvS@{ber:g}"] = g, time.perf_counter() - t
    torch.manual_seed(1)
    g = create_generator("ConvS_BER")
    t = time.perf_counter()
    rng = BERRange(min(args.bers), max(args.bers), log=True)
    train_generator(
        g, [base], ds.train, GeneratorTrainConfig(ber=rng, epochs=args.epochs, batch_size=64, n_chips=args.n)
    )
    gens["ConvS_BER"], train_s["ConvS_BER"] = g, time.perf_counter() - t
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in gens.items()}

    rows, acc = [], {}
    for ber in args.bers:
        chip = ChipConfig(ber)
        for name, g in gens.items():
            with operating_ber(g, ber):
                r = evaluate(base, test, chip, g, seeds)
            acc[name, ber] = r
            rows.append(
                {
                    "dataset": "digits",
                    "source": args.model,
                    "target": args.model,
                    "generator": name,
                    "train_ber": None if name == "ConvS_BER" else float(name.split("@")[1]),
                    "eval_ber": ber,
                    "fault_model": r["fault_model"],
                    **{k: r[k] for k in ("ca", "pa_mean", "pa_per_chip", "pa_nf_mean", "pa_nf_per_chip")},
                }
            )
    print(
        f"digits, {args.model} width {args.width} (CA {rows[0]['ca']:.2f}%), {args.epochs} EOPM epochs each, "
        f"N={args.n}, {args.chips} eval chips; params: " + ", ".join(f"{k} {v:,}" for k, v in params.items())
    )
    print("training s: " + ", ".join(f"{k} {v:.0f}" for k, v in train_s.items()))
    head = f"{'eval BER':>8}  {'PA':>12}  {'ConvS@same BER':>15}  {'ConvS_BER':>12}  {'best other ConvS':>17}"
    print(head)
    print("-" * len(head))
    for ber in args.bers:
        r_same, r_cond = acc[f"ConvS@{ber:g}", ber], acc["ConvS_BER", ber]
        others = max((acc[k, ber]["pa_nf_mean"], k) for k in gens if k.startswith("ConvS@") and k != f"ConvS@{ber:g}")
        print(
            f"{ber:>8g}  {r_same['pa_mean']:6.2f}±{r_same['pa_std']:4.2f}  "
            f"{r_same['pa_nf_mean']:8.2f}±{r_same['pa_nf_std']:4.2f}  "
            f"{r_cond['pa_nf_mean']:6.2f}±{r_cond['pa_nf_std']:4.2f}"
            f"  {others[0]:8.2f} ({others[1]})"
        )

    # nf select on these rows: the documented curve's voltages and energies at the evaluation BERs
    pts = [curve_point(b) for b in args.bers]
    table = parse_voltage_table(
        "voltage,ber,energy_ratio\n1.0,0,1.0\n" + "".join(f"{p.voltage},{p.ber},{p.energy_ratio}\n" for p in pts),
        "curve_point (modelled)",
    )
    with torch.device("meta"):
        costs = {args.model: twma(create_model(args.model, ds.num_classes, ds.input_size, args.width), 32)}
        costs.update({k: twma(create_generator(k.split("@")[0]), 32) for k in gens})
    print(
        "TWMA: " + ", ".join(f"{k} {v:,}" for k, v in costs.items() if "@" not in k or k.endswith(f"@{args.bers[0]:g}"))
    )
    for a in args.min_accuracy:
        for q in (None, 10):
            print()
            print(format_selection(select_operating_points(rows, a, table, costs, percentile=q)))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

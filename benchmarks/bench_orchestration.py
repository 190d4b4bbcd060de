"""Per-trial orchestration overhead (Ray Tune + MLflow + storage) as a fraction of a trial's compute.

Runs a one-generator sweep on local Ray, then repeats the generator trial's training in
this process without Ray or MLflow (same data, config, threads and seed), and compares
the sweep's generator-stage wall time with that direct compute.
Run: .venv/bin/python benchmarks/bench_orchestration.py [--epochs 6] [--cpus 2]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time

import torch

from nf_core.generators import create_generator
from nf_core.train import GeneratorTrainConfig, train_generator
from orchestration.config import parse_config
from orchestration.runner import run_sweep
from orchestration.trainables import TrialContext


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=7, help="generator epochs (sets the trial's length)")
    ap.add_argument("--cpus", type=float, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"name": "bench", "storage": tmp, "models": ["resnet18"], "width": 0.25, "generators": ["ConvS"],
               "train_bers": [0.04], "ns": [3], "transfer": False,
               "base": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
               "generator": {"epochs": a.epochs, "batch_size": 64},
               "evaluation": {"bers": [0.04], "chips": 2}, "resources": {"cpus": a.cpus}}
        cfg = parse_config(raw)
        stage_s: dict[str, float] = {}

        def log(line: str) -> None:
            m = re.match(r"stage (\w+): finished in ([\d.]+) s", line)
            if m:
                stage_s[m.group(1)] = float(m.group(2))

        run_sweep(cfg, verbose=0, log=log)
        import ray

        ray.shutdown()
        # The same trial's training, directly: Ray gives a trial as many torch threads as CPUs.
        torch.set_num_threads(max(1, int(a.cpus)))
        from orchestration.runner import sweep_store
        from orchestration.plan import plan

        item = plan(cfg)["generator"][0]
        ctx = TrialContext({"sweep": cfg.to_dict(), "store": sweep_store(cfg).spec(), "item_id": item.id})
        ds = ctx.dataset("digits")
        base = ctx.deployed("resnet18")
        tc = GeneratorTrainConfig(ber=0.04, n_chips=3, epochs=a.epochs, batch_size=64, seed=0)
        torch.manual_seed(0)
        gen = create_generator("ConvS")
        t = time.perf_counter()
        train_generator(gen, [base], ds.train, tc)
        direct = time.perf_counter() - t
    stage = stage_s["generator"]
    over = stage - direct
    print(f"generator trial: {a.epochs} epochs, {a.cpus:g} CPUs, torch threads {torch.get_num_threads()}")
    print(f"{'direct compute (no Ray, no MLflow)':<44}{direct:>8.1f} s")
    print(f"{'sweep generator stage (Ray Tune + MLflow)':<44}{stage:>8.1f} s")
    print(f"{'orchestration overhead':<44}{over:>8.1f} s  = {100 * over / direct:.1f}% of the trial's compute")


if __name__ == "__main__":
    main()

"""Per-trial orchestration overhead (Ray Tune + MLflow + storage) as a fraction of a trial's compute.

Runs a sweep whose generator stage has K trials of about 60 s each (one at a time: each
takes both cores), then repeats one trial's training in this process without Ray or MLflow
(same data, config, threads and seed), and compares the stage's wall time per trial with it.
Run: .venv/bin/python benchmarks/bench_orchestration.py [--epochs 7] [--trials 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time

import torch

from nf_core.generators import create_generator
from nf_core.train import GeneratorTrainConfig, train_generator
from orchestration.spec.config import parse_config
from orchestration.sweep.runner import run_sweep
from orchestration.sweep.trainables import TrialContext


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=7, help="generator epochs (sets the trial's length)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--cpus", type=float, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = {
            "name": "bench",
            "storage": tmp,
            "models": ["resnet18"],
            "width": 0.25,
            "generators": ["ConvS"],
            "train_bers": [round(0.04 + 0.001 * i, 3) for i in range(a.trials)],
            "ns": [3],
            "transfer": False,
            "base": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
            "generator": {"epochs": a.epochs, "batch_size": 64},
            "evaluation": {"bers": [0.04], "chips": 2},
            "resources": {"cpus": a.cpus},
        }
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
        from orchestration.spec.plan import plan
        from orchestration.store.roots import sweep_store

        item = plan(cfg)["generator"][0]
        store = sweep_store(cfg)
        d = f"items/generator/{item.id}"
        started = store.read_json(f"{d}/attempts.json")[0]["time"]
        ended = store.read_json(f"{d}/status.json")["time"]
        epoch_s = sum(h["seconds"] for h in store.load_torch(f"{d}/checkpoint.pt")["history"])
        ctx = TrialContext(item, cfg, store)
        ds = ctx.dataset("digits")
        base = ctx.deployed("resnet18")
        tc = GeneratorTrainConfig(ber=0.04, n_chips=3, epochs=a.epochs, batch_size=64, seed=0)
        torch.manual_seed(0)
        gen = create_generator("ConvS")
        t = time.perf_counter()
        train_generator(gen, [base], ds.train, tc)
        direct = time.perf_counter() - t
    per_trial = stage_s["generator"] / a.trials
    over = per_trial - direct
    print(
        f"generator stage: {a.trials} trials of {a.epochs} epochs, {a.cpus:g} CPUs each, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'direct compute of one trial (no Ray, no MLflow)':<52}{direct:>8.1f} s")
    print(f"{'sweep generator stage, per trial (Ray Tune + MLflow)':<52}{per_trial:>8.1f} s")
    print(f"{'orchestration overhead per trial':<52}{over:>8.1f} s  = {100 * over / direct:.1f}% of its compute")
    inside = ended - started
    print(f"  first trial: body {inside:.1f} s (epochs {epoch_s:.1f} s)")


if __name__ == "__main__":
    main()

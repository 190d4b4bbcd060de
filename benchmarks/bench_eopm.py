"""EOPM step throughput at N = 5 against a reference-style loop, in the same run.

Ours: G(x) once per batch; clean pass + N perturbed passes (loop or vmap); one backward;
N sparse chips per batch.
Reference-style (the authors' code as docs/method.md describes it): for each of the N chips,
recompute G(x) (and its BatchNorm update), clean + perturbed loss, backward, plus one
extra forward per chip for logging; chips drawn with per-bit Bernoulli masks.
Two comparisons: compute only (the same chip weights handed to both), and whole steps
(each with its own chip synthesis).
Run: .venv/bin/python benchmarks/bench_eopm.py [--width 1.0] [--batch 32] [--steps 3]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nf_core.chips import ChipConfig, bernoulli_codes
from nf_core.deployed import DeployedModel
from nf_core.eopm import eopm_loss, training_chip_seeds, transform
from nf_core.generators import create_generator
from nf_core.models import create_model


def ours_step(gen, base, x, y, opt, seeds, cfg, lam, batching, stacked=None):
    opt.zero_grad(set_to_none=True)
    x_t = transform(gen, x)
    if stacked is None:
        loss, _ = eopm_loss([base], x_t, y, seeds, cfg, lam, batching)
    else:  # compute only: chips given
        logits = base.perturbed_logits(x_t, stacked, batching)
        loss = F.cross_entropy(base.logits(x_t), y) + lam * F.cross_entropy(logits.flatten(0, 1), y.repeat(len(logits)))
    loss.backward()
    opt.step()


def reference_step(gen, base, x, y, opt, chip_weights, lam):
    opt.zero_grad(set_to_none=True)
    n = len(chip_weights)
    for w in chip_weights:
        x_t = transform(gen, x)  # G recomputed per chip
        loss = F.cross_entropy(base.logits(x_t), y) + lam * F.cross_entropy(base.logits(x_t, w), y)
        (loss / n).backward()
        with torch.no_grad():  # the extra logging forward
            base.logits(x_t.detach(), w)
    opt.step()


def bernoulli_chips(base, n, cfg, g):
    return [base.qw.dequantized(bernoulli_codes(base.qw, g, ChipConfig(cfg.ber, cfg.fault_model, "flat"))) for _ in range(n)]


def timed(fn, steps: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--generator", default="ConvL")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    base = DeployedModel(create_model(a.model, width=a.width), device=a.device)
    gen = create_generator(a.generator).to(a.device)
    opt = torch.optim.Adam(gen.parameters(), 1e-3, betas=(0.5, 0.999))
    x = (torch.rand(a.batch, 3, 32, 32) * 2 - 1).to(a.device)
    y = torch.randint(0, 10, (a.batch,)).to(a.device)
    cfg, lam = ChipConfig(0.01), 5.0
    seeds = training_chip_seeds(0, 0, a.n)
    stacked = base.stacked_chip_weights(seeds, cfg)
    chips = [{k: v[i] for k, v in stacked.items()} for i in range(a.n)]
    g = torch.Generator(device=a.device).manual_seed(0)
    step = iter(range(10**6))
    print(f"{a.model} (width {a.width}) + {a.generator}, batch {a.batch}, N {a.n}, device {a.device}, "
          f"torch threads {torch.get_num_threads()}")
    rows = []
    ref = timed(lambda: reference_step(gen, base, x, y, opt, chips, lam), a.steps, a.device)
    rows.append(("compute only: reference-style loop", ref, ref))
    for b in ("loop", "vmap"):
        t = timed(lambda: ours_step(gen, base, x, y, opt, seeds, cfg, lam, b, stacked), a.steps, a.device)
        rows.append((f"compute only: ours ({b})", t, ref))
    ref_full = timed(lambda: reference_step(gen, base, x, y, opt, bernoulli_chips(base, a.n, cfg, g), lam),
                     max(1, a.steps - 1), a.device)
    rows.append(("whole step: reference-style + Bernoulli chips", ref_full, ref_full))
    for b in ("loop", "vmap"):
        t = timed(lambda: ours_step(gen, base, x, y, opt, training_chip_seeds(0, next(step), a.n), cfg, lam, b),
                  a.steps, a.device)
        rows.append((f"whole step: ours ({b}) + sparse chips", t, ref_full))
    print(f"{'method':<48}{'s/step':>9}{'images/s':>10}{'speed-up':>10}")
    for name, t, base_t in rows:
        print(f"{name:<48}{t:>9.3f}{a.batch / t:>10.1f}{base_t / t:>9.2f}×")


if __name__ == "__main__":
    main()

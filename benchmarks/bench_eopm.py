"""EOPM step throughput against the authors' code's structure, in the same run.

Ours: G(x) once per batch; clean pass + N perturbed passes through `functional_call` on the
frozen base model (loop or vmap); one backward into G only; N sparse chips per batch.
Reference-style (`benchmarks/reference_style.py`, the authors' step as docs/method.md records it):
per chip, G(x) recomputed, a perturbed model built by copying the base model and re-injecting
per-bit faults into every layer, clean + perturbed forward and backward with the base models'
weight gradients enabled, and an extra logging forward.
Two comparisons: compute only (perturbed models / chips prepared beforehand) and whole steps.
Run: .venv/bin/python benchmarks/bench_eopm.py [--width 1.0] [--batch 32] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_style import perturbed_model, quantized_copy, reference_step

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.eopm import RandomChips, eopm_loss, eopm_step, training_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model


class _FixedChips(RandomChips):
    """The same prepared chips every step: times the compute alone, not drawing chips."""

    def __init__(self, bases, chip, batching, codes) -> None:
        super().__init__(bases, chip, batching)
        self.codes = codes

    def loss(self, x_t, y, chip_seeds, step, lam):
        return eopm_loss(self.bases, x_t, y, chip_seeds, self.chip, lam, self.batching, self.codes)


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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_model(a.model, width=a.width)
    gen = create_generator(a.generator).to(a.device)
    opt = torch.optim.Adam(gen.parameters(), 1e-3, betas=(0.5, 0.999))
    x = (torch.rand(a.batch, 3, 32, 32) * 2 - 1).to(a.device)
    y = torch.randint(0, 10, (a.batch,)).to(a.device)
    cfg, lam = ChipConfig(0.01), 5.0
    g = torch.Generator(device=a.device).manual_seed(0)
    clean = quantized_copy(model).to(a.device)
    pre_built = [perturbed_model(clean, cfg.ber, g) for _ in range(a.n)]
    print(
        f"{a.model} (width {a.width}) + {a.generator}, batch {a.batch}, N {a.n}, device {a.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = []
    ref = timed(lambda: reference_step(gen, clean, x, y, opt, lam, a.n, cfg.ber, g, pre_built), a.steps, a.device)
    rows.append(("compute only: reference-style step", ref, ref))
    variants = [
        ("loop", {}),
        ("vmap", {}),
        ("loop, BN folded", {"fold_bn": True}),
        ("loop, channels-last", {"channels_last": True}),
        ("loop, BN folded + channels-last", {"fold_bn": True, "channels_last": True}),
    ]
    bases = {}
    for name, kw in variants:
        base = bases[name] = DeployedModel(model, device=a.device, **kw)
        codes = [base.chip_codes(training_chip_seeds(0, 0, a.n), cfg)]
        b = name.split(",")[0]
        g_v, o_v, x_v = gen, opt, x
        if kw.get("channels_last"):  # the generator and its input in channels-last too
            g_v = copy.deepcopy(gen).to(memory_format=torch.channels_last)
            o_v = torch.optim.Adam(g_v.parameters(), 1e-3, betas=(0.5, 0.999))
            x_v = x.contiguous(memory_format=torch.channels_last)
        t = timed(
            lambda g_v=g_v, base=base, x_v=x_v, o_v=o_v, b=b, codes=codes: eopm_step(
                g_v, _FixedChips([base], cfg, b, codes), x_v, y, [], lam, o_v
            ),
            a.steps,
            a.device,
        )
        rows.append((f"compute only: ours ({name})", t, ref))
    ref_full = timed(lambda: reference_step(gen, clean, x, y, opt, lam, a.n, cfg.ber, g), max(1, a.steps - 1), a.device)
    rows.append(("whole step: reference-style step", ref_full, ref_full))
    step = iter(range(1, 10**6))
    for name in ("loop", "loop, BN folded + channels-last"):
        base = bases[name]
        t = timed(
            lambda base=base: eopm_step(
                gen, RandomChips([base], cfg, "loop"), x, y, training_chip_seeds(0, next(step), a.n), lam, opt
            ),
            a.steps,
            a.device,
        )
        rows.append((f"whole step: ours ({name}) + sparse chips", t, ref_full))
    print(f"{'method':<58}{'s/step':>9}{'images/s':>10}{'speed-up':>10}")
    for name, t, base_t in rows:
        print(f"{name:<58}{t:>9.3f}{a.batch / t:>10.1f}{base_t / t:>9.2f}×")


if __name__ == "__main__":
    main()

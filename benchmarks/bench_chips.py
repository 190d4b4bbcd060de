"""Chip synthesis speed for a ResNet18-sized model (CIFAR ResNet18, 11.2 M weights) at 1% BER.

Compares, in the same run: a plain copy of the int8 codes (the floor), our sparse sampler
for each memory layout, and per-bit Bernoulli masks over every stored bit (dense baseline).
Run: .venv/bin/python benchmarks/bench_chips.py [--ber 0.01] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nf_core.chips import ChipConfig, bernoulli_codes, perturb_codes
from nf_core.models import create_model
from nf_core.quant import quantize_model


def median_ms(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ber", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    qw = quantize_model(create_model("resnet18")).to(a.device)
    print(
        f"ResNet18 (CIFAR): {qw.numel:,} int8 weights, BER {a.ber:g}, device {a.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    seeds = iter(range(10**6))
    floor = median_ms(lambda: qw.flat.clone(), a.repeats, a.device)
    g = torch.Generator(device=a.device).manual_seed(0)
    dense = median_ms(
        lambda: bernoulli_codes(qw, g, ChipConfig(a.ber, layout="flat")), max(3, a.repeats // 5), a.device
    )
    print(f"{'method':<44}{'ms/chip':>10}{'× copy':>10}{'Bernoulli ÷ this':>18}")
    print(f"{'plain copy of the int8 codes (floor)':<44}{floor:>10.2f}{1.0:>10.1f}{dense / floor:>18.1f}")
    print(f"{'per-bit Bernoulli masks (dense baseline)':<44}{dense:>10.2f}{dense / floor:>10.1f}{1.0:>18.1f}")
    for layout in ("wrap", "reference", "flat"):
        for fm in ("stuck_at", "flip"):
            cfg = ChipConfig(a.ber, fm, layout)
            ms = median_ms(lambda: perturb_codes(qw, next(seeds), cfg), a.repeats, a.device)  # noqa: B023 (called at once)
            name = f"sparse chip, {layout} layout, {fm}" + (
                " (default)" if (layout, fm) == ("wrap", "stuck_at") else ""
            )
            print(f"{name:<44}{ms:>10.2f}{ms / floor:>10.1f}{dense / ms:>18.1f}")
    # What a forward pass actually needs: float weights. Dequantizing dominates both paths.
    deq = median_ms(lambda: qw.dequantized(), a.repeats, a.device)
    full = median_ms(lambda: qw.dequantized(perturb_codes(qw, next(seeds), ChipConfig(a.ber))), a.repeats, a.device)
    print(f"{'clean float weights (dequantize)':<44}{deq:>10.2f}")
    print(
        f"{'chip float weights (sparse wrap + dequantize)':<44}{full:>10.2f}{'':>10}{'':>18}  ({full / deq:.2f}× clean)"
    )


if __name__ == "__main__":
    main()

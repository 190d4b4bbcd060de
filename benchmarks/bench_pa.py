"""PA evaluation over M chips: ours against the authors' chip-by-chip loop, in the same run.

Ours (`nf_core.evaluate.evaluate`): inputs and G(x) once, the test set resident on the device,
chips drawn sparsely and dequantized on the device, several chips per forward where that wins.
Baseline (`benchmarks/reference_style.py`): per chip, a freshly built model (copy + per-bit
faults re-injected into every layer), then the whole test loop, G(x) recomputed per batch.
Both report PA and PA (NF) for ResNet18 + ConvL on synthetic CIFAR-sized images.
Run: .venv/bin/python benchmarks/bench_pa.py [--images 512] [--chips 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_style import quantized_copy, reference_pa

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.evaluate import evaluate, evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--generator", default="ConvL")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chips", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_model(a.model, width=a.width)
    gen = create_generator(a.generator).eval()
    x = torch.rand(a.images, 3, 32, 32) * 2 - 1
    y = torch.randint(0, 10, (a.images,))
    loader = DataLoader(TensorDataset(x, y), batch_size=a.batch)
    cfg = ChipConfig(0.01)
    print(
        f"{a.model} (width {a.width}) + {a.generator}, {a.images} test images, {a.chips} chips, PA and PA (NF), "
        f"cpu, torch threads {torch.get_num_threads()}"
    )
    clean = quantized_copy(model)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    reference_pa(clean, list(loader), cfg.ber, a.chips, g, gen)
    ref = time.perf_counter() - t
    rows = [("chip by chip, fresh model per chip (authors)", ref)]
    for name, kw, per in [
        ("ours, 1 chip per pass", {}, 1),
        ("ours, 5 chips per pass (vmap)", {}, 5),
        ("ours, 1 chip per pass, BN folded + channels-last", {"fold_bn": True, "channels_last": True}, 1),
    ]:
        base = DeployedModel(model, **kw)
        t = time.perf_counter()
        evaluate(base, loader, cfg, gen, evaluation_chip_seeds(a.chips), chips_per_pass=per)
        rows.append((name, time.perf_counter() - t))
    print(f"{'method':<52}{'seconds':>9}{'speed-up':>10}")
    for name, s in rows:
        print(f"{name:<52}{s:>9.2f}{ref / s:>9.2f}×")


if __name__ == "__main__":
    main()

"""GPU benchmark: EOPM steps/s for ResNet18 + ConvL (batch 256, N = 10) with and without each speed
option, PA over 100 chips on a CIFAR-10-sized test set (10k synthetic images), achieved TFLOP/s
against the card's peak, and the extrapolated time of the paper's 150-epoch generator training.

Runs anywhere: without CUDA (or with ``--tiny``) it uses tiny sizes so the tests exercise every
path on the CPU; those CPU numbers say nothing about GPUs.
Run: .venv/bin/python benchmarks/bench_gpu.py [--tiny] [--steps 20]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.eopm import RandomChips, eopm_step, training_chip_seeds
from nf_core.evaluate import chips_per_pass_default, evaluate, evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model

# Dense peak TFLOP/s by card-name substring (vendor data sheets): (TF32 tensor cores, BF16 tensor cores).
# cuDNN runs fp32 convolutions as TF32 by default, so fp32 runs are compared with the TF32 peak.
PEAKS = {
    "H200": (494.7, 989.4),
    "H100 PCIe": (378.0, 756.0),
    "H100": (494.7, 989.4),  # SXM
    "A100": (156.0, 312.0),
    "L40S": (183.0, 362.0),
    "L4": (60.0, 121.0),
    "A10": (62.5, 125.0),
    "RTX 4090": (82.6, 165.2),
    "V100": (15.7, 125.0),  # no TF32: fp32 peak; fp16 tensor cores instead of bf16
}
CIFAR_TRAIN, PAPER_EPOCHS = 50_000, 150


def card_peak(name: str) -> tuple[float, float] | None:
    """(TF32, BF16) dense peak for a device name, None when the card is not in the table."""
    for key, peak in PEAKS.items():  # ordered: specific names before their prefixes
        if key in name:
            return peak
    return None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_flops(gen, base, x, y, cfg, n) -> int:
    opt = torch.optim.SGD(gen.parameters(), 0.0)
    with FlopCounterMode(display=False) as fc:
        eopm_step(gen, RandomChips([base], cfg, "loop"), x, y, training_chip_seeds(0, 0, n), 5.0, opt)
    return fc.get_total_flops()


def eopm_rate(model, gen_name, x, y, cfg, n, steps, device, batching, prefetch, **kw) -> float:
    torch.manual_seed(0)
    base = DeployedModel(model, device=device, **kw)
    gen = create_generator(gen_name).to(device)
    if kw.get("channels_last"):
        gen = gen.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(gen.parameters(), 1e-3, betas=(0.5, 0.999))
    chips = RandomChips([base], cfg, batching, 0, n, prefetch)
    chips.start(0)

    def step(k: int) -> None:
        eopm_step(gen, chips, x, y, training_chip_seeds(0, k, n), 5.0, opt, step=k)

    try:
        step(0)  # warm-up (cuDNN autotuning, allocator)
        _sync(device)
        t = time.perf_counter()
        for k in range(1, steps + 1):
            step(k)
        _sync(device)
        return steps / (time.perf_counter() - t)
    finally:
        chips.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (automatic without CUDA)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = a.tiny or device == "cpu"
    torch.set_num_threads(a.threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    width, batch, n, chips, images, steps = (0.125, 8, 2, 3, 32, 1) if tiny else (1.0, 256, 10, 100, 10_000, a.steps)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = card_peak(name) if device == "cuda" else None
    print(
        f"device: {name}{' (tiny sizes: not a GPU measurement)' if tiny else ''}; resnet18 width {width} + ConvL, "
        f"batch {batch}, N {n}, torch {torch.__version__}"
    )
    torch.manual_seed(0)
    model = create_model("resnet18", width=width)
    x = (torch.rand(batch, 3, 32, 32) * 2 - 1).to(device)
    y = torch.randint(0, 10, (batch,)).to(device)
    cfg = ChipConfig(0.01)
    flops = step_flops(create_generator("ConvL").to(device), DeployedModel(model, device=device), x, y, cfg, n)
    variants = [
        ("plain (loop, chips drawn in the step)", "loop", False, {}),
        ("vmap over chips", "vmap", False, {}),
        ("+ chip prefetch", "loop", True, {}),
        ("+ BN folded", "loop", False, {"fold_bn": True}),
        ("+ channels-last", "loop", False, {"channels_last": True}),
        ("+ amp bf16 base passes", "loop", False, {"amp": "bf16"}),
        (
            "all: prefetch + fold + channels-last + bf16",
            "loop",
            True,
            {"fold_bn": True, "channels_last": True, "amp": "bf16"},
        ),
        ("all, vmap", "vmap", True, {"fold_bn": True, "channels_last": True, "amp": "bf16"}),
    ]
    print(f"EOPM step: {flops / 1e9:.1f} GFLOP (forward + backward, counted)")
    print(f"{'variant':<46}{'steps/s':>9}{'× plain':>9}{'TFLOP/s':>9}{'% peak':>8}{'150 epochs':>12}")
    plain = None
    steps_per_epoch = math.ceil(CIFAR_TRAIN / 256)
    for label, batching, pre, kw in variants:
        rate = eopm_rate(model, "ConvL", x, y, cfg, n, steps, device, batching, pre, **kw)
        plain = plain or rate
        tflops = flops * rate / 1e12
        pk = None if peak is None else peak[1] if kw.get("amp") else peak[0]
        pct = f"{100 * tflops / pk:.1f}" if pk else "unknown"
        total_min = PAPER_EPOCHS * steps_per_epoch / rate / 60
        print(f"{label:<46}{rate:>9.2f}{rate / plain:>8.2f}×{tflops:>9.3f}{pct:>8}{total_min:>9.1f} min")
    print(
        f"(150 epochs = {PAPER_EPOCHS} × {steps_per_epoch} steps of batch 256 on CIFAR-10's 50k images; "
        f"goal < 15 min on one H100)"
    )
    xt = torch.rand(images, 3, 32, 32) * 2 - 1
    loader = DataLoader(
        TensorDataset(xt, torch.randint(0, 10, (images,))), batch_size=max(batch, 256 if not tiny else 16)
    )
    base = DeployedModel(model, device=device)
    gen = create_generator("ConvL").to(device)
    seeds = evaluation_chip_seeds(chips)
    print(f"PA and PA (NF) over {chips} chips, {images} test images:")
    for label, per in (
        ("1 chip per pass", 1),
        (f"{chips_per_pass_default(device)} chips per pass (device default)", chips_per_pass_default(device)),
        ("4 chips per pass", 4),
    ):
        _sync(device)
        t = time.perf_counter()
        evaluate(base, loader, cfg, gen, seeds, chips_per_pass=per)
        _sync(device)
        print(f"  {label:<44}{time.perf_counter() - t:>9.2f} s")


if __name__ == "__main__":
    main()

"""Inference latency at batch size 1 (paper App. D, Table 9): a base model alone and with a generator.

Measured, never modelled: each configuration runs ``warmup`` untimed passes, then ``runs`` timed
ones; the configurations are timed round-robin (one pass of each per round) so that drift of a
shared machine (other processes, clock changes) hits all of them alike. With a generator one pass
is x' = clamp(x + G(x), -1, 1) followed by the base model (nf_core.transform.neuralfuse).
On CUDA each pass is bracketed by torch.cuda.synchronize, so the time is the kernels', not the launch's.
The result names the device it ran on: CPU model and torch thread count, or the CUDA device name.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nf_core.transform import neuralfuse

DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor() or 'unknown CPU'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def default_device() -> str:
    """Where a deployed model would run here: the first CUDA device when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description(device: torch.device | str) -> str:
    """One line naming where the timing ran: 'cuda:0 (NVIDIA H100 …)' or 'cpu (AMD EPYC …, 2 torch threads)'."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} torch threads)"


def _timed(fn: Callable[[], Any], dev: torch.device) -> float:
    """Milliseconds of one call; on CUDA, queued kernels are flushed before and waited for after."""
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) * 1e3


def time_passes(
    passes: dict[str, Callable[[], Any]],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Per name, ``runs`` wall-clock times (ms) of its pass, after ``warmup`` untimed rounds; round-robin."""
    if runs < 1:
        raise ValueError(f"runs {runs!r} must be >= 1")
    if warmup < 0:
        raise ValueError(f"warmup {warmup!r} must be >= 0")
    dev = torch.device(device)
    times: dict[str, list[float]] = {k: [] for k in passes}
    with torch.inference_mode():
        for _ in range(warmup):  # first calls allocate, pick kernels, fill caches: not what a deployed chip sees
            for fn in passes.values():
                fn()
        for _ in range(runs):
            for name, fn in passes.items():
                times[name].append(_timed(fn, dev))
    return times


def summarise(ms: Sequence[float]) -> dict[str, float]:
    """Median and 90th percentile (ms) of one configuration's timed runs."""
    a = np.asarray(ms, dtype=float)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90))}


def measure_latency(
    model: nn.Module,
    generators: dict[str, nn.Module],
    input_size: int,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Batch-1 latency of ``model`` alone and behind each generator, on ``device``.

    Returns {"device", "batch_size", "input_size", "runs", "warmup", "rows"}; each row is
    {"generator" (None: base alone), "median_ms", "p90_ms", "added_ms" (median over the base's median)}.
    """
    dev = torch.device(device)
    model = model.to(dev).eval()
    gens = {k: g.to(dev).eval() for k, g in generators.items()}
    x = (torch.rand(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(dev)
    passes: dict[str, Callable[[], Any]] = {"": lambda: model(x)}
    for name, g in gens.items():
        passes[name] = lambda g=g: model(neuralfuse(x, g))
    stats = {k: summarise(v) for k, v in time_passes(passes, runs, warmup, dev).items()}
    base = stats[""]["median_ms"]
    rows = [
        {"generator": k or None, **s, "added_ms": None if not k else s["median_ms"] - base} for k, s in stats.items()
    ]
    return {
        "device": device_description(dev),
        "batch_size": 1,
        "input_size": input_size,
        "runs": runs,
        "warmup": warmup,
        "rows": rows,
    }


def latency_table(
    model: str,
    dataset: str,
    generators: Sequence[str],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    device: torch.device | str | None = None,
    width: float = 1.0,
) -> dict[str, Any]:
    """Table 9 for one registered base model on ``dataset``'s input size: alone and with each generator.

    Weights are freshly initialised (latency does not depend on their values); ``device`` None: the GPU
    when there is one (the paper timed on a GPU), else the CPU. The result adds "model", "dataset" and
    "width" to measure_latency's."""
    from nf_core.cost import dataset_shape
    from nf_core.generators import create_generator
    from nf_core.models import create_model

    num_classes, size = dataset_shape(dataset)
    torch.manual_seed(0)
    base = create_model(model, num_classes=num_classes, input_size=size, width=width)
    gens = {g: create_generator(g, input_size=size) for g in generators}
    out = measure_latency(base, gens, size, runs, warmup, default_device() if device is None else device)
    return {"model": model, "dataset": dataset, "width": width, **out}

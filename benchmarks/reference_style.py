"""The authors' code's structure, rebuilt for benchmarks (never used by training or evaluation).

What their step does per batch (docs/method.md): for each of the N chips, recompute G(x) (train
mode, so BatchNorm statistics update N times), build a perturbed model by copying the base
model and re-injecting per-bit faults into every quantized layer, run the clean and the
perturbed model forward and backward with the base models' weight gradients enabled, and
run an extra forward per chip for logging. Faults are drawn per layer with per-bit Bernoulli
masks (stuck-at: a faulty bit is forced to a random 0/1).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from nf_core.quant import QUANTIZED_TYPES, dequantize, quantize


def quantized_copy(model: nn.Module, bits: int = 8) -> nn.Module:
    """A float model whose Conv/Linear weights are their b-bit quantized values (weights trainable, as theirs)."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, QUANTIZED_TYPES):
                m.weight.copy_(dequantize(*quantize(m.weight, bits)))
    return out.requires_grad_(True)


def inject_layer(w: torch.Tensor, ber: float, g: torch.Generator, bits: int = 8) -> torch.Tensor:
    """Re-quantize one layer and force each stored bit faulty with probability ``ber`` (stuck at a random value)."""
    q, scale = quantize(w, bits)
    u = torch.rand(q.numel(), bits, generator=g, device=w.device)
    stuck = torch.rand(q.numel(), bits, generator=g, device=w.device) < 0.5
    weights = 2 ** torch.arange(bits, device=w.device, dtype=torch.int32)
    fmask = ((u < ber).to(torch.int32) * weights).sum(1)
    old = q.flatten().to(torch.int32) & ((1 << bits) - 1)
    new = (old & ~fmask) | ((stuck.to(torch.int32) * weights).sum(1) & fmask)
    new = torch.where(new >= 1 << (bits - 1), new - (1 << bits), new)
    return (new.float() * scale).view_as(w)


def perturbed_model(base: nn.Module, ber: float, g: torch.Generator, bits: int = 8) -> nn.Module:
    """A freshly built perturbed copy of ``base`` (a `quantized_copy`): faults re-injected into every layer."""
    out = copy.deepcopy(base)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, QUANTIZED_TYPES):
                m.weight.copy_(inject_layer(m.weight, ber, g, bits))
    return out


def reference_step(
    gen: nn.Module,
    clean: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    lam: float,
    n: int,
    ber: float,
    g: torch.Generator,
    models: list[nn.Module] | None = None,
) -> None:
    """One batch as the authors' code runs it; ``models`` hands pre-built perturbed models (compute only)."""
    gen.train()
    opt.zero_grad(set_to_none=True)
    for k in range(n):
        pert = models[k] if models is not None else perturbed_model(clean, ber, g)
        x_t = torch.clamp(x + gen(x), -1, 1)  # G recomputed per chip
        loss = F.cross_entropy(clean(x_t), y) + lam * F.cross_entropy(pert(x_t), y)
        (loss / n).backward()  # weight gradients of both base models are computed too
        with torch.no_grad():  # the extra logging forward
            pert(x_t).argmax(1)
    opt.step()


@torch.no_grad()
def reference_pa(
    clean: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    ber: float,
    chips: int,
    g: torch.Generator,
    gen: nn.Module | None = None,
) -> list[tuple[float, float | None]]:
    """(PA, PA (NF)) chip by chip: a freshly built perturbed model per chip, then the whole test loop
    scoring plain and transformed inputs (G(x) recomputed per batch)."""
    accs = []
    for _ in range(chips):
        pert = perturbed_model(clean, ber, g)
        correct = correct_nf = total = 0
        for x, y in batches:
            correct += (pert(x).argmax(1) == y).sum().item()
            if gen is not None:
                correct_nf += (pert(torch.clamp(x + gen(x), -1, 1)).argmax(1) == y).sum().item()
            total += len(y)
        accs.append((100.0 * correct / total, 100.0 * correct_nf / total if gen is not None else None))
    return accs

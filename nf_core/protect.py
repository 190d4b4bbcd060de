"""Weight-side protection baselines: weight clipping and random bit error training (RandBET).

Stutz, Chandramoorthy, Hein, Schiele, "Bit Error Robustness for Energy-Efficient DNN
Accelerators", MLSys 2021. Their recipe protects the *weights* (the base model is retrained),
where NeuralFuse protects the *input* (the base model is untouched). Both modes here are
base-training modes (`nf_core.base_modes`) on top of this project's 8-bit QAT:

``clip``     every quantized weight (Conv/Linear, the ones stored in SRAM) is clipped to
             [-wmax, wmax] before each forward and after each optimizer step. With a per-tensor
             scale max|W| / 127 this spreads the weights over more of the code range, so a
             flipped high bit moves a weight by less relative to the others.
``randbet``  clipping, plus every step a second forward through the QAT weights with one
             random chip's faults injected at the training BER — the same chip model, fault
             model, layout and bits as evaluation (`nf_core.chips.perturb_codes`), the chip
             redrawn every step from a seeded stream disjoint from the evaluation chips.
             The update averages the clean gradient and the perturbed one (the latter clipped
             elementwise to ±0.05), straight-through to the float weights.

Defaults are the authors' (their code, experiments/mlsys and common/train/average_weights_training.py):
wmax 0.1 and p = 1% (the paper's headline RandBET model for 8 bits); perturbed gradients
clipped to ±0.05; BatchNorm running statistics from the clean pass only; and their
curriculum: the perturbed loss joins only once the clean loss is below 1.15·1.75 and the mean of
both below 1.75 (CIFAR-10's threshold). Differences from their code, each named:
- the curriculum decides from this step's two losses (theirs from the previous step's), so no
  state has to survive a resume;
- their Conv/Linear biases are quantized and clipped too; here biases are not stored in SRAM
  (docs/method.md, Quantization), so only the weights are clipped and perturbed;
- their bit errors flip bits; here the chips are this project's (stuck-at by default), so the
  model is trained against the faults it will be evaluated on;
- their reparameterized BatchNorm and optimiser (SGD nesterov, lr 0.05, wd 5e-4, multi-step) are
  not reproduced: the optimiser is `BaseTrainConfig`'s, as for every base model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.eopm import TRAIN_SEED_BASE
from nf_core.quant import fake_quant_params, quantize_model, quantized_weight_names

WMAX = 0.1  # Stutz et al.'s clipping bound for their main 8-bit results
RANDBET_BER = 0.01  # their training BER p for the headline RandBET model
PERTURBED_GRAD_CLIP = 0.05  # elementwise bound on the perturbed-loss gradient (their gradient_clipping)
CURRICULUM_THRESHOLD = 1.75  # their CIFAR-10 loss threshold; None in the config: perturbed loss from step 0
_RANDBET_STREAM = 0x52424554  # "RBET": keeps RandBET's chips apart from EOPM's training chips of the same seed


def check_wmax(wmax: float) -> float:
    if not isinstance(wmax, (int, float)) or not wmax > 0:
        raise ValueError(f"wmax {wmax!r} must be > 0 (weights are clipped to [-wmax, wmax])")
    return float(wmax)


def clip_weights_(model: nn.Module, wmax: float) -> None:
    """Clip every quantized (SRAM-stored) weight of ``model`` to [-wmax, wmax], in place."""
    with torch.no_grad():
        for name in quantized_weight_names(model):
            model.get_parameter(name).clamp_(-wmax, wmax)


def randbet_chip_seed(seed: int, step: int) -> int:
    """The chip of RandBET step ``step``: a seeded stream in the training range (never an evaluation chip)."""
    s = np.random.SeedSequence([int(seed), int(step), _RANDBET_STREAM]).generate_state(1, dtype=np.uint64)[0]
    return TRAIN_SEED_BASE + int(s % np.uint64(TRAIN_SEED_BASE))


def chip_params(model: nn.Module, bits: int, chip_seed: int, chip: ChipConfig) -> dict[str, torch.Tensor]:
    """Overrides for `functional_call`: the QAT weights with the chip's faults in their stored codes.

    Forward value: the chip's codes times the clean scale (what the chip would compute);
    gradient: straight through to the float weights, as in fake quantization.
    """
    params = dict(model.named_parameters())
    qw = quantize_model(model, bits)  # the codes QAT's forward uses (same quantizer, same rounding)
    faulty = qw.dequantized(perturb_codes(qw, chip_seed, chip))
    return {n: _Straight.apply(params[n], w.to(params[n].dtype)) for n, w in faulty.items()}


class _Straight(torch.autograd.Function):
    """Forward: ``value`` exactly (w + (value - w).detach() would round); backward: identity to ``w``."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def qat_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, bits: int):
    logits = functional_call(model, fake_quant_params(model, bits), (x,))
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logits, loss


def clip_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, step: int, cfg: Any, epoch: int = 0):
    """One QAT update with weight clipping: |W| ≤ wmax at every forward and after every step."""
    clip_weights_(model, cfg.wmax)
    logits, loss = qat_update(model, x, y, opt, cfg.bits)
    clip_weights_(model, cfg.wmax)
    return logits, loss, {}


def randbet_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, step: int, cfg: Any, epoch: int = 0):
    """One RandBET update: clean QAT loss + the loss on a fresh random chip, gradients averaged."""
    clip_weights_(model, cfg.wmax)
    params = [p for p in model.parameters() if p.requires_grad]
    logits = functional_call(model, fake_quant_params(model, cfg.bits), (x,))
    loss = F.cross_entropy(logits, y)
    g_clean = torch.autograd.grad(loss, params, allow_unused=True)
    # Perturbed pass: BatchNorm uses this batch's statistics (train mode) but writes its running
    # statistics into throw-away copies, so the stored ones are the clean pass's (as Stutz et al.).
    chip = ChipConfig(cfg.randbet_ber, cfg.fault_model, cfg.layout)
    overrides = chip_params(model, cfg.bits, randbet_chip_seed(cfg.seed, step), chip)
    overrides.update({n: b.clone() for n, b in model.named_buffers()})
    loss_p = F.cross_entropy(functional_call(model, overrides, (x,)), y)
    g_pert = torch.autograd.grad(loss_p, params, allow_unused=True)
    lc, lp = loss.item(), loss_p.item()
    thr = cfg.randbet_threshold
    active = thr is None or (lc < 1.15 * thr and (lc + lp) / 2 < thr)
    clip = cfg.randbet_grad_clip
    for p, gc, gp in zip(params, g_clean, g_pert):
        if gc is None and gp is None:
            p.grad = None
            continue
        gc = torch.zeros_like(p) if gc is None else gc
        if active and gp is not None:
            gc = (gc + gp.clamp(-clip, clip)) / 2
        p.grad = gc
    opt.step()
    clip_weights_(model, cfg.wmax)
    return logits, loss, {"loss_perturbed": lp, "randbet_active": float(active)}

"""Base-model training mode ``awp``: PGD adversarial training with adversarial weight perturbation.

The robust base model of the paper's Appendix J (PreAct ResNet18, nf_core/models/preact.py), trained
quantization-aware like every base model (the forward passes use fake-quantized b-bit weights):

* PGD adversarial training (Madry et al., 2018, "Towards deep learning models resistant to adversarial
  attacks"): L∞ PGD with a uniform random start, ``steps`` signed-gradient steps of ``step_size``, each
  projected onto the ε-ball and the valid input range. Our inputs live in [-1, 1] (x*2-1), so ε and the
  step, given in pixel units of [0, 1] as published, are scaled by 2 (INPUT_SCALE).
* AWP (Wu et al., 2020, "Adversarial weight perturbation helps robust generalization", NeurIPS): on a
  proxy (detached copies of the weights and BatchNorm buffers), one ascent step of the adversarial loss
  gives a direction d_l per weight tensor (every parameter with ≥ 2 dims: conv and linear weights); the
  perturbation is v_l = γ · ‖w_l‖ / ‖d_l‖ · d_l. The model's loss is taken at w + v, then the weights are
  restored *exactly* (copied back) before the optimizer steps, so the update is w ← step(w, ∇L(w + v)):
  the AWP update rule. (The authors' script subtracts v after the optimizer step; with weight decay that
  decays w + v instead of w, and float subtraction need not restore w bit for bit.)

Defaults are the published ones for AT-AWP on CIFAR-10 (L∞): ε = 8/255, step 2/255, 10 steps, γ = 5e-3,
no warm-up epochs, proxy step 0.01 (it only scales d, which is normalised away). The PGD passes use the
batch statistics (train-mode BatchNorm, as the authors' attack did) without updating the running ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from nf_core.quant import fake_quantize, quantized_weight_names

INPUT_SCALE = 2.0  # [0, 1] pixel units → our [-1, 1] inputs
LOW, HIGH = -1.0, 1.0
EPS = 1e-20  # the authors' guard against a zero ascent direction


@dataclass(frozen=True)
class AWPConfig:
    """PGD + AWP options (pixel units of [0, 1] for ``epsilon`` and ``step_size``)."""

    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    gamma: float = 5e-3
    warmup: int = 0  # epochs of plain PGD training before AWP starts
    proxy_lr: float = 0.01

    def __post_init__(self) -> None:
        for name in ("epsilon", "step_size", "gamma", "proxy_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"awp.{name} {v!r} must be a number >= 0")
        for name in ("steps", "warmup"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"awp.{name} {v!r} must be an integer >= 0")
        if not self.proxy_lr > 0:
            raise ValueError(f"awp.proxy_lr {self.proxy_lr!r} must be > 0")


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the BatchNorm buffers: train-mode passes on them leave the model's running stats alone."""
    return {n: b.clone() for n, b in model.named_buffers()}


def _qat_params(model: nn.Module, params: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    """``params`` with the stored (Conv/Linear) weights fake-quantized, as the base stage trains them."""
    names = set(quantized_weight_names(model))
    return {n: fake_quantize(p, bits) if n in names else p for n, p in params.items()}


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AWPConfig, bits: int = 8) -> torch.Tensor:
    """L∞ PGD adversarial examples (Madry et al.) of the QAT model: ‖x_adv − x‖∞ ≤ 2ε, x_adv in [-1, 1]."""
    eps, alpha = cfg.epsilon * INPUT_SCALE, cfg.step_size * INPUT_SCALE
    params = {n: p.detach() for n, p in model.named_parameters()}
    weights = {**_qat_params(model, params, bits), **_buffers(model)}
    delta = (torch.rand_like(x) * 2 - 1) * eps  # uniform random start in the ε-ball
    delta = (x + delta).clamp(LOW, HIGH) - x
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(functional_call(model, weights, (x + delta,)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(LOW, HIGH) - x
    return (x + delta).detach()


def awp_perturbation(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, cfg: AWPConfig, bits: int = 8
) -> dict[str, torch.Tensor]:
    """v_l = γ · ‖w_l‖ / ‖d_l‖ · d_l for every weight with ≥ 2 dims, d = one proxy ascent step on CE(x_adv)."""
    proxy = {n: p.detach().clone().requires_grad_(p.dim() > 1) for n, p in model.named_parameters()}
    loss = F.cross_entropy(functional_call(model, {**_qat_params(model, proxy, bits), **_buffers(model)}, (x_adv,)), y)
    names = [n for n, p in proxy.items() if p.requires_grad]
    grads = torch.autograd.grad(loss, [proxy[n] for n in names])
    out = {}
    for n, g in zip(names, grads):
        d = cfg.proxy_lr * g  # the proxy's SGD step on −CE moves it by +lr·∇CE
        w = proxy[n].detach()
        out[n] = cfg.gamma * w.norm() / (d.norm() + EPS) * d
    return out


def awp_update(
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: AWPConfig,
    bits: int = 8,
    perturb: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on CE(x_adv) taken at w + v, with w restored exactly before the step.

    Returns (logits, loss) of the perturbed pass. ``perturb`` False (warm-up): plain PGD training.
    """
    model.train()
    params = dict(model.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    if perturb and cfg.gamma > 0:
        v = awp_perturbation(model, x_adv, y, cfg, bits)
        with torch.no_grad():
            for n, dv in v.items():
                saved[n] = params[n].detach().clone()
                params[n].add_(dv)
    try:
        logits = functional_call(model, _qat_params(model, params, bits), (x_adv,))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                params[n].copy_(w)  # exact restore: the step below starts from the unperturbed weights
    optimizer.step()
    return logits.detach(), loss.detach()


def awp_train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: AWPConfig,
    bits: int = 8,
    epoch: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD examples of the batch, then `awp_update` (AWP from epoch ``cfg.warmup`` on). Returns (logits, loss)."""
    model.train()
    x_adv = pgd_attack(model, x, y, cfg, bits)
    return awp_update(model, x_adv, y, optimizer, cfg, bits, perturb=epoch >= cfg.warmup)


__all__ = ["AWPConfig", "INPUT_SCALE", "awp_perturbation", "awp_train_step", "awp_update", "pgd_attack"]

"""BatchNorm folding for a frozen, eval-mode base model.

An eval-mode BatchNorm after a convolution is an affine map per output channel,
``bn(z) = g·z + h`` with ``g = γ / sqrt(var + eps)`` and ``h = β − mean·g``, so
``bn(conv(x; W, b)) = conv(x; g·W, g·b + h)``. The chip perturbs the stored int8 codes first;
the folded weight is ``dequant(perturbed codes) · g``: folding happens after the faults, on
the float copy, and the folded weight is never quantized (that would change the numbers).
"""

from __future__ import annotations

import copy

import torch
import torch.fx
import torch.nn as nn


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) for every Conv2d whose output feeds only an eval BatchNorm2d of matching width."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - untraceable models are simply not folded
        return []
    mods = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.Conv2d) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        bn = mods.get(user.target) if user.op == "call_module" else None
        conv = mods[node.target]
        if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.num_features == conv.out_channels:
            pairs.append((node.target, user.target))
    return pairs


class BNFold:
    """The folded module (BatchNorms that follow a conv become Identity) and the per-conv affine maps."""

    def __init__(self, module: nn.Module) -> None:
        self.pairs = conv_bn_pairs(module)
        self.module = copy.deepcopy(module).eval()
        mods = dict(self.module.named_modules())
        self.scale: dict[str, torch.Tensor] = {}  # conv weight name → g (out,)
        self.bias: dict[str, torch.Tensor] = {}  # conv bias name → g·b + h (out,)
        for conv_name, bn_name in self.pairs:
            conv, bn = mods[conv_name], mods[bn_name]
            g = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            h = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * g
            b = conv.bias if conv.bias is not None else torch.zeros_like(h)
            self.scale[f"{conv_name}.weight"] = g.detach().clone()
            self.bias[f"{conv_name}.bias"] = (g * b + h).detach().clone()
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros_like(h), requires_grad=False)
            parent, _, leaf = bn_name.rpartition(".")
            setattr(mods[parent] if parent else self.module, leaf, nn.Identity())
        self.module.requires_grad_(False)

    def apply(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fold float weights (plain, or stacked on a leading chip axis) into the folded module's parameters."""
        out = dict(weights)
        lead: tuple[int, ...] = ()
        for name, g in self.scale.items():
            w = weights[name]
            lead = w.shape[: w.dim() - 4]
            out[name] = w * g.view(-1, 1, 1, 1)
        for name, b in self.bias.items():
            out[name] = b.expand(*lead, -1) if lead else b
        return out

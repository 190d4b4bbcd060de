"""A small vision transformer (the paper's stated future work) for 32×32 and 224×224 inputs.

Pre-norm ViT: patch embedding (a Conv2d with kernel = stride = patch: 4 at 32×32 → 64 tokens,
16 at 224×224 → 196 tokens), a class token, learned position embeddings, ``depth`` blocks of
multi-head self-attention and a GELU MLP, LayerNorm, a Linear head on the class token.

Quantization sees what nf_core.quant sees: every Conv2d and Linear weight. Attention is written
with explicit ``nn.Linear`` q, k, v and output projections (not nn.MultiheadAttention, whose
packed ``in_proj_weight`` is a bare parameter the quantizer would skip), so every attention
weight is quantized, stored in SRAM and hit by the chips. Like biases and BatchNorm elsewhere,
LayerNorm, the class token and the position embeddings are not quantized.

Cost model (nf_core.cost): each Linear is a weight matrix streamed once per fold of 32 output
positions, the tokens being the positions (SCALE-SIM conv row with a 1×T input map), so
TWMA counts ceil(T/32)·in·out reads per Linear. The attention matmuls (Q·Kᵀ and softmax·V)
multiply activations by activations: they have no stored weights and add no weight-memory
accesses; their MACs (2·T²·dim per block) are added to the MAC count by a hook.
"""

from __future__ import annotations

import torch
from torch import nn

from nf_core.models.common import MODELS, scaled

# input size -> patch size; (heads, head dim, depth, MLP ratio) are shared by both variants
PATCH = {32: 4, 224: 16}
HEADS, HEAD_DIM, DEPTH, MLP_RATIO = 3, 64, 6, 2


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output Linear layers."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        a = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.out(a.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, num_classes: int, input_size: int, width: float = 1.0, depth: int = DEPTH) -> None:
        super().__init__()
        patch = PATCH[input_size]
        dim = HEADS * scaled(HEAD_DIM, width)  # divisible by the heads at every width
        self.tokens = (input_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, HEADS, MLP_RATIO * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T, dim)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(h))[:, 0])


@MODELS.register("vit")
def vit(num_classes: int = 10, input_size: int = 32, width: float = 1.0) -> ViT:
    """ViT: 6 blocks, 3 heads of 64, MLP 2×; patch 4 at 32×32, patch 16 at 224×224."""
    return ViT(num_classes, input_size, width)


def attention_macs(module: SelfAttention, inputs: tuple, output: torch.Tensor) -> None:
    """ptflops hook: the two activation×activation matmuls (T²·dim MACs each, no weights), plus the
    q, k, v, out projections (weights × tokens, bias per output as ptflops counts Linear): ptflops
    treats a module with its own hook as a leaf and does not add its children's counts."""
    b, t, d = inputs[0].shape
    proj = sum(
        b * t * (lin.in_features * lin.out_features + (lin.out_features if lin.bias is not None else 0))
        for lin in (module.q, module.k, module.v, module.out)
    )
    module.__flops__ += int(2 * b * t * t * d + proj)

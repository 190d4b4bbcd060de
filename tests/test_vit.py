"""The ViT base model: quantized like the CNNs (attention projections included), perturbed by
chips, and profiled exactly (params and TWMA against counts by hand)."""

from __future__ import annotations

import json

import pytest
import torch

from nf_core.chips import ChipConfig
from nf_core.cost import count_params_macs
from nf_core.deployed import DeployedModel
from nf_core.models import create_model
from nf_core.quant import quantized_weight_names
from orchestration.commands.profile import main as profile_main


def test_vit_quantizes_every_linear_and_conv() -> None:
    m = create_model("vit", num_classes=10, input_size=32, width=0.125)
    names = quantized_weight_names(m)
    for i in range(6):
        for part in ("q", "k", "v", "out"):
            assert f"blocks.{i}.attn.{part}.weight" in names
    assert "patch_embed.weight" in names and "head.weight" in names and len(names) == 1 + 6 * 6 + 1
    assert not any("norm" in n or "embed" in n and n != "patch_embed.weight" for n in names)


def test_vit_on_a_chip_changes_attention_weights_and_logits() -> None:
    torch.manual_seed(0)
    base = DeployedModel(create_model("vit", num_classes=10, input_size=32, width=0.125))
    chip = ChipConfig(0.02)
    w = base.chip_weights(3, chip)
    q = "blocks.0.attn.q.weight"
    assert not torch.equal(w[q], base.clean_weights[q])
    assert torch.equal(w[q], base.chip_weights(3, chip)[q])  # same seed, same chip
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert not torch.allclose(base.logits(x, w), base.logits(x))


def _by_hand(dim: int, hidden: int, tokens: int, patch: int, classes: int, depth: int = 6) -> tuple[int, int]:
    """(params, TWMA) of the ViT counted by hand."""
    block = 2 * 2 * dim + 4 * (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
    params = (
        (3 * patch * patch * dim + dim) + dim + (tokens + 1) * dim + depth * block + 2 * dim + dim * classes + classes
    )
    folds = -(-(tokens + 1) // 32)  # every token (class token included) is an output position
    reads = (
        (-(-tokens // 32)) * 3 * patch * patch * dim
        + depth * folds * (4 * dim * dim + 2 * dim * hidden)
        + dim * classes
    )
    return params, -(-reads // 8)


@pytest.mark.parametrize("dataset,size,patch,classes", [("cifar10", 32, 4, 10), ("imagenet10", 224, 16, 10)])
def test_nf_profile_vit_exact(dataset: str, size: int, patch: int, classes: int, capsys) -> None:
    assert profile_main(["--model", "vit", "--dataset", dataset, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    prof = out.get("model", out)
    params, twma = _by_hand(192, 384, (size // patch) ** 2, patch, classes)
    assert prof["params"] == params and prof["twma"] == twma
    # MACs: weights × positions of every layer plus the attention matmuls (2·T²·dim per block);
    # ptflops adds bias/LayerNorm/GELU element counts on top, a fraction of a percent.
    t = (size // patch) ** 2 + 1
    weight_macs = (
        (size // patch) ** 2 * 3 * patch * patch * 192 + 6 * t * (4 * 192 * 192 + 2 * 192 * 384) + 192 * classes
    )
    attn = 6 * 2 * t * t * 192
    assert weight_macs + attn <= prof["macs"] <= 1.01 * (weight_macs + attn)


def test_vit_attention_macs_hook_counts() -> None:
    m = create_model("vit", num_classes=10, input_size=32, width=0.125)
    _, macs = count_params_macs(m, 32)
    dim, t = 24, 65
    assert macs >= 6 * 2 * t * t * dim + 6 * t * (4 * dim * dim + 2 * dim * 2 * dim)

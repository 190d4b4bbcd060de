import pytest
import torch
from torch.func import functional_call

from nf_core.models import create_model
from nf_core.quant import (
    dequantize,
    fake_quant_params,
    fake_quantize,
    levels,
    quantize,
    quantize_model,
    quantized_weight_names,
)


@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_within_half_scale(bits: int) -> None:
    w = torch.randn(1000) * 0.3
    q, scale = quantize(w, bits)
    assert q.dtype == torch.int8
    assert q.abs().max().item() == levels(bits)  # the max-magnitude weight hits the top level
    assert (dequantize(q, scale) - w).abs().max() <= scale / 2 + 1e-7
    assert torch.isclose(scale, w.abs().max() / (2 ** (bits - 1) - 1))


def test_round_half_to_even() -> None:
    w = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5])  # scale = 1
    q, scale = quantize(w)
    assert scale.item() == 1.0 and q.tolist() == [127, 0, 2, 2, 0]


def test_zero_tensor_round_trips() -> None:
    q, scale = quantize(torch.zeros(5))
    assert torch.equal(dequantize(q, scale), torch.zeros(5))


def test_fake_quant_is_straight_through() -> None:
    w = torch.randn(50, requires_grad=True)
    g = torch.randn(50)
    (fake_quantize(w, 4) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_only_conv_and_linear_weights_are_quantized() -> None:
    m = create_model("resnet18", width=0.125)
    names = quantized_weight_names(m)
    assert len(names) == 21 and all(n.endswith("weight") for n in names)  # 17 + 3 shortcuts + fc
    assert not any("bn" in n for n in names)
    qw = quantize_model(m)
    assert qw.numel == sum(dict(m.named_parameters())[n].numel() for n in names)
    deq = qw.dequantized()
    for n, p in m.named_parameters():
        if n in deq:
            q, s = quantize(p)
            assert torch.equal(deq[n], dequantize(q, s).view_as(p))


def test_qat_forward_uses_quantized_weights() -> None:
    m = create_model("vgg11", width=0.125).eval()
    x = torch.randn(2, 3, 32, 32)
    qat = functional_call(m, fake_quant_params(m, 2), (x,))
    assert not torch.allclose(qat, m(x))  # 2-bit weights change the output


@pytest.mark.parametrize("bits", [1, 9, 8.0])
def test_bad_bits(bits) -> None:
    with pytest.raises(ValueError, match="bits"):
        quantize(torch.randn(3), bits)

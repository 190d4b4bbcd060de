"""Every registered model and generator: forward shape, finite output, gradients everywhere."""

import pytest
import torch
import torchvision

from nf_core.generators import GENERATORS, create_generator
from nf_core.models import MODELS, create_model

SIZES = (32, 224)


def _n(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", MODELS.names())
def test_model_forward_backward(name: str, size: int) -> None:
    m = create_model(name, num_classes=7, input_size=size, width=0.125).train()
    x = torch.rand(2, 3, size, size) * 2 - 1
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", GENERATORS.names())
def test_generator_forward_backward(name: str, size: int) -> None:
    g = create_generator(name, input_size=size).train()
    x = torch.rand(2, 3, size, size) * 2 - 1
    out = g(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def test_calibration_counts() -> None:
    assert _n(create_model("resnet18", num_classes=10, input_size=32)) == 11_173_962
    assert _n(create_generator("ConvL")) == 723_273


@pytest.mark.parametrize(
    "name,ref",
    [
        ("resnet18", torchvision.models.resnet18),
        ("resnet50", torchvision.models.resnet50),
        ("vgg11", torchvision.models.vgg11_bn),
    ],
)
def test_imagenet_style_matches_torchvision(name: str, ref) -> None:
    # At width 1.0 the ImageNet-style architectures are exactly torchvision's.
    assert _n(create_model(name, num_classes=10, input_size=224)) == _n(ref(num_classes=10))


def test_width_shrinks_models() -> None:
    assert _n(create_model("resnet18", width=0.25)) < _n(create_model("resnet18")) / 10


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: create_model("resnet34"), "resnet18"),
        (lambda: create_model("resnet18", input_size=64), "224"),
        (lambda: create_generator("ConvXL"), "UNetS"),
    ],
)
def test_unknown_names_list_choices(call, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        call()

"""preact_resnet18: the parameter count by hand, registry and cost-model entries."""

from nf_core.cost import profile_model
from nf_core.models import MODELS, create_model


def _hand_count(classes: int = 10, final_bn: bool = True) -> int:
    """PreAct ResNet18 at width 1, counted layer by layer (He et al., 2016; CIFAR stem)."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731  bias-free convs
    bn = lambda c: 2 * c  # noqa: E731  weight + bias (running stats are buffers)
    total = conv(3, 64, 3)  # stem
    cin = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for j in range(2):
            total += bn(cin) + conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3)
            if j == 0 and (stride != 1 or cin != planes):
                total += conv(cin, planes, 1)  # projection shortcut, no BatchNorm
            cin = planes
    total += bn(512) if final_bn else 0
    return total + 512 * classes + classes  # linear


def test_parameter_count_by_hand() -> None:
    # 11,171,146 is the count without the final BN-ReLU (a common CIFAR port); He et al.'s full
    # pre-activation network and the AWP authors' model have it: 1,024 parameters more.
    assert _hand_count(final_bn=False) == 11_171_146
    model = create_model("preact_resnet18", num_classes=10, input_size=32)
    assert sum(p.numel() for p in model.parameters()) == _hand_count() == 11_172_170


def test_registered_with_its_cost_entry() -> None:
    assert "preact_resnet18" in MODELS
    prof = profile_model("preact_resnet18", "cifar10")
    assert prof["params"] == 11_172_170
    # The same convs and classifier as ResNet18 (no BatchNorm holds weights in SRAM), so the same TWMA;
    # MACs differ only by the BatchNorm/ReLU positions ptflops counts.
    resnet = profile_model("resnet18", "cifar10")
    assert prof["twma"] == resnet["twma"] and 0.99 < prof["macs"] / resnet["macs"] < 1.01


def test_width_and_imagenet_style() -> None:
    small = create_model("preact_resnet18", num_classes=7, input_size=224, width=0.125)
    assert sum(p.numel() for p in small.parameters()) < _hand_count(7) / 30

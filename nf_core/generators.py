"""NeuralFuse generators G (paper Appendix B; docs/method.md, Generators) and the UIP baseline, behind one registry.

Every generator maps x (B, 3, H, W) in [-1, 1] to a perturbation of the same shape; the
transformation x' = clamp(x + G(x), -1, 1) lives in `nf_core.transform`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nf_core.ber_conditioned import SUFFIX as BER_SUFFIX
from nf_core.ber_conditioned import BERConditioned
from nf_core.registry import Registry
from nf_core.validation import PAPER_GENERATORS

GENERATORS: Registry[nn.Module] = Registry("generator")


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3×3 conv with bias, BatchNorm, ReLU: the generators' basic unit."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Transposed conv k4 s2 p1 (doubles H, W), BatchNorm, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2)


def _up() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="nearest")


def _conv_l_encoder() -> list[nn.Module]:
    return [
        conv_bn_relu(3, 32),
        conv_bn_relu(32, 32),
        _pool(),
        conv_bn_relu(32, 64),
        conv_bn_relu(64, 64),
        _pool(),
        conv_bn_relu(64, 128),
        conv_bn_relu(128, 128),
        _pool(),
    ]


class _Sequential(nn.Module):
    """A generator that is one Sequential stack."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@GENERATORS.register("ConvL")
class ConvL(_Sequential):
    """The paper's ConvL: conv encoder (2 blocks per level, max-pool), conv + upsample decoder, tanh."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__(
            *_conv_l_encoder(),
            conv_bn_relu(128, 128),
            _up(),
            conv_bn_relu(128, 128),
            conv_bn_relu(128, 64),
            _up(),
            conv_bn_relu(64, 64),
            conv_bn_relu(64, 32),
            _up(),
            conv_bn_relu(32, 32),
            nn.Conv2d(32, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.Tanh(),
        )


@GENERATORS.register("ConvS")
class ConvS(_Sequential):
    """The paper's ConvS: ConvL scaled down, one conv block per level, 32/64/64 channels."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__(
            conv_bn_relu(3, 32),
            _pool(),
            conv_bn_relu(32, 64),
            _pool(),
            conv_bn_relu(64, 64),
            _pool(),
            conv_bn_relu(64, 64),
            _up(),
            conv_bn_relu(64, 32),
            _up(),
            conv_bn_relu(32, 3),
            _up(),
            nn.Conv2d(3, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.Tanh(),
        )


@GENERATORS.register("DeConvL")
class DeConvL(_Sequential):
    """The paper's DeConvL: ConvL's encoder with a transposed-convolution (deconvolution) decoder."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__(
            *_conv_l_encoder(),
            conv_bn_relu(128, 128),
            deconv_bn_relu(128, 64),
            conv_bn_relu(64, 64),
            deconv_bn_relu(64, 32),
            conv_bn_relu(32, 32),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
            nn.BatchNorm2d(3),
            nn.Tanh(),
        )


@GENERATORS.register("DeConvS")
class DeConvS(_Sequential):
    """The paper's DeConvS: ConvS's encoder with three transposed convolutions as the decoder."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__(
            conv_bn_relu(3, 32),
            _pool(),
            conv_bn_relu(32, 64),
            _pool(),
            conv_bn_relu(64, 64),
            _pool(),
            deconv_bn_relu(64, 64),
            deconv_bn_relu(64, 32),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
            nn.BatchNorm2d(3),
            nn.Tanh(),
        )


class DoubleConv(nn.Sequential):
    """(3×3 conv without bias, BN, ReLU) twice: the UNet unit."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """UNet with three down and three up steps; ConvT k2 s2 p0 restores the size exactly.

    ``up_padding=1`` is the authors' quantized UNet: ConvT k2 s2 p1 gives 2H−2, zero-padded by one
    pixel on every side back to 2H before the concatenation. Same parameters, other outputs.
    """

    def __init__(self, c: int, up_padding: int = 0) -> None:
        super().__init__()
        if up_padding not in (0, 1):
            raise ValueError(f"UNet up_padding {up_padding!r}: valid choices: 0, 1")
        chans = [c, 2 * c, 4 * c, 8 * c]
        self.inc = DoubleConv(3, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(a, b)) for a, b in zip(chans[:-1], chans[1:])
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2, up_padding) for a, b in zip(chans[:-1], chans[1:]))
        self.up_convs = nn.ModuleList(DoubleConv(2 * a, a) for a in chans[:-1])
        self.outc = nn.Conv2d(chans[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for i in reversed(range(len(self.ups))):
            up = self.ups[i](h)
            skip = skips.pop()
            dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
            if dh or dw:  # up_padding 1: zero-pad back to the skip's size, as the authors did
                up = F.pad(up, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
            h = self.up_convs[i](torch.cat([skip, up], dim=1))
        return self.outc(h)  # no tanh: the clamp in the transformation bounds x'


@GENERATORS.register("UNetL")
class UNetL(UNet):
    """The paper's UNetL: UNet (Ronneberger et al., 2015) with 16/32/64/128 channels."""

    def __init__(self, input_size: int = 32, up_padding: int = 0) -> None:
        super().__init__(16, up_padding)


@GENERATORS.register("UNetS")
class UNetS(UNet):
    """The paper's UNetS: UNetL at half width, 8/16/32/64 channels."""

    def __init__(self, input_size: int = 32, up_padding: int = 0) -> None:
        super().__init__(8, up_padding)


@GENERATORS.register("UIP")
class UIP(nn.Module):
    """The paper's UIP baseline (Appendix E): G(x) is one trainable tensor the shape of an input."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(1, 3, input_size, input_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.delta.expand_as(x)


def create_generator(name: str, input_size: int = 32, generator_bits: int | None = None) -> nn.Module:
    """Build a registered generator (``input_size`` matters only to UIP).

    ``generator_bits``: the precision G is trained and run at (None: float). Quantized UNets are
    built as the authors' quantized UNets were, with transposed-conv padding 1 (see `UNet`).
    """
    from nf_core.validation import check_bits, check_choice

    cls = GENERATORS.get(name)
    check_choice("input size", input_size, (32, 224))
    kwargs: dict = {"input_size": input_size}
    if generator_bits is not None:
        check_bits(generator_bits)
        if isinstance(cls, type) and issubclass(cls, UNet):
            kwargs["up_padding"] = 1
    return GENERATORS.create(name, **kwargs)


# BER-conditioned variants (<name>_BER) of the paper's generators; the wrapper lives in nf_core/ber_conditioned.py.
def _register_ber(name: str) -> None:
    @GENERATORS.register(name + BER_SUFFIX)
    def build(input_size: int = 32) -> BERConditioned:
        return BERConditioned(GENERATORS.create(name, input_size=input_size))

    build.__doc__ = f"{name} conditioned on the BER (input channel + FiLM): one generator for every voltage."


for _name in PAPER_GENERATORS:
    _register_ber(_name)

"""`nf list models|generators|datasets`: the registered names a sweep config accepts, one line each.

The names come from ``nf_core.names`` (torch-free, and tested equal to the registries beside the
constructors), so the listing answers at once on a machine without torch; the descriptions are here.
"""

from __future__ import annotations

import argparse

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "models": {
        "resnet18": "ResNet-18 base model (the paper's CIFAR/GTSRB/ImageNet-10 ResNet18)",
        "resnet50": "ResNet-50 base model (bottleneck blocks)",
        "vgg11": "VGG-11 with batch norm",
        "vgg16": "VGG-16 with batch norm",
        "vgg19": "VGG-19 with batch norm",
        "vit": "a small vision transformer: 6 blocks, 3 heads of 64, MLP 2x (beyond the paper)",
        "preact_resnet18": "PreAct ResNet-18 (pre-activation blocks): the robust base model of App. J (AWP training)",
    },
    "generators": {
        "ConvL": "conv encoder (max-pool) + conv/upsample decoder, large (the paper's ConvL)",
        "ConvS": "ConvL scaled down: one conv block per level, 32/64/64 channels (ConvS)",
        "DeConvL": "ConvL's encoder with a transposed-convolution decoder (DeConvL)",
        "DeConvS": "ConvS's encoder with three transposed convolutions (DeConvS)",
        "UNetL": "U-Net with skip connections, 16/32/64/128 channels (UNetL)",
        "UNetS": "UNetL at half width, 8/16/32/64 channels (UNetS)",
        "UIP": "universal input perturbation: one trainable input-shaped tensor (the paper's baseline)",
    },
    "datasets": {
        "cifar10": "CIFAR-10: 32x32, 10 classes (python pickles under root)",
        "cifar100": "CIFAR-100: 32x32, 100 classes (python pickles under root)",
        "gtsrb": "GTSRB traffic signs: 43 classes at 32x32 (class folders of .ppm and the test CSV under root)",
        "imagenet10": "ImageNet-10: 10 ImageNet classes at 224x224 (train/ and val/ image folders under root)",
        "digits": "scikit-learn's 1,797 8x8 digits at 32x32, 10 classes: ships with the package, no download",
    },
}


def registered(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind`` (models, generators or datasets), torch-free."""
    from nf_core import names

    return {"models": names.MODELS, "generators": names.GENERATORS, "datasets": names.DATASETS}[kind]


def describe(kind: str, name: str) -> str:
    """The one-line description of a registered name ('' if it has none yet)."""
    about = DESCRIPTIONS[kind]
    if name in about:
        return about[name]
    if kind == "generators" and name.endswith("_BER") and name[: -len("_BER")] in about:
        # nf_core.ber_conditioned: the same network with the BER as an extra input (FiLM)
        return f"{name[: -len('_BER')]} conditioned on the BER (input channel + FiLM): one generator for all voltages"
    return ""


def format_listing(kind: str) -> str:
    """One line per registered name: the name, then its description."""
    entries = registered(kind)
    width = max(len(n) for n in entries)
    return "\n".join(f"{n:<{width}}  {describe(kind, n)}".rstrip() for n in entries)


def _list(args: argparse.Namespace) -> int:
    print(format_listing(args.kind))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `nf list KIND` on the `nf` parser."""
    p = sub.add_parser("list", help="the registered models, generators or datasets a sweep config accepts")
    p.add_argument("kind", choices=tuple(DESCRIPTIONS), help="what to list: models, generators or datasets")
    p.set_defaults(func=_list)

"""VGG11/16/19 with BatchNorm. CIFAR style: one Linear(512 → classes) after global pooling.
ImageNet style: torchvision's 7×7 adaptive pool and 4096-4096 classifier."""

from __future__ import annotations

import torch
import torch.nn as nn

from nf_core.models.common import MODELS, scaled

CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, input_size: int, width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = scaled(int(v), width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        if input_size == 32:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(cin, num_classes)
        else:
            hidden = scaled(4096, width)
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(cin * 49, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _register(name: str) -> None:
    @MODELS.register(name)
    def build(num_classes: int = 10, input_size: int = 32, width: float = 1.0) -> VGG:
        """VGG11/16/19 with BatchNorm (Simonyan & Zisserman, 2015), base models of the paper."""
        return VGG(CFGS[name], num_classes, input_size, width)

    build.__doc__ = f"{name.upper()} with BatchNorm (Simonyan & Zisserman, 2015), a base model of the paper."


for _name in CFGS:
    _register(_name)

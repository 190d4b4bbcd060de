"""PreAct ResNet18 (He et al., 2016, "Identity mappings in deep residual networks"): the robust base model
of the paper's Appendix J, trained with AWP (Wu et al., 2020; nf_core/awp.py).

Pre-activation blocks: BN → ReLU → conv, twice, added to the shortcut (identity, or a bias-free 1×1 conv
with no BatchNorm of its own, fed the pre-activated input). After the last block a final BN → ReLU
precedes the pooling (He et al.'s full pre-activation, as in the AWP authors' PreActResNet18); CIFAR
style is a bare 3×3 stride-1 stem conv, ImageNet style torchvision's 7×7 stride-2 conv + max-pool.
At width 1 and 10 classes: 11,172,170 parameters (11,171,146 without the final BatchNorm's 1,024).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nf_core.models.common import MODELS, scaled


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and cin == planes else nn.Conv2d(cin, planes, 1, stride, bias=False)
        self.relu1 = nn.ReLU()  # modules (not in place: the pre-activated input feeds the shortcut too)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int, input_size: int, width: float) -> None:
        super().__init__()
        c0 = scaled(64, width)
        if input_size == 32:
            self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, 1, 1, bias=False))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, c0, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], c0
        for i, n in enumerate(layers):
            planes = scaled(64 * 2**i, width)
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        x = self.relu(self.bn(x))  # the final pre-activation: the last block's sum is not yet normalised
        return self.linear(torch.flatten(self.pool(x), 1))


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int = 10, input_size: int = 32, width: float = 1.0) -> PreActResNet:
    """PreAct ResNet18 (He et al., 2016): pre-activation BasicBlocks [2, 2, 2, 2]; the paper's App. J base model."""
    return PreActResNet([2, 2, 2, 2], num_classes, input_size, width)

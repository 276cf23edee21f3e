"""A ResNet-style backbone defined here, with early exits attached by ``eebench.attach_exits``.

``eebench check-model examples/resnet_exits.py:build`` runs eebench's model contract on it;
``eebench run examples/own_network.yaml`` benchmarks it against ``msdnet`` and
``branchynet-resnet`` on the quick suite's dataset. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

import eebench


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (a 1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet in torchvision's layout (stem, layer1..layer4, avgpool, fc); ResNet-18 with
    ``blocks=(2, 2, 2, 2)``, narrower with a smaller ``width``."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            stride = 1 if i == 0 else 2
            layers.append(
                nn.Sequential(
                    *[
                        BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                        for b in range(n)
                    ]
                )
            )
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def build(
    num_classes: int,
    input_shape: Sequence[int],
    width: int = 8,
    blocks: Sequence[int] = (2, 2, 2, 2),
    exits: Sequence[str] = ("layer2", "layer3.0"),
) -> eebench.MultiExitModel:
    """The example's early-exit ResNet-18 layout: exits after layer2 and after the first block
    of layer3 (pool + linear heads); the backbone's own fc is the final exit."""
    backbone = ResNet(num_classes, in_channels=input_shape[0], width=width, blocks=blocks)
    return eebench.attach_exits(
        backbone, list(exits), num_classes=num_classes, input_shape=input_shape
    )

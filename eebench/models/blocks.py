"""Building blocks shared by several families (kept small: family-specific blocks live with their family)."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """The ubiquitous conv -> BatchNorm -> ReLU with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def max_downsamples(side: int, min_side: int = 1) -> int:
    """How many 2x downsamplings a map of ``side`` pixels allows while staying >= ``min_side``."""
    n = 0
    while side // 2 >= min_side:
        side //= 2
        n += 1
    return n

"""Shallow-Deep Networks (Kaya, Hong & Dumitras, ICML 2019): internal classifiers on a backbone.

An SDN attaches *internal classifiers* (ICs) to an off-the-shelf backbone at
fixed fractions of its depth: by default 15%, 30%, 45%, 60%, 75% and 90% of
the backbone's MACs, as in the paper. Each IC reduces the feature map by a
learned mix of max- and average-pooling to about 4x4 and classifies it with
one linear layer; the backbone's own classifier is the last exit.

In the stage/exit decomposition, the backbone is a list of *units* (the stem,
then residual blocks / conv layers / depthwise-separable blocks); stage ``i``
runs the units up to the one IC ``i`` sits after, and the last stage runs the
rest of the backbone. The state between stages is one feature map.

An IC position ``p`` lands after the unit whose cumulative share of the
backbone (its classifier included) is nearest to ``p``, one IC per unit. This
reproduces the paper's placements for ResNet-56 (after blocks 4, 8, 12, 16,
20, 24) and VGG-16 (after convs 2, 4, 6, 7, 9, 10); for MobileNet the paper's
hand-picked blocks (3, 5, 7, 9, 12) differ slightly from the nearest-MAC rule,
which gives blocks 2, 4, 7, 8, 10, 12 at 32x32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eebench.models.base import ModelConfigError, MultiExitModel, check_positive
from eebench.models.blocks import (
    check_position_basis,
    check_width_mult,
    cifar_resnet_units,
    conv_bn_relu,
    cumulative_fractions,
    max_downsamples,
    profile_sequence,
    resnet_blocks_per_stage,
    scale_width,
    split_after,
    stem_stride,
)
from eebench.models.registry import register_model

PAPER_IC_POSITIONS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


class InternalClassifier(nn.Module):
    """The SDN internal classifier: mixed pooling, then one linear layer.

    Maps of side >= 8 are reduced by ``k = side // 4`` pooling to about 4x4 with
    ``alpha * maxpool + (1 - alpha) * avgpool`` (``alpha`` learned); smaller maps go to the
    linear layer as they are, as in the paper's feature-reduction rule.
    """

    def __init__(self, feature_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, w = feature_shape
        k = min(h, w) // 4
        self.max_pool: nn.Module | None = None
        self.avg_pool: nn.Module | None = None
        if k >= 2:
            self.max_pool = nn.MaxPool2d(k)
            self.avg_pool = nn.AvgPool2d(k)
            self.alpha = nn.Parameter(torch.tensor(0.5))
            h, w = h // k, w // k
        self.linear = nn.Linear(c * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.max_pool is not None and self.avg_pool is not None:
            x = self.alpha * self.max_pool(x) + (1 - self.alpha) * self.avg_pool(x)
        return self.linear(x.flatten(1))


class DepthwiseSeparable(nn.Module):
    """MobileNet v1 block: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU.

    ``dw_relu=False`` leaves out the ReLU between the depthwise and the pointwise conv
    (as Xception and MobileNetV2 do): at small width multipliers that ReLU throws away much
    of the few channels' information, and narrow MobileNets generalise markedly worse with it.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dw_relu: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True) if dw_relu else nn.Identity(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@dataclass
class Backbone:
    """A built backbone: feature units in order, then its own classifier (pooling + FC)."""

    units: list[nn.Module]
    head: nn.Module


@dataclass(frozen=True)
class ResNetBackbone:
    """CIFAR ResNet of ``depth = 6n + 2`` layers (ResNet-56: n = 9), base width 16."""

    depth: int = 56
    width: int = 16

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> Backbone:
        n = resnet_blocks_per_stage(model, self.depth)
        check_positive(model, width=self.width)
        units = cifar_resnet_units(input_shape[0], self.width, n, min(input_shape[1:]))
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * self.width, num_classes)
        )
        return Backbone(units, head)


VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (1, 3, 6, 9, 12)


@dataclass(frozen=True)
class VGGBackbone:
    """VGG-16 with BatchNorm, CIFAR-style: 13 conv-BN-ReLU units with 2x2 max-pooling after
    convs 2, 4, 7, 10, 13, then FC 512 -> FC 512 -> FC (dropout 0.5). Poolings that would take
    the map below one pixel are left out (the last ones first); the classifier starts with a
    global average pooling, which is the identity at 32x32."""

    width_mult: float = 1.0

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> Backbone:
        m = check_width_mult(model, self.width_mult)
        pools = set(VGG16_POOL_AFTER[: max_downsamples(min(input_shape[1:]))])
        units: list[nn.Module] = []
        c = input_shape[0]
        for j, w in enumerate(VGG16_CHANNELS):
            w = scale_width(w, m)
            layers = [*conv_bn_relu(c, w)]
            if j in pools:
                layers.append(nn.MaxPool2d(2))
            units.append(nn.Sequential(*layers))
            c = w
        fc = scale_width(512, m)
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(fc, num_classes),
        )
        return Backbone(units, head)


MOBILENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


@dataclass(frozen=True)
class MobileNetBackbone:
    """MobileNet v1 (Howard et al. 2017): a 3x3 conv (32) stem and 13 depthwise-separable
    blocks, global average pooling, FC. The stem has stride 1 below 64 px (the SDN CIFAR
    version) and stride 2 from 64 px up (the ImageNet version); the blocks stop halving the
    map at 2x2 (the CIFAR version's last map), so small inputs keep some spatial extent.
    ``dw_relu`` keeps (paper) or drops the ReLU after each depthwise conv."""

    width_mult: float = 1.0
    dw_relu: bool = True

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> Backbone:
        m = check_width_mult(model, self.width_mult)
        if not isinstance(self.dw_relu, bool):
            raise ModelConfigError(model, "dw_relu", "true or false", self.dw_relu)
        c = scale_width(32, m)
        units: list[nn.Module] = [
            conv_bn_relu(input_shape[0], c, stride=stem_stride(min(input_shape[1:])))
        ]
        side = -(-min(input_shape[1:]) // stem_stride(min(input_shape[1:])))
        for w, stride in MOBILENET_BLOCKS:
            stride = stride if side >= 4 else 1  # stop halving at 2x2, the CIFAR version's last map
            units.append(DepthwiseSeparable(c, scale_width(w, m), stride, self.dw_relu))
            side = -(-side // stride)
            c = scale_width(w, m)
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        return Backbone(units, head)


BackboneSpec = ResNetBackbone | VGGBackbone | MobileNetBackbone


def place_ics(model: str, cumulative: Sequence[float], positions: Any) -> list[int]:
    """Unit index each IC sits after, one IC per unit and never after the last unit.

    Each IC goes after the unit whose cumulative share of the backbone is nearest to its
    position. When two positions would share a unit (a shallow backbone, or a small input
    that concentrates the MACs in a few units), the placement with the smallest total
    distance among strictly increasing units is taken instead (the earlier unit on a tie).
    """
    expected = "strictly increasing fractions of the backbone in (0, 1), e.g. [0.15, 0.3, 0.45]"
    if not isinstance(positions, (list, tuple)) or any(
        isinstance(p, bool) or not isinstance(p, (int, float)) for p in positions
    ):
        raise ModelConfigError(model, "ic_positions", expected, positions)
    if any(not 0 < p < 1 for p in positions) or any(
        a >= b for a, b in zip(positions, positions[1:])
    ):
        raise ModelConfigError(model, "ic_positions", expected, positions)
    candidates = list(cumulative[:-1])  # an IC after the last unit would be the final exit
    if len(positions) > len(candidates):
        raise ModelConfigError(
            model,
            "ic_positions",
            f"at most {len(candidates)} positions: this backbone has {len(candidates) + 1} units "
            "and an IC needs a unit of its own before the last (use fewer ICs or a deeper backbone)",
            positions,
        )
    return _min_distance_increasing(candidates, positions) if positions else []


def _min_distance_increasing(candidates: Sequence[float], positions: Sequence[float]) -> list[int]:
    """Strictly increasing unit indices minimising the summed |candidate - position| (dynamic
    programming over positions x units; ties go to the earlier unit)."""
    eps = 1e-12
    m = len(candidates)
    inf = float("inf")
    cost = [[inf] * m for _ in positions]
    back = [[-1] * m for _ in positions]
    for j in range(m):
        cost[0][j] = abs(candidates[j] - positions[0])
    for i in range(1, len(positions)):
        best, arg = inf, -1
        for j in range(m):
            if j > 0 and cost[i - 1][j - 1] < best - eps:
                best, arg = cost[i - 1][j - 1], j - 1
            if arg >= 0:
                cost[i][j] = best + abs(candidates[j] - positions[i])
                back[i][j] = arg
    last = len(positions) - 1
    j = min(range(m), key=lambda u: cost[last][u])
    for u in range(m):  # the earliest unit within rounding of the minimum
        if cost[last][u] <= cost[last][j] + eps:
            j = u
            break
    units = [j]
    for i in range(last, 0, -1):
        j = back[i][j]
        units.append(j)
    return units[::-1]


class ShallowDeepNetwork(MultiExitModel):
    """A backbone with internal classifiers at given fractions of its depth.

    ``ic_positions`` are fractions of the backbone's MACs (``position_basis="macs"``, the
    paper's choice) or of its conv/linear layers (``"layers"``); the declared exit positions
    are where the ICs actually land (the cumulative share after their unit), the last exit
    being the backbone's own classifier at 1.0.
    """

    family = "intermediate"

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        backbone: BackboneSpec,
        ic_positions: Sequence[float] = PAPER_IC_POSITIONS,
        position_basis: str = "macs",
        name: str | None = None,
    ) -> None:
        super().__init__(num_classes, input_shape)
        name = name or type(self).__name__
        check_position_basis(name, position_basis)
        built = backbone.build(name, self.input_shape, self.num_classes)
        profiles = profile_sequence([*built.units, built.head], self.input_shape)
        cumulative = cumulative_fractions(profiles, position_basis)
        self.ic_units = place_ics(name, cumulative[: len(built.units)], ic_positions)
        self.stages.extend(split_after(built.units, self.ic_units))
        self.exits.extend(
            InternalClassifier(profiles[u].output_shape, self.num_classes) for u in self.ic_units
        )
        self.exits.append(built.head)
        self.position_basis = position_basis
        self._positions = [cumulative[u] for u in self.ic_units] + [1.0]

    def _exit_positions(self) -> list[float]:
        return list(self._positions)

    def backbone(self) -> nn.Sequential:
        """The plain backbone (every unit, then its classifier), without the ICs."""
        units = [u for stage in self.stages for u in stage]
        return nn.Sequential(*units, self.exits[-1])


@register_model("sdn-resnet")
def sdn_resnet(
    num_classes: int,
    input_shape: Sequence[int],
    depth: int = 56,
    width: int = 16,
    ic_positions: Sequence[float] = PAPER_IC_POSITIONS,
    position_basis: str = "macs",
) -> ShallowDeepNetwork:
    spec = ResNetBackbone(depth, width)
    return ShallowDeepNetwork(
        num_classes, input_shape, spec, ic_positions, position_basis, name="sdn-resnet"
    )


@register_model("sdn-vgg")
def sdn_vgg(
    num_classes: int,
    input_shape: Sequence[int],
    width_mult: float = 1.0,
    ic_positions: Sequence[float] = PAPER_IC_POSITIONS,
    position_basis: str = "macs",
) -> ShallowDeepNetwork:
    spec = VGGBackbone(width_mult)
    return ShallowDeepNetwork(
        num_classes, input_shape, spec, ic_positions, position_basis, name="sdn-vgg"
    )


@register_model("sdn-mobilenet")
def sdn_mobilenet(
    num_classes: int,
    input_shape: Sequence[int],
    width_mult: float = 1.0,
    dw_relu: bool = True,
    ic_positions: Sequence[float] = PAPER_IC_POSITIONS,
    position_basis: str = "macs",
) -> ShallowDeepNetwork:
    spec = MobileNetBackbone(width_mult, dw_relu)
    return ShallowDeepNetwork(
        num_classes, input_shape, spec, ic_positions, position_basis, name="sdn-mobilenet"
    )

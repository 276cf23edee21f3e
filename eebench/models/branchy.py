"""BranchyNet (Teerapittayanon, McDanel & Kung, ICPR 2016): side branches on a backbone.

A BranchyNet is a backbone with a few *side branches*: small classifiers (a
couple of conv layers, pooling and a linear layer) attached at hand-picked
points early in the network. In the stage/exit decomposition, stage ``i`` is
the run of backbone units up to branch point ``i``, exit ``i`` is side branch
``i``, and the last stage ends the backbone with the backbone's own classifier
as the last exit. The state between stages is one feature map.

Branch placement follows the paper and its public code:

* ``branchynet-lenet`` (B-LeNet): one branch after the first conv layer;
* ``branchynet-alexnet`` (B-AlexNet, CIFAR-scale): branches after the 2nd and
  the 3rd conv layer;
* ``branchynet-resnet`` (B-ResNet-110): branches after the first residual
  block (layer 3) and at the end of the first stage (layer 37 of 110).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from eebench.models.base import ModelConfigError, MultiExitModel, check_positive
from eebench.models.blocks import (
    BasicBlock,
    check_position_basis,
    check_width_mult,
    cifar_resnet_units,
    conv_bn_relu,
    cumulative_fractions,
    profile_module,
    profile_sequence,
    resnet_blocks_per_stage,
    scale_width,
    split_after,
)
from eebench.models.registry import register_model


def _with_linear(
    layers: list[nn.Module], input_shape: Sequence[int], out_features: int
) -> nn.Sequential:
    """``layers`` then flatten and a linear layer sized for what ``layers`` make of ``input_shape``."""
    features = nn.Sequential(*layers)
    n = math.prod(profile_module(features, input_shape).output_shape)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(n, out_features))


def _pool2(side: int) -> tuple[nn.Module, int]:
    """LeNet's 2x2 max-pooling, skipped (identity) once the map is down to one pixel."""
    return (nn.MaxPool2d(2), side // 2) if side >= 2 else (nn.Identity(), side)


def _alex_pool() -> nn.MaxPool2d:
    """AlexNet's overlapping 3x3/2 pooling; padding 1 gives ceil(side / 2), never below 1 pixel."""
    return nn.MaxPool2d(3, stride=2, padding=1)


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(3, alpha=5e-5, beta=0.75)


@dataclass
class BranchyLayout:
    """A built backbone: units in order, its classifier, and the side branches with their points."""

    units: list[nn.Module]
    head: nn.Module
    branch_after: list[int]
    branches: list[nn.Module]


@dataclass(frozen=True)
class LeNetSpec:
    """B-LeNet: conv 5x5 (5) -> pool -> conv 5x5 (10) -> pool -> conv 5x5 (20) -> pool -> FC 84 -> FC.

    The branch reads the first conv's output: pool, ReLU, conv 3x3 (10), pool, ReLU, linear.
    Convs use 'same' padding and each 2x2 pooling is skipped once the map is one pixel, so
    any input from 1x1 up works.
    """

    width_mult: float = 1.0

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> BranchyLayout:
        m = check_width_mult(model, self.width_mult)
        c1, c2, c3, fc, cb = (scale_width(c, m) for c in (5, 10, 20, 84, 10))
        cin, side = input_shape[0], min(input_shape[1:])
        p1, s1 = _pool2(side)
        p2, s2 = _pool2(s1)
        p3, _ = _pool2(s2)
        units: list[nn.Module] = [
            nn.Conv2d(cin, c1, 5, padding=2),
            nn.Sequential(p1, nn.ReLU(), nn.Conv2d(c1, c2, 5, padding=2)),
            nn.Sequential(p2, nn.ReLU(), nn.Conv2d(c2, c3, 5, padding=2)),
        ]
        shapes = [p.output_shape for p in profile_sequence(units, input_shape)]
        head = _with_linear([p3, nn.ReLU()], shapes[-1], fc)
        head.extend([nn.ReLU(), nn.Linear(fc, num_classes)])
        b1, t1 = _pool2(side)
        b2, _ = _pool2(t1)
        branch = _with_linear(
            [b1, nn.ReLU(), nn.Conv2d(c1, cb, 3, padding=1), b2, nn.ReLU()], shapes[0], num_classes
        )
        return BranchyLayout(units, head, [0], [branch])


@dataclass(frozen=True)
class AlexNetSpec:
    """B-AlexNet for CIFAR: conv 5x5 (32) -> conv 5x5 (64) -> conv 3x3 (96, 96, 64) -> FC 256 -> FC 128.

    ReLU, 3x3/2 max-pooling and local response normalisation between the first convs as in
    the paper's code; dropout 0.5 in the classifier. Branch 1 reads conv 2 (ReLU, pool, LRN,
    conv 3x3 (32) x2, pool, linear), branch 2 reads conv 3 (ReLU, pool, LRN, conv 3x3 (32),
    pool, linear).
    """

    width_mult: float = 1.0

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> BranchyLayout:
        m = check_width_mult(model, self.width_mult)
        c1, c2, c3, c4, c5, f1, f2, cb = (
            scale_width(c, m) for c in (32, 64, 96, 96, 64, 256, 128, 32)
        )
        cin = input_shape[0]
        units: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(cin, c1, 5, padding=2),
                nn.ReLU(inplace=True),
                _alex_pool(),
                _lrn(),
                nn.Conv2d(c1, c2, 5, padding=2),
            ),
            nn.Sequential(nn.ReLU(), _alex_pool(), _lrn(), nn.Conv2d(c2, c3, 3, padding=1)),
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(c3, c4, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c4, c5, 3, padding=1),
                nn.ReLU(inplace=True),
            ),
        ]
        shapes = [p.output_shape for p in profile_sequence(units, input_shape)]
        head = _with_linear([_alex_pool()], shapes[-1], f1)
        head.extend(
            [nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(f1, f2), nn.ReLU(inplace=True)]
        )
        head.extend([nn.Dropout(0.5), nn.Linear(f2, num_classes)])

        def conv_relu(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True)]

        branch1 = _with_linear(
            [nn.ReLU(), _alex_pool(), _lrn(), *conv_relu(c2, cb), *conv_relu(cb, cb), _alex_pool()],
            shapes[0],
            num_classes,
        )
        branch2 = _with_linear(
            [nn.ReLU(), _alex_pool(), _lrn(), *conv_relu(c3, cb), _alex_pool()],
            shapes[1],
            num_classes,
        )
        return BranchyLayout(units, head, [0, 1], [branch1, branch2])


@dataclass(frozen=True)
class ResNetSpec:
    """B-ResNet: a CIFAR ResNet of ``depth = 6n + 2`` layers with side branches.

    ``branch_blocks`` are residual-block numbers (1-based, counted over all ``3n`` blocks)
    after which a branch sits; default: after block 1 and block ``n`` (the end of the first
    stage), as in the paper's ResNet-110 (layers 3 and 37). The first branch is the paper's
    conv branch (conv-BN-ReLU x2 at twice the base width, 3x3/2 max-pooling, linear), later
    ones its residual branch (one basic block, linear).
    """

    depth: int = 110
    width: int = 16
    branch_blocks: Sequence[int] | None = None

    def build(self, model: str, input_shape: Sequence[int], num_classes: int) -> BranchyLayout:
        n = resnet_blocks_per_stage(model, self.depth)
        check_positive(model, width=self.width)
        given = self.branch_blocks
        if given is not None and not isinstance(given, (list, tuple)):
            given = (given,)
        blocks = tuple(given) if given is not None else (1, max(n, 2))
        if (
            not blocks
            or any(isinstance(b, bool) or not isinstance(b, int) for b in blocks)
            or any(b < 1 or b >= 3 * n for b in blocks)
            or any(a >= b for a, b in zip(blocks, blocks[1:]))
        ):
            raise ModelConfigError(
                model,
                "branch_blocks",
                f"strictly increasing residual-block numbers in [1, {3 * n - 1}] (depth {self.depth} "
                f"has {3 * n} blocks; the last one ends the backbone)",
                self.branch_blocks,
            )
        units = cifar_resnet_units(input_shape[0], self.width, n, min(input_shape[1:]))
        shapes = [p.output_shape for p in profile_sequence(units, input_shape)]
        c = shapes[-1][0]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        branches: list[nn.Module] = []
        for k, b in enumerate(blocks):  # unit b is residual block b (unit 0 is the stem)
            cb = shapes[b][0]
            if k == 0:
                layers = [
                    conv_bn_relu(cb, 2 * self.width),
                    conv_bn_relu(2 * self.width, 2 * self.width),
                ]
                layers.append(_alex_pool())
            else:
                layers = [BasicBlock(cb, cb)]
            branches.append(_with_linear(layers, shapes[b], num_classes))
        return BranchyLayout(units, head, list(blocks), branches)


BackboneSpec = LeNetSpec | AlexNetSpec | ResNetSpec


class BranchyNet(MultiExitModel):
    """A backbone with side branches; the last exit is the backbone's own classifier.

    ``position_basis`` says how exit positions are declared: cumulative share of the
    backbone's MACs (``"macs"``) or of its conv/linear layers (``"layers"``); the backbone
    includes its classifier, so the last exit is at 1.0.
    """

    family = "intermediate"

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        backbone: BackboneSpec,
        position_basis: str = "macs",
        name: str | None = None,
    ) -> None:
        super().__init__(num_classes, input_shape)
        name = name or type(self).__name__
        check_position_basis(name, position_basis)
        layout = backbone.build(name, self.input_shape, self.num_classes)
        self.stages.extend(split_after(layout.units, layout.branch_after))
        self.exits.extend([*layout.branches, layout.head])
        self.branch_after = list(layout.branch_after)
        self.position_basis = position_basis
        profiles = profile_sequence([*layout.units, layout.head], self.input_shape)
        cumulative = cumulative_fractions(profiles, position_basis)
        self._positions = [cumulative[u] for u in self.branch_after] + [1.0]

    def _exit_positions(self) -> list[float]:
        return list(self._positions)

    def backbone(self) -> nn.Sequential:
        """The plain backbone (every unit, then its classifier), without the side branches."""
        units = [u for stage in self.stages for u in stage]
        return nn.Sequential(*units, self.exits[-1])


@register_model("branchynet-lenet")
def branchynet_lenet(
    num_classes: int,
    input_shape: Sequence[int],
    width_mult: float = 1.0,
    position_basis: str = "macs",
) -> BranchyNet:
    return BranchyNet(
        num_classes, input_shape, LeNetSpec(width_mult), position_basis, name="branchynet-lenet"
    )


@register_model("branchynet-alexnet")
def branchynet_alexnet(
    num_classes: int,
    input_shape: Sequence[int],
    width_mult: float = 1.0,
    position_basis: str = "macs",
) -> BranchyNet:
    return BranchyNet(
        num_classes, input_shape, AlexNetSpec(width_mult), position_basis, name="branchynet-alexnet"
    )


@register_model("branchynet-resnet")
def branchynet_resnet(
    num_classes: int,
    input_shape: Sequence[int],
    depth: int = 110,
    width: int = 16,
    branch_blocks: Sequence[int] | None = None,
    position_basis: str = "macs",
) -> BranchyNet:
    spec = ResNetSpec(depth, width, branch_blocks)
    return BranchyNet(num_classes, input_shape, spec, position_basis, name="branchynet-resnet")

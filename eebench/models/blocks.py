"""Building blocks shared by several families (kept small: family-specific blocks live with their family)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eebench.models.base import ModelConfigError


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


# --------------------------------------------------------------------------- static profiles
# (used by families that place exits by depth: the intermediate-classifier family)


@dataclass(frozen=True)
class ModuleProfile:
    """What one module does to one per-sample input shape: output shape, MACs, weighted layers.

    Found by one forward of a zero sample (eval mode, no autograd) with hooks on the
    convolutions and linear layers. ``macs`` counts convolutions and linear layers
    (one multiply-add = one MAC); ``layers`` counts the convolutions and linear layers on the
    main path: projection shortcuts (a submodule named ``shortcut``) are not counted, as in
    the usual ResNet-56 / ResNet-110 depth.
    """

    output_shape: tuple[int, ...]
    macs: int
    layers: int


def profile_module(module: nn.Module, input_shape: Sequence[int]) -> ModuleProfile:
    """The :class:`ModuleProfile` of ``module`` (in eval mode) on a ``(C, H, W)`` input."""
    macs = 0

    def count(mod: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            kernel = mod.kernel_size[0] * mod.kernel_size[1]
            macs += output.numel() * (mod.in_channels // mod.groups) * kernel
        elif isinstance(mod, nn.Linear):
            macs += output.numel() * mod.in_features

    weighted = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for _, m in weighted]
    was_training = module.training
    module.eval()
    try:
        device = next((t.device for t in module.parameters()), torch.device("cpu"))
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    layers = sum(1 for n, _ in weighted if "shortcut" not in n.split("."))
    return ModuleProfile(tuple(int(s) for s in out.shape[1:]), macs, layers)


def profile_sequence(
    modules: Sequence[nn.Module], input_shape: Sequence[int]
) -> list[ModuleProfile]:
    """Profiles of modules applied one after the other, starting from ``input_shape``."""
    shape = tuple(input_shape)
    out = []
    for m in modules:
        p = profile_module(m, shape)
        out.append(p)
        shape = p.output_shape
    return out


POSITION_BASES = ("macs", "layers")


def check_position_basis(model: str, basis: str) -> None:
    if basis not in POSITION_BASES:
        raise ModelConfigError(model, "position_basis", f"one of {list(POSITION_BASES)}", basis)


def cumulative_fractions(profiles: Sequence[ModuleProfile], basis: str) -> list[float]:
    """Cumulative share of the whole sequence (by MACs or layers) reached after each module."""
    check_position_basis("profile", basis)
    weights = [p.macs if basis == "macs" else p.layers for p in profiles]
    total = sum(weights) or 1
    acc, out = 0, []
    for w in weights:
        acc += w
        out.append(acc / total)
    return out


def split_after(units: Sequence[nn.Module], cut_after: Sequence[int]) -> list[nn.Sequential]:
    """Group backbone units into stages: stage ``i`` ends with unit ``cut_after[i]``, the last
    stage with the last unit. Only the grouping is new; the unit modules are the same objects."""
    bounds = [*(c + 1 for c in cut_after), len(units)]
    stages, start = [], 0
    for end in bounds:
        stages.append(nn.Sequential(*units[start:end]))
        start = end
    return stages


# --------------------------------------------------------------------------- widths and ResNets


def check_width_mult(model: str, value: Any, field_name: str = "width_mult") -> float:
    """A width multiplier must be a positive number; returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelConfigError(
            model, field_name, "a positive number (1.0 = the paper's widths)", value
        )
    return float(value)


def scale_width(channels: int, mult: float) -> int:
    """``channels * mult`` rounded, never below one channel."""
    return max(1, int(round(channels * mult)))


def stem_stride(side: int) -> int:
    """CIFAR-style backbones keep full resolution in the stem below 64 px (digits, CIFAR) and
    halve it from 64 px up (Tiny ImageNet, ImageNet), as the SDN code does for Tiny ImageNet."""
    return 2 if side >= 64 else 1


class BasicBlock(nn.Module):
    """The ResNet basic block (He et al. 2016): two 3x3 conv-BN, a shortcut (identity, or a
    1x1 conv-BN projection when the shape changes), ReLU after the sum. 2 layers deep."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet_blocks_per_stage(model: str, depth: Any) -> int:
    """``n`` of a CIFAR ResNet of ``depth = 6n + 2`` layers (20, 32, 56, 110, ...)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ModelConfigError(
            model, "depth", "6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...)", depth
        )
    return (depth - 2) // 6


def cifar_resnet_units(
    in_channels: int, width: int, blocks_per_stage: int, side: int
) -> list[nn.Module]:
    """The CIFAR ResNet (He et al. 2016, sec. 4.2) as a list of units: a 3x3 conv-BN-ReLU stem,
    then 3 stages of ``blocks_per_stage`` basic blocks with widths ``width * (1, 2, 4)``, the
    2nd and 3rd stage starting with a stride-2 block. Strided convs (padding 1) never shrink a
    map below 1 pixel, so any input side works."""
    units: list[nn.Module] = [conv_bn_relu(in_channels, width, stride=stem_stride(side))]
    c = width
    for s, mult in enumerate((1, 2, 4)):
        for b in range(blocks_per_stage):
            units.append(BasicBlock(c, width * mult, stride=2 if s > 0 and b == 0 else 1))
            c = width * mult
    return units

"""Resolution Adaptive Networks (RANet; Yang et al., CVPR 2020).

RANet exploits spatial redundancy: an easy image can be classified from a
low-resolution representation, and only a hard one needs the detail of a
higher resolution. The network is a sequence of *sub-networks* (flows), each
a DenseNet working from one resolution of the input, lowest first:

* a first layer builds the base features of every sub-network from the input:
  a stem at the finest resolution, then one 3x3 conv per sub-network, strided
  where the next sub-network's resolution is lower (``scale_list`` gives each
  sub-network's resolution level, 1 the lowest; equal levels share a side);
* sub-network 0 is a plain DenseNet of ``n_blocks`` blocks at the lowest
  resolution, with a classifier after every block;
* sub-network ``f > 0`` has ``block_step`` more blocks than sub-network
  ``f - 1``. Its first blocks are *fusion* blocks: each of their dense layers
  adds, besides its own 3x3 conv (``growth - floor(growth * compress_factor)``
  channels), a 3x3 conv of the matching layer's features of sub-network
  ``f - 1`` (``floor(growth * compress_factor)`` channels, bilinearly resized to
  this resolution), and each block ends with a 1x1 conv of the lower
  sub-network's block output (``floor(channels * compress_factor)`` channels)
  concatenated to its own. Along its fusion blocks the sub-network strides down
  (the last layer of a fusion block is strided where the lower sub-networks
  leave a resolution) until it reaches the lowest resolution; its remaining
  ``block_step`` blocks are plain blocks there, each followed by a classifier.

Where a block ends at a third, two thirds, ... of its sub-network (one
fewer than the sub-network's resolution level), a 1x1 transition compresses its
channels by ``reduction``. Every dense layer is a 1x1 bottleneck (to at most
``bn_factor[f] * growth`` channels) and a 3x3 conv, each with BatchNorm and
ReLU. Classifiers are MSDNet's (:class:`eebench.models.msdnet.MSDNetHead`).

Stage/exit decomposition: stage ``i`` runs every block computed after exit
``i - 1`` up to the block exit ``i`` reads (stage 0 also holds the first
layer): exit ``i`` of a sub-network ``f > 0`` that is its first exit pays for
all its fusion blocks, i.e. for the higher resolution that only the samples
that reach it need. The state is the tuple of every tensor a later stage still
reads: the first layer's features of sub-networks not started yet, the block
outputs the next sub-network will fuse (one tensor per block, or two for a
block that strides down, since a dense block's per-layer features are channel
prefixes of its output), and last the features the exit reads.

Differences from the reference code (github yangle15/RANet-pytorch,
models/RANet.py), none of which changes a MAC count of the presets (the ImageNet
presets have ``n_channels`` fewer parameters, the stem's bias): the input
channel count follows ``input_shape`` (the reference assumes 3); a bilinear
resize to the size a map already has (an identity) is skipped; the ImageNet
stem's 7x7 conv has no bias (it is followed by BatchNorm); classifiers pool
adaptively to 1x1 (the reference's 2x2 average pool on its input sizes); a
sub-network strides down exactly ``level - 1`` times (the reference would also
stride a second sub-network at level 1, which no preset uses); ``lin_grow``
steps give block ``b`` (from 1) ``step * b`` layers, as the reference's ``lg``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eebench.models.base import (
    InputShapeError,
    ModelConfigError,
    MultiExitModel,
    State,
    as_tuple,
    check_positive,
)
from eebench.models.blocks import conv_bn_relu
from eebench.models.msdnet import (
    MIN_COARSEST_SIDE,
    MSDNetHead,
    bottleneck_conv,
    check_overrides,
    min_input_side,
)
from eebench.models.msdnet import scale_sides as level_sides  # a resolution level is a scale
from eebench.models.registry import register_model

STEP_MODES = ("even", "lin_grow")
STEMS = ("cifar", "imagenet")


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class BlockSpec:
    """One dense block in the plan, in execution order.

    ``block`` counts from 1 within sub-network ``flow``; ``level`` is the
    resolution of its input in halvings below the first layer's finest map;
    ``down``: its last layer strides to ``level + 1``; ``transition_to``: the
    channel count after its 1x1 transition, or ``None``; ``exit``: a classifier
    reads its output.
    """

    flow: int
    block: int
    layers: int
    in_channels: int
    growth: int
    fuse: bool
    down: bool
    level: int
    transition_to: int | None
    exit: bool
    compress_factor: float

    def channels(self, i: int) -> int:
        """Channels after ``i`` dense layers (``i = 0``: the block's input)."""
        return self.in_channels + i * self.growth

    @property
    def fused_channels(self) -> int:
        """Channels before the transition: dense output plus, for a fusion block, the lower
        sub-network's compressed block output."""
        n = self.channels(self.layers)
        return n + math.floor(n * self.compress_factor) if self.fuse else n

    @property
    def out_channels(self) -> int:
        return self.fused_channels if self.transition_to is None else self.transition_to


def flow_blocks(n_blocks: int, block_step: int, n_flows: int) -> list[int]:
    """Blocks per sub-network: ``n_blocks`` for the first, ``block_step`` more for each next."""
    return [n_blocks + block_step * f for f in range(n_flows)]


def block_layers(block: int, step: int, step_mode: str) -> int:
    """Dense layers of block ``block`` (from 1), the same in every sub-network."""
    return step if step_mode == "even" else step * block


def transition_blocks(blocks: int, level: int) -> set[int]:
    """Blocks followed by a transition: ``floor(k * blocks / level)`` for ``k = 1 .. level - 1``."""
    return {math.floor(k * blocks / level) for k in range(1, level)}


def down_blocks(flow: int, level: int, blocks: Sequence[int]) -> set[int]:
    """Blocks whose last layer strides down: where sub-networks ``flow - level + 1 .. flow - 1``
    end (the last ``level - 1`` of them), so sub-network ``flow`` reaches the lowest resolution
    by the end of its fusion blocks."""
    return {blocks[k] for k in range(flow - level + 1, flow)}


def plan_blocks(config: RANetConfig) -> list[BlockSpec]:
    """Every block of every sub-network in execution order, with its channels and resolution."""
    scales = list(config.scale_list)
    top = max(scales)
    blocks = flow_blocks(config.n_blocks, config.block_step, len(scales))
    plan: list[BlockSpec] = []
    for f, level in enumerate(scales):
        c = config.n_channels * config.gr_factor[f]
        growth = config.growth_rate * config.gr_factor[f]
        resolution = top - level
        trans = transition_blocks(blocks[f], level)
        downs = down_blocks(f, level, blocks)
        fusion_blocks = blocks[f - 1] if f > 0 else 0
        for b in range(1, blocks[f] + 1):
            n = block_layers(b, config.step, config.step_mode)
            fuse = b <= fusion_blocks
            spec = BlockSpec(
                flow=f,
                block=b,
                layers=n,
                in_channels=c,
                growth=growth,
                fuse=fuse,
                down=fuse and b in downs,
                level=resolution,
                transition_to=None,
                exit=not fuse,
                compress_factor=config.compress_factor,
            )
            if b in trans:
                spec = _with_transition(spec, math.floor(config.reduction * spec.fused_channels))
            plan.append(spec)
            c = spec.out_channels
            resolution += int(spec.down)
    return plan


def _with_transition(spec: BlockSpec, channels: int) -> BlockSpec:
    return replace(spec, transition_to=channels)


def first_layer_levels(scale_list: Sequence[int]) -> list[int]:
    """Resolution (halvings below the finest) of each sub-network's base features."""
    top = max(scale_list)
    return [top - s for s in scale_list]


# --------------------------------------------------------------------------- blocks
def _resize(t: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``t`` to the spatial size of ``like`` (align_corners, as the paper's code)."""
    return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=True)


class FirstLayer(nn.Module):
    """Base features of every sub-network, built from the finest down.

    The finest sub-network's come from the stem ('cifar': a 3x3 conv at the
    input side; 'imagenet': a 7x7 stride-2 conv and a 3x3 stride-2 max-pool);
    each lower one's from a 3x3 conv of the next finer one's, strided where its
    level is lower. Returns them in sub-network order (lowest resolution first).
    """

    def __init__(
        self,
        in_channels: int,
        n_channels: int,
        gr_factor: Sequence[int],
        scale_list: Sequence[int],
        stem: str,
    ) -> None:
        super().__init__()
        order = list(range(len(scale_list)))[::-1]  # finest first
        c0 = n_channels * gr_factor[order[0]]
        if stem == "cifar":
            first: nn.Module = conv_bn_relu(in_channels, c0, kernel=3)
        else:
            first = nn.Sequential(
                nn.Conv2d(in_channels, c0, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(c0),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        convs = [first]
        for prev, f in zip(order, order[1:]):
            stride = 1 if scale_list[f] == scale_list[prev] else 2
            convs.append(
                conv_bn_relu(n_channels * gr_factor[prev], n_channels * gr_factor[f], stride=stride)
            )
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for conv in self.convs:
            x = conv(x)
            out.append(x)
        return out[::-1]


class PlainBlock(nn.Module):
    """A dense block at one resolution (the reference's ``_BlockNormal``).

    Returns ``(dense output, block output)``: the second is the first after
    the transition, or the same tensor without one.
    """

    def __init__(self, spec: BlockSpec, bn_width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            bottleneck_conv(spec.channels(i), spec.growth, 1, True, bn_width)
            for i in range(spec.layers)
        )
        self.transition = (
            conv_bn_relu(spec.fused_channels, spec.transition_to, kernel=1)
            if spec.transition_to is not None
            else None
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.layers:
            x = torch.cat([x, conv(x)], dim=1)
        return x, (x if self.transition is None else self.transition(x))


class FusionLayer(nn.Module):
    """A dense layer that also grows from the lower sub-network (the reference's ``ConvUpNormal``).

    New channels: a 3x3 conv of the matching lower-resolution features,
    resized to this layer's output, and a 3x3 conv of this sub-network's
    features (strided when ``down``, which also resizes the features kept).
    """

    def __init__(
        self,
        in_channels: int,
        low_channels: int,
        growth: int,
        compress_factor: float,
        down: bool,
        bn_width: int,
        low_bn_width: int,
        resize_low: bool,
    ) -> None:
        super().__init__()
        up = math.floor(growth * compress_factor)
        self.up = bottleneck_conv(low_channels, up, 1, True, low_bn_width)
        self.normal = bottleneck_conv(in_channels, growth - up, 2 if down else 1, True, bn_width)
        self.down = down
        self.resize_low = resize_low

    def forward(self, x: Tensor, low: Tensor) -> Tensor:
        new = self.normal(x)
        up = self.up(low)
        if self.resize_low:
            up = _resize(up, new)
        if self.down:
            x = _resize(x, new)
        return torch.cat([x, up, new], dim=1)


class FusionBlock(nn.Module):
    """A dense block fused with the same block of the lower sub-network (``_BlockUpNormal``).

    ``low`` is that block's dense output and ``low_before`` (for a block that
    strides down) its features before the strided layer: layer ``i`` reads the
    first ``low_channels[i]`` channels of them. Returns ``(features before the
    strided layer or None, dense output, block output)``.
    """

    def __init__(self, spec: BlockSpec, low: BlockSpec, bn_width: int, low_bn_width: int) -> None:
        super().__init__()
        n = spec.layers
        self.low_channels = [low.channels(i) for i in range(n + 1)]
        # level of each lower feature map read: before a strided layer, the lower block's input level
        low_levels = [low.level] * n
        out_levels = [spec.level + int(spec.down and i == n - 1) for i in range(n)]
        self.layers = nn.ModuleList(
            FusionLayer(
                spec.channels(i),
                self.low_channels[i],
                spec.growth,
                spec.compress_factor,
                spec.down and i == n - 1,
                bn_width,
                low_bn_width,
                resize_low=low_levels[i] != out_levels[i],
            )
            for i in range(n)
        )
        dense = spec.channels(n)
        self.last = conv_bn_relu(
            self.low_channels[n], math.floor(dense * spec.compress_factor), kernel=1
        )
        self.resize_last = low.level + int(low.down) != spec.level + int(spec.down)
        self.keep_before = spec.down
        self.transition = (
            conv_bn_relu(spec.fused_channels, spec.transition_to, kernel=1)
            if spec.transition_to is not None
            else None
        )

    def forward(
        self, x: Tensor, low: Tensor, low_before: Tensor | None
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        source = low if low_before is None else low_before
        before = None
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            if i == n - 1 and self.keep_before:
                before = x
            x = layer(x, source[:, : self.low_channels[i]])
        last = self.last(low)
        if self.resize_last:
            last = _resize(last, x)
        out = torch.cat([x, last], dim=1)
        return before, x, (out if self.transition is None else self.transition(out))


# --------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Wiring:
    """Where one block reads and writes in a stage's tensors, by name.

    A name aliases another where the tensors are the same (a plain block
    without transition: output = dense output; a one-layer strided block: the
    features before the strided layer = its input), so no tensor is passed twice.
    """

    reads: str
    low: str | None
    low_before: str | None
    dense: str
    before: str | None
    output: str


class RANetStage(nn.Module):
    """The blocks run between two exits, wired by name to the state tuple.

    ``in_names`` name the tensors of the incoming state; ``out_names`` those
    of the returned state (the last is what the exit reads).
    """

    def __init__(
        self,
        first: FirstLayer | None,
        blocks: Sequence[nn.Module],
        wiring: Sequence[Wiring],
        in_names: Sequence[str],
        out_names: Sequence[str],
        first_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.first = first
        self.blocks = nn.ModuleList(blocks)
        self.wiring = tuple(wiring)
        self.in_names = tuple(in_names)
        self.out_names = tuple(out_names)
        self.first_names = tuple(first_names)

    def forward(self, state: State) -> tuple[Tensor, ...]:
        tensors = as_tuple(state)
        env: dict[str, Tensor] = dict(zip(self.in_names, tensors))
        if self.first is not None:
            env.update(zip(self.first_names, self.first(tensors[0])))
        for block, w in zip(self.blocks, self.wiring):
            if w.low is not None:  # a fusion block
                low_before = env[w.low_before] if w.low_before is not None else None
                before, dense, out = block(env[w.reads], env[w.low], low_before)
                if w.before is not None and before is not None and w.before not in env:
                    env[w.before] = before
            else:
                dense, out = block(env[w.reads])
            env[w.dense] = dense
            env[w.output] = out
        return tuple(env[n] for n in self.out_names)


def _wire(plan: Sequence[BlockSpec]) -> list[Wiring]:
    """Names of every block's inputs and outputs (see :class:`Wiring`)."""
    wiring: list[Wiring] = []
    by_key: dict[tuple[int, int], Wiring] = {}
    for spec in plan:
        f, b = spec.flow, spec.block
        reads = f"in{f}" if b == 1 else by_key[(f, b - 1)].output
        dense = f"dense{f}.{b}"
        before = None
        if spec.down:
            before = reads if spec.layers == 1 else f"before{f}.{b}"
        output = f"out{f}.{b}" if spec.fuse or spec.transition_to is not None else dense
        low = low_before = None
        if spec.fuse:
            lower = by_key[(f - 1, b)]
            low, low_before = lower.dense, lower.before
        w = Wiring(reads, low, low_before, dense, before, output)
        by_key[(f, b)] = w
        wiring.append(w)
    return wiring


def _produced(w: Wiring) -> list[str]:
    names = [w.before] if w.before is not None and w.before != w.reads else []
    names.append(w.dense)
    if w.output != w.dense:
        names.append(w.output)
    return names


def _consumed(w: Wiring) -> list[str]:
    return [n for n in (w.reads, w.low, w.low_before) if n is not None]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RANetConfig:
    """The knobs of a RANet (the reference code's arguments, in snake case).

    ``scale_list``: each sub-network's resolution level, lowest first (1, then
    equal or one more each); ``gr_factor`` / ``bn_factor``: per sub-network
    multipliers of the growth rate (and base channels) and of the bottleneck
    width; ``n_blocks``: blocks of the first sub-network, ``block_step`` more in
    each next; ``step``: dense layers per block (``lin_grow``: ``step * b`` in
    block ``b``); ``head_channels``: width of the classifiers' two convs,
    ``None`` for the width of the features they read.
    """

    n_blocks: int
    block_step: int
    step: int
    step_mode: str
    n_channels: int
    growth_rate: int
    scale_list: Sequence[int]
    gr_factor: Sequence[int]
    bn_factor: Sequence[int]
    compress_factor: float = 0.25
    reduction: float = 0.5
    stem: str = "cifar"
    head_channels: int | None = 128

    @property
    def n_flows(self) -> int:
        return len(self.scale_list)

    def validate(self, model: str) -> None:
        """Raise ModelConfigError naming the first field that cannot build a network."""
        check_positive(
            model,
            n_blocks=self.n_blocks,
            block_step=self.block_step,
            step=self.step,
            n_channels=self.n_channels,
            growth_rate=self.growth_rate,
            scale_list=list(self.scale_list),
            gr_factor=list(self.gr_factor),
            bn_factor=list(self.bn_factor),
        )
        for name, allowed in (("step_mode", STEP_MODES), ("stem", STEMS)):
            if getattr(self, name) not in allowed:
                raise ModelConfigError(model, name, f"one of {list(allowed)}", getattr(self, name))
        scales = list(self.scale_list)
        if scales[0] != 1 or any(b - a not in (0, 1) for a, b in zip(scales, scales[1:])):
            raise ModelConfigError(
                model,
                "scale_list",
                "resolution levels from 1 (the lowest), each equal to the previous or one more, "
                "e.g. [1, 2, 3] or [1, 2, 3, 3]",
                scales,
            )
        for name in ("gr_factor", "bn_factor"):
            factors = list(getattr(self, name))
            if len(factors) != len(scales):
                raise ModelConfigError(
                    model,
                    name,
                    f"one factor per sub-network ({len(scales)}, as scale_list)",
                    factors,
                )
        cf = self.compress_factor
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0 < cf < 1:
            raise ModelConfigError(
                model,
                "compress_factor",
                "a number in (0, 1): the share of a fused layer's "
                "growth taken from the lower sub-network",
                cf,
            )
        for f in range(1, len(scales)):
            g = self.growth_rate * self.gr_factor[f]
            if math.floor(g * cf) < 1 or g - math.floor(g * cf) < 1:
                raise ModelConfigError(
                    model,
                    "compress_factor",
                    f"a share that leaves both parts of sub-network {f}'s growth "
                    f"({g} = growth_rate * gr_factor[{f}]) at least one channel",
                    cf,
                )
        r = self.reduction
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ModelConfigError(model, "reduction", "a number in (0, 1]", r)
        if self.head_channels is not None:
            check_positive(model, head_channels=self.head_channels)
        for spec in plan_blocks(self):
            if spec.transition_to is not None and spec.transition_to < 1:
                raise ModelConfigError(
                    model,
                    "reduction",
                    "a ratio that keeps at least one channel after a transition",
                    r,
                )


CONFIG_FIELDS = tuple(f.name for f in fields(RANetConfig))


# --------------------------------------------------------------------------- model
class RANet(MultiExitModel):
    """RANet with one exit per plain block; see the module docstring and :class:`RANetConfig`."""

    family = "ranet"

    def __init__(self, num_classes: int, input_shape: Sequence[int], config: RANetConfig) -> None:
        super().__init__(num_classes, input_shape)
        name = type(self).__name__
        config.validate(name)
        _check_input(name, self.input_shape, max(config.scale_list), config.stem)
        self.config = config
        self.plan = plan_blocks(config)
        wiring = _wire(self.plan)
        specs = {(s.flow, s.block): s for s in self.plan}
        first_names = [f"in{f}" for f in range(config.n_flows)]

        # group blocks into stages: each stage ends with a block an exit reads
        groups: list[list[int]] = [[]]
        for k, spec in enumerate(self.plan):
            groups[-1].append(k)
            if spec.exit:
                groups.append([])
        groups.pop()
        produced = [set(first_names) if g == 0 else set() for g in range(len(groups))]
        order: list[str] = list(first_names)
        for g, members in enumerate(groups):
            for k in members:
                new = _produced(wiring[k])
                produced[g].update(new)
                order.extend(n for n in new if n not in order)
        consumed = [{n for k in members for n in _consumed(wiring[k])} for members in groups]

        in_names: list[str] = ["image"]
        for g, members in enumerate(groups):
            head = wiring[members[-1]].output
            later = set().union(*consumed[g + 1 :]) if g + 1 < len(groups) else set()
            made = set().union(*produced[: g + 1])
            live = [n for n in order if n in made and n in later and n != head]
            out_names = [*live, head]
            blocks: list[nn.Module] = []
            for k in members:
                spec = self.plan[k]
                bn = config.bn_factor[spec.flow]
                if spec.fuse:
                    low = specs[(spec.flow - 1, spec.block)]
                    blocks.append(FusionBlock(spec, low, bn, config.bn_factor[spec.flow - 1]))
                else:
                    blocks.append(PlainBlock(spec, bn))
            first = None
            if g == 0:
                first = FirstLayer(
                    self.input_shape[0],
                    config.n_channels,
                    config.gr_factor,
                    config.scale_list,
                    config.stem,
                )
            self.stages.append(
                RANetStage(
                    first, blocks, [wiring[k] for k in members], in_names, out_names, first_names
                )
            )
            features = self.plan[members[-1]].out_channels
            self.exits.append(MSDNetHead(features, config.head_channels or features, num_classes))
            in_names = out_names
        self._groups = groups
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal (fan-out) convs, unit BatchNorm, zero linear biases: as the paper's code."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def exit_flows(self) -> list[int]:
        """The sub-network each exit belongs to (0: the lowest resolution)."""
        return [self.plan[members[-1]].flow for members in self._groups]

    def _exit_positions(self) -> list[float]:
        """Dense layers run up to each exit over all dense layers."""
        total = sum(s.layers for s in self.plan)
        out, acc = [], 0
        for members in self._groups:
            acc += sum(self.plan[k].layers for k in members)
            out.append(acc / total)
        return out


def _check_input(name: str, input_shape: tuple[int, ...], levels: int, stem: str) -> None:
    """The lowest resolution must keep at least MIN_COARSEST_SIDE pixels per side."""
    _, h, w = input_shape
    if level_sides(min(h, w), levels, stem)[-1] < MIN_COARSEST_SIDE:
        need = min_input_side(levels, stem)
        raise InputShapeError(
            name,
            "input_shape",
            f"height and width >= {need} for {levels} resolution levels with the '{stem}' stem "
            f"(the lowest needs at least {MIN_COARSEST_SIDE}x{MIN_COARSEST_SIDE}); use fewer "
            "levels in scale_list or a larger input",
            input_shape,
        )


def _fitting_levels(input_shape: Sequence[int], stem: str, most: int = 3) -> int:
    """Most resolution levels (up to ``most``, at least 1) the input side allows."""
    side = min(int(input_shape[1]), int(input_shape[2])) if len(input_shape) == 3 else 0
    if stem not in STEMS:
        return most
    n = 1
    while n < most and level_sides(side, n + 1, stem)[-1] >= MIN_COARSEST_SIDE:
        n += 1
    return n


# --------------------------------------------------------------------------- entry points
def _create_ranet(
    preset: str,
    num_classes: int,
    input_shape: Sequence[int],
    args: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> RANet:
    """Build a preset with some arguments overridden; unknown keys get a did-you-mean."""
    check_overrides(preset, overrides, CONFIG_FIELDS)
    return RANet(num_classes, input_shape, RANetConfig(**{**args, **overrides}))


#: The reference code's CIFAR training script (train_cifar.sh): 4 sub-networks, 8 exits.
RANET_CIFAR: dict[str, Any] = dict(
    n_blocks=2,
    block_step=2,
    step=4,
    step_mode="even",
    n_channels=16,
    growth_rate=6,
    scale_list=(1, 2, 3, 3),
    gr_factor=(4, 2, 1, 1),
    bn_factor=(4, 2, 1, 1),
    compress_factor=0.25,
    reduction=0.5,
    stem="cifar",
    head_channels=128,
)
#: The reference README's other CIFAR example: 3 sub-networks, growing steps, 6 exits.
RANET_CIFAR_LG: dict[str, Any] = {
    **RANET_CIFAR,
    "step": 2,
    "step_mode": "lin_grow",
    "scale_list": (1, 2, 3),
    "gr_factor": (4, 2, 1),
    "bn_factor": (4, 2, 1),
}

#: The reference code's ImageNet training script (train_imagenet.sh; nChannels left at its args.py
#: default 16): 4 sub-networks at 56, 28, 14 and 7 pixels from a 224 input, 8 exits, 8 layers per
#: block, classifiers as wide as the features they read.
RANET_IMAGENET: dict[str, Any] = {
    **RANET_CIFAR,
    "step": 8,
    "n_channels": 16,
    "growth_rate": 16,
    "scale_list": (1, 2, 3, 4),
    "gr_factor": (4, 2, 1, 1),
    "bn_factor": (4, 2, 1, 1),
    "stem": "imagenet",
    "head_channels": None,
}
#: The reference README's ImageNet example: as train_imagenet.sh with nChannels 32 and the third
#: sub-network twice as wide (grFactor and bnFactor 4-2-2-1).
RANET_IMAGENET_C32: dict[str, Any] = {
    **RANET_IMAGENET,
    "n_channels": 32,
    "gr_factor": (4, 2, 2, 1),
    "bn_factor": (4, 2, 2, 1),
}


@register_model("ranet")
def ranet(
    num_classes: int,
    input_shape: Sequence[int],
    n_blocks: int = 2,
    block_step: int = 1,
    step: int = 2,
    step_mode: str = "even",
    n_channels: int = 8,
    growth_rate: int = 4,
    scale_list: Sequence[int] | None = None,
    gr_factor: Sequence[int] | None = None,
    bn_factor: Sequence[int] | None = None,
    compress_factor: float = 0.25,
    reduction: float = 0.5,
    stem: str = "cifar",
    head_channels: int | None = 32,
) -> RANet:
    """A small RANet sized by its config; quick enough to train on 8x8 digits.

    Without ``scale_list`` it uses one sub-network per resolution level the
    input allows (up to 3; ``len(gr_factor)`` levels if that is given). Unset
    factors are ..., 4, 2, 1: the lowest resolution gets the widest features.
    """
    if scale_list is None:
        n = len(gr_factor) if gr_factor is not None else _fitting_levels(input_shape, stem)
        check_positive("ranet", n_flows=n)
        scale_list = tuple(range(1, n + 1))
    check_positive("ranet", scale_list=list(scale_list))
    default = [2 ** (len(scale_list) - 1 - f) for f in range(len(scale_list))]
    config = RANetConfig(
        n_blocks=n_blocks,
        block_step=block_step,
        step=step,
        step_mode=step_mode,
        n_channels=n_channels,
        growth_rate=growth_rate,
        scale_list=tuple(scale_list),
        gr_factor=tuple(default if gr_factor is None else gr_factor),
        bn_factor=tuple(default if bn_factor is None else bn_factor),
        compress_factor=compress_factor,
        reduction=reduction,
        stem=stem,
        head_channels=head_channels,
    )
    return RANet(num_classes, input_shape, config)


@register_model("ranet-cifar")
def ranet_cifar(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> RANet:
    """The paper code's CIFAR RANet (train_cifar.sh): levels 1-2-3-3, 8 exits, step 4."""
    return _create_ranet("ranet-cifar", num_classes, input_shape, RANET_CIFAR, overrides)


@register_model("ranet-cifar-lg")
def ranet_cifar_lg(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> RANet:
    """The paper code's README CIFAR RANet: levels 1-2-3, 6 exits, block b has 2b layers."""
    return _create_ranet("ranet-cifar-lg", num_classes, input_shape, RANET_CIFAR_LG, overrides)


# The ImageNet presets are factories, not registry entries: their classifiers are as wide as the
# features they read (up to ~1,200 channels, two 3x3 convs each), so the models hold 88M and 131M
# parameters, and every registry-wide test (ONNX export per part, the executor per policy) would
# spend minutes on them. Build one by its factory spec, in a suite or with create_model:
# ``eebench.models.ranet:ranet_imagenet``.
def ranet_imagenet(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> RANet:
    """The paper code's ImageNet RANet (train_imagenet.sh): levels 1-2-3-4, 8 exits, step 8;
    needs inputs of at least 33x33 (224x224 as in the paper)."""
    return _create_ranet("ranet-imagenet", num_classes, input_shape, RANET_IMAGENET, overrides)


def ranet_imagenet_c32(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> RANet:
    """The paper code's README ImageNet RANet: ``ranet_imagenet`` with 32 base channels and
    growth factors 4-2-2-1."""
    return _create_ranet(
        "ranet-imagenet-c32", num_classes, input_shape, RANET_IMAGENET_C32, overrides
    )

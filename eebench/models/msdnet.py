"""Multi-Scale Dense Networks (MSDNet; Huang et al., ICLR 2018).

MSDNet keeps a feature map at several scales at once, from the finest (the
input resolution) to the coarsest. Every layer extends each scale densely: the
new features at scale ``s`` are a regular 3x3 convolution of scale ``s`` and,
for ``s > 0``, a strided 3x3 convolution of scale ``s - 1``, both behind a 1x1
bottleneck, concatenated to what scale ``s`` already had. Classifiers read only
the coarsest scale, so an early exit already sees coarse, high-level features;
this is what lets MSDNet's early exits be accurate where a classifier attached
to a shallow, fine-scale layer of a plain CNN is not.

Along the depth the network is cut into ``n_blocks`` blocks; a classifier sits
at the end of each. Block ``i`` has ``steps[i]`` layers: ``base`` layers for
the first block and then ``step`` (``step_mode='even'``) or ``step * i + 1``
(``'lin_grow'``) layers. Scales that no later classifier needs are dropped as
the depth grows (``prune='max'``: the finest scale goes after every
``ceil(L / n_scales)`` layers; ``'min'``: only in the last ``n_scales - 1``
layers), and 1x1 transition layers compress the channels by ``reduction``
where a scale is dropped (``'max'``) or at a third and two thirds of the depth
(``'min'``).

Stage/exit decomposition: stage ``i`` is block ``i`` (stage 0 also holds the
first layer, which builds every scale from the input; transitions sit inside
the block that drops the scale). The state is the tuple of per-scale feature
maps, finest first and coarsest last, so it shrinks where scales are dropped;
exit ``i`` is classifier ``i`` on the coarsest map.

Differences from the reference code, none of which changes a count used in
the CIFAR presets: the input channel count follows ``input_shape`` (the
reference assumes 3); the ImageNet stem's 7x7 convolution has no bias (it is
followed by BatchNorm; the reference's bias adds ``n_channels`` parameters);
the classifier pools with an adaptive average pool to 1x1, which is the
reference's 2x2 average pool on CIFAR and ImageNet inputs and also works on
other input sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
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
from eebench.models.registry import register_model

STEP_MODES = ("even", "lin_grow")
PRUNE_MODES = ("max", "min")
STEMS = ("cifar", "imagenet")

#: The coarsest scale must be at least this many pixels on each side.
MIN_COARSEST_SIDE = 2


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class LayerSpec:
    """One MSDNet layer in the plan: scales it reads and writes, and what follows it.

    ``in_channels`` is the base channel count entering the layer (scale ``s``
    has ``in_channels * gr_factor[s]`` channels); ``transition_to`` is the base
    channel count after the transition that follows the layer, or ``None``.
    """

    block: int
    in_scales: int
    out_scales: int
    in_channels: int
    transition_to: int | None


def block_steps(n_blocks: int, step: int, step_mode: str, base: int) -> list[int]:
    """Layers per block: ``base`` first, then ``step`` each ('even') or ``step * i + 1`` ('lin_grow')."""
    return [base] + [step if step_mode == "even" else step * i + 1 for i in range(1, n_blocks)]


def layer_plan(
    steps: Sequence[int],
    n_scales: int,
    prune: str,
    n_channels: int,
    growth_rate: int,
    reduction: float,
) -> list[LayerSpec]:
    """Which scales each layer reads and writes and where transitions go (as in the paper's code)."""
    total = sum(steps)
    plan: list[LayerSpec] = []
    n_in = n_channels
    layer = 0
    for block, n_layers in enumerate(steps):
        for _ in range(n_layers):
            layer += 1
            if prune == "min":
                in_scales = min(n_scales, total - layer + 2)
                out_scales = min(n_scales, total - layer + 1)
                transition = layer in (total // 3, (2 * total) // 3)
            else:
                interval = math.ceil(total / n_scales)
                in_scales = n_scales - max(0, layer - 2) // interval
                out_scales = n_scales - (layer - 1) // interval
                transition = in_scales > out_scales
            grown = n_in + growth_rate
            after = math.floor(reduction * grown) if transition and reduction > 0 else None
            plan.append(LayerSpec(block, in_scales, out_scales, n_in, after))
            n_in = grown if after is None else after
    return plan


def scale_sides(side: int, n_scales: int, stem: str) -> list[int]:
    """Spatial side of every scale for an input side: the stem, then one stride-2 conv per scale."""
    s = side if stem == "cifar" else _halve(_halve(side))
    sides = [s]
    for _ in range(1, n_scales):
        s = _halve(s)
        sides.append(s)
    return sides


def _halve(side: int) -> int:
    """Output side of a 3x3 (or 7x7, or 3x3 max-pool) stride-2 op with 'same' padding."""
    return (side + 1) // 2


# --------------------------------------------------------------------------- blocks
def bottleneck_conv(
    cin: int, cout: int, stride: int, bottleneck: bool, bn_width: int
) -> nn.Sequential:
    """An optional 1x1 bottleneck to ``min(cin, bn_width * cout)`` channels, then a 3x3 conv."""
    layers: list[nn.Module] = []
    inner = cin
    if bottleneck:
        inner = min(cin, bn_width * cout)
        layers.append(conv_bn_relu(cin, inner, kernel=1))
    layers.append(conv_bn_relu(inner, cout, kernel=3, stride=stride))
    return nn.Sequential(*layers)


class ScaleUnit(nn.Module):
    """New features of one scale in one layer, concatenated to the scale's existing features.

    With a finer input, half the new channels come from a strided conv of the
    finer scale and half from a regular conv of this scale; without one (the
    finest scale still kept) all come from the regular conv.
    """

    def __init__(
        self,
        same_channels: int,
        finer_channels: int | None,
        new_channels: int,
        bottleneck: bool,
        bn_same: int,
        bn_finer: int | None,
    ) -> None:
        super().__init__()
        self.down: nn.Module | None = None
        if finer_channels is None:
            self.normal = bottleneck_conv(same_channels, new_channels, 1, bottleneck, bn_same)
        else:
            half = new_channels // 2
            self.down = bottleneck_conv(finer_channels, half, 2, bottleneck, bn_finer or bn_same)
            self.normal = bottleneck_conv(same_channels, half, 1, bottleneck, bn_same)

    def forward(self, same: Tensor, finer: Tensor | None = None) -> Tensor:
        if self.down is None or finer is None:
            return torch.cat([same, self.normal(same)], dim=1)
        return torch.cat([same, self.down(finer), self.normal(same)], dim=1)


class MSDNLayer(nn.Module):
    """One MSDNet layer: reads ``in_scales`` maps and writes ``out_scales`` (at most one fewer).

    Scales are absolute indices into the full scale list; a layer that drops a
    scale uses the dropped (finest) map only as the strided input of the next one.
    """

    def __init__(
        self,
        spec: LayerSpec,
        n_scales: int,
        growth_rate: int,
        gr_factor: Sequence[int],
        bn_factor: Sequence[int],
        bottleneck: bool,
    ) -> None:
        super().__init__()
        self.discard = spec.in_scales - spec.out_scales
        offset = n_scales - spec.out_scales
        c = spec.in_channels
        units = []
        for j in range(spec.out_scales):
            s = offset + j
            has_finer = j + self.discard >= 1
            units.append(
                ScaleUnit(
                    same_channels=c * gr_factor[s],
                    finer_channels=c * gr_factor[s - 1] if has_finer else None,
                    new_channels=growth_rate * gr_factor[s],
                    bottleneck=bottleneck,
                    bn_same=bn_factor[s],
                    bn_finer=bn_factor[s - 1] if has_finer else None,
                )
            )
        self.units = nn.ModuleList(units)

    def forward(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        d = self.discard
        out = []
        for j, unit in enumerate(self.units):
            finer = xs[j + d - 1] if j + d >= 1 else None
            out.append(unit(xs[j + d], finer))
        return tuple(out)


class Transition(nn.Module):
    """1x1 conv-BN-ReLU per kept scale: compresses the base channel count ``c_in -> c_out``."""

    def __init__(
        self, c_in: int, c_out: int, scales: Sequence[int], gr_factor: Sequence[int]
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv_bn_relu(c_in * gr_factor[s], c_out * gr_factor[s], kernel=1) for s in scales
        )

    def forward(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(conv(x) for conv, x in zip(self.convs, xs))


class FirstLayer(nn.Module):
    """Builds every scale from the input: a stem for the finest, then a stride-2 conv per scale.

    The 'cifar' stem is a 3x3 conv at the input resolution; the 'imagenet' stem
    a 7x7 stride-2 conv and a 3x3 stride-2 max-pool (a quarter of the input side).
    """

    def __init__(
        self, in_channels: int, n_channels: int, gr_factor: Sequence[int], stem: str
    ) -> None:
        super().__init__()
        c0 = n_channels * gr_factor[0]
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
        for s in range(1, len(gr_factor)):
            convs.append(
                conv_bn_relu(n_channels * gr_factor[s - 1], n_channels * gr_factor[s], stride=2)
            )
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = []
        for conv in self.convs:
            x = conv(x)
            out.append(x)
        return tuple(out)


class MSDNetStage(nn.Module):
    """Block ``i``: (the first layer, for block 0,) its MSDNet layers and transitions."""

    def __init__(self, first: FirstLayer | None, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.first = first
        self.layers = nn.ModuleList(layers)

    def forward(self, state: State) -> tuple[Tensor, ...]:
        xs = self.first(as_tuple(state)[0]) if self.first is not None else as_tuple(state)
        for layer in self.layers:
            xs = layer(xs)
        return xs


class MSDNetHead(nn.Module):
    """Classifier on the coarsest scale: two 3x3 stride-2 conv-BN-ReLU, average pool, linear."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, hidden, stride=2),
            conv_bn_relu(hidden, hidden, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, state: State) -> Tensor:
        return self.fc(self.features(as_tuple(state)[-1]))


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MSDNetConfig:
    """The knobs of an MSDNet (the names of the paper's code, in snake case).

    ``gr_factor`` / ``bn_factor``: per-scale multipliers of the growth rate and
    of the bottleneck width; ``head_channels`` is the width of the classifiers'
    two convolutions, 128 in the CIFAR models, ``None`` for the width of the
    features they read (the ImageNet models).
    """

    n_blocks: int
    step: int
    step_mode: str
    base: int
    n_channels: int
    growth_rate: int
    gr_factor: Sequence[int]
    bn_factor: Sequence[int]
    n_scales: int
    prune: str = "max"
    reduction: float = 0.5
    bottleneck: bool = True
    stem: str = "cifar"
    head_channels: int | None = 128

    @property
    def steps(self) -> list[int]:
        return block_steps(self.n_blocks, self.step, self.step_mode, self.base)

    def plan(self) -> list[LayerSpec]:
        return layer_plan(
            self.steps, self.n_scales, self.prune, self.n_channels, self.growth_rate, self.reduction
        )

    def validate(self, model: str) -> None:
        """Raise ModelConfigError naming the first field that cannot build a network."""
        check_positive(
            model,
            n_blocks=self.n_blocks,
            step=self.step,
            base=self.base,
            n_channels=self.n_channels,
            growth_rate=self.growth_rate,
            n_scales=self.n_scales,
            gr_factor=list(self.gr_factor),
            bn_factor=list(self.bn_factor),
        )
        for name, allowed in (("step_mode", STEP_MODES), ("prune", PRUNE_MODES), ("stem", STEMS)):
            if getattr(self, name) not in allowed:
                raise ModelConfigError(model, name, f"one of {list(allowed)}", getattr(self, name))
        for name in ("gr_factor", "bn_factor"):
            factors = list(getattr(self, name))
            if len(factors) != self.n_scales:
                raise ModelConfigError(
                    model,
                    name,
                    f"one factor per scale ({self.n_scales} for n_scales={self.n_scales})",
                    factors,
                )
        new = [self.growth_rate * f for f in self.gr_factor]
        odd = [s for s in range(1, self.n_scales) if new[s] % 2]
        if odd:
            raise ModelConfigError(
                model,
                "growth_rate",
                "growth_rate * gr_factor[s] even for every scale s >= 1 (it is split between the "
                f"strided and the regular conv); scale {odd[0]} gets {new[odd[0]]}",
                self.growth_rate,
            )
        if self.prune == "min" and sum(self.steps) < self.n_scales - 1:
            raise ModelConfigError(
                model,
                "prune",
                f"'max', or at least n_scales - 1 = {self.n_scales - 1} layers in all for 'min' (it "
                f"drops one scale per layer over the last layers only; this config has {sum(self.steps)})",
                self.prune,
            )
        r = self.reduction
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
            raise ModelConfigError(model, "reduction", "a number in [0, 1] (0: no transitions)", r)
        if r > 0 and math.floor(r * (self.n_channels + self.growth_rate)) < 1:
            raise ModelConfigError(
                model, "reduction", "a ratio that keeps at least one channel after a transition", r
            )
        if not isinstance(self.bottleneck, bool):
            raise ModelConfigError(model, "bottleneck", "true or false", self.bottleneck)
        if self.head_channels is not None:
            check_positive(model, head_channels=self.head_channels)


CONFIG_FIELDS = tuple(f.name for f in fields(MSDNetConfig))


# --------------------------------------------------------------------------- model
class MSDNet(MultiExitModel):
    """MSDNet with one exit per block; see the module docstring and :class:`MSDNetConfig`."""

    family = "msdnet"

    def __init__(self, num_classes: int, input_shape: Sequence[int], config: MSDNetConfig) -> None:
        super().__init__(num_classes, input_shape)
        name = type(self).__name__
        config.validate(name)
        _check_input(name, self.input_shape, config.n_scales, config.stem)
        self.config = config
        self.steps = config.steps
        self.plan = config.plan()
        self.n_scales = n = config.n_scales
        gr, g = list(config.gr_factor), config.growth_rate
        for block in range(config.n_blocks):
            first = None
            if block == 0:
                first = FirstLayer(self.input_shape[0], config.n_channels, gr, config.stem)
            specs = [p for p in self.plan if p.block == block]
            layers: list[nn.Module] = []
            for spec in specs:
                layers.append(MSDNLayer(spec, n, g, gr, config.bn_factor, config.bottleneck))
                if spec.transition_to is not None:
                    kept = range(n - spec.out_scales, n)
                    layers.append(Transition(spec.in_channels + g, spec.transition_to, kept, gr))
            self.stages.append(MSDNetStage(first, layers))
            last = specs[-1]
            base_out = last.in_channels + g if last.transition_to is None else last.transition_to
            features = base_out * gr[-1]
            self.exits.append(MSDNetHead(features, config.head_channels or features, num_classes))
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
    def scales_per_stage(self) -> list[int]:
        """How many scales the state holds after each stage (it shrinks where scales are pruned)."""
        last = {p.block: p.out_scales for p in self.plan}
        return [last[b] for b in range(len(self.steps))]

    def _exit_positions(self) -> list[float]:
        """Cumulative MSDNet layers up to each exit over all layers (the paper's depth measure)."""
        total = sum(self.steps)
        return [sum(self.steps[: i + 1]) / total for i in range(len(self.steps))]


def _check_input(name: str, input_shape: tuple[int, ...], n_scales: int, stem: str) -> None:
    """The coarsest scale must keep at least MIN_COARSEST_SIDE pixels per side."""
    _, h, w = input_shape
    if scale_sides(min(h, w), n_scales, stem)[-1] < MIN_COARSEST_SIDE:
        need = min_input_side(n_scales, stem)
        raise InputShapeError(
            name,
            "input_shape",
            f"height and width >= {need} for n_scales={n_scales} with the '{stem}' stem "
            f"(the coarsest scale needs at least {MIN_COARSEST_SIDE}x{MIN_COARSEST_SIDE}); "
            "use fewer scales or a larger input",
            input_shape,
        )


def min_input_side(n_scales: int, stem: str) -> int:
    """Smallest input side whose coarsest scale keeps MIN_COARSEST_SIDE pixels."""
    side = 1
    while scale_sides(side, n_scales, stem)[-1] < MIN_COARSEST_SIDE:
        side += 1
    return side


# --------------------------------------------------------------------------- entry points
def check_overrides(preset: str, overrides: Mapping[str, Any], known: Sequence[str]) -> None:
    """Refuse an override that is not one of the config's fields ``known``, with a did-you-mean
    (shared by the families whose presets are a config dataclass's arguments)."""
    import difflib

    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ModelConfigError(preset, key, f"one of {list(known)}{hint}", overrides[key])


def _create_msdnet(
    preset: str,
    num_classes: int,
    input_shape: Sequence[int],
    args: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> MSDNet:
    """Build a preset with some arguments overridden; unknown keys get a did-you-mean."""
    check_overrides(preset, overrides, CONFIG_FIELDS)
    return MSDNet(num_classes, input_shape, MSDNetConfig(**{**args, **overrides}))


MSDNET_CIFAR_ANYTIME: dict[str, Any] = dict(
    n_blocks=7,
    step=2,
    step_mode="even",
    base=4,
    n_channels=16,
    growth_rate=6,
    gr_factor=(1, 2, 4),
    bn_factor=(1, 2, 4),
    n_scales=3,
    prune="max",
    reduction=0.5,
    bottleneck=True,
    stem="cifar",
    head_channels=128,
)
MSDNET_CIFAR_BUDGETED: dict[str, Any] = {
    **MSDNET_CIFAR_ANYTIME,
    "n_blocks": 5,
    "step": 1,
    "step_mode": "lin_grow",
    "base": 1,
}
MSDNET_IMAGENET: dict[str, Any] = dict(
    n_blocks=5,
    step=4,
    step_mode="even",
    base=4,
    n_channels=32,
    growth_rate=16,
    gr_factor=(1, 2, 4, 4),
    bn_factor=(1, 2, 4, 4),
    n_scales=4,
    prune="max",
    reduction=0.5,
    bottleneck=True,
    stem="imagenet",
    head_channels=None,
)


@register_model("msdnet")
def msdnet(
    num_classes: int,
    input_shape: Sequence[int],
    n_blocks: int = 4,
    step: int = 2,
    step_mode: str = "even",
    base: int = 2,
    n_channels: int = 8,
    growth_rate: int = 4,
    gr_factor: Sequence[int] | None = None,
    bn_factor: Sequence[int] | None = None,
    n_scales: int | None = None,
    prune: str = "max",
    reduction: float = 0.5,
    bottleneck: bool = True,
    stem: str = "cifar",
    head_channels: int | None = 32,
) -> MSDNet:
    """A small MSDNet sized by its config; quick enough to train on 8x8 digits.

    Without ``n_scales`` it uses ``len(gr_factor)`` scales if given, else as many
    as the input allows, up to 3. Unset factors default to 1, 2, 4, 4, ... per scale.
    """
    if n_scales is None:
        n_scales = len(gr_factor) if gr_factor is not None else _fitting_scales(input_shape, stem)
    check_positive("msdnet", n_scales=n_scales)
    default = [min(2**s, 4) for s in range(n_scales)]
    config = MSDNetConfig(
        n_blocks=n_blocks,
        step=step,
        step_mode=step_mode,
        base=base,
        n_channels=n_channels,
        growth_rate=growth_rate,
        gr_factor=tuple(default if gr_factor is None else gr_factor),
        bn_factor=tuple(default if bn_factor is None else bn_factor),
        n_scales=n_scales,
        prune=prune,
        reduction=reduction,
        bottleneck=bottleneck,
        stem=stem,
        head_channels=head_channels,
    )
    return MSDNet(num_classes, input_shape, config)


def _fitting_scales(input_shape: Sequence[int], stem: str, most: int = 3) -> int:
    """Most scales (up to ``most``, at least 1) whose coarsest map keeps MIN_COARSEST_SIDE pixels."""
    side = min(int(input_shape[1]), int(input_shape[2])) if len(input_shape) == 3 else 0
    if stem not in STEMS:
        return most
    n = 1
    while n < most and scale_sides(side, n + 1, stem)[-1] >= MIN_COARSEST_SIDE:
        n += 1
    return n


@register_model("msdnet-cifar-anytime")
def msdnet_cifar_anytime(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> MSDNet:
    """The paper's CIFAR anytime-prediction MSDNet: 7 exits, every 2 layers after the first 4."""
    return _create_msdnet(
        "msdnet-cifar-anytime", num_classes, input_shape, MSDNET_CIFAR_ANYTIME, overrides
    )


@register_model("msdnet-cifar-budgeted")
def msdnet_cifar_budgeted(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> MSDNet:
    """The paper's CIFAR budgeted-batch MSDNet: exit k after layer 1 + 2 + ... + k (5 exits)."""
    return _create_msdnet(
        "msdnet-cifar-budgeted", num_classes, input_shape, MSDNET_CIFAR_BUDGETED, overrides
    )


@register_model("msdnet-imagenet")
def msdnet_imagenet(num_classes: int, input_shape: Sequence[int], **overrides: Any) -> MSDNet:
    """The paper's ImageNet MSDNet (step 4): 4 scales, 5 exits; needs inputs of at least 64x64."""
    return _create_msdnet("msdnet-imagenet", num_classes, input_shape, MSDNET_IMAGENET, overrides)

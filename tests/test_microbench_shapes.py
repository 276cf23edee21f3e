"""The micro-benchmark shapes are held out: none is a layer of a registered model.

The accuracy check (benchmarks/estimator_accuracy.py) compares estimates with
measurements of every registered model; a benchmark of exactly a model's layer
would hand the estimator that layer's own time back. Every model's layer table is
built with the analytic cost analysis (eebench.costs) at the accuracy check's
input shape (3x32x32), or at ImageNet's (3x224x224) for a model that needs a
larger input, and no convolution, linear layer or memory-bound operator of a
model may equal a benchmark shape.
"""

from __future__ import annotations

import functools
import math

import pytest
from torch import nn

from eebench.costs import OUTSIDE_LEAVES, analyze_costs
from eebench.models import create_model, list_models
from eebench.models.base import InputShapeError
from eebench.profiles import load_profile
from eebench.profiles.locate import profile_entries
from eebench.profiles.microbench import CONV_SHAPES, GEMM_SHAPES, OP_SHAPES, ConvShape
from eebench.profiles.operators import module_op

ACCURACY_INPUT = (3, 32, 32)
IMAGENET_INPUT = (3, 224, 224)


@functools.cache
def _layer_shapes(name: str, input_shape: tuple[int, ...]) -> frozenset[tuple]:
    """(kind, ...) keys of every conv, linear and memory-bound leaf layer of one model.

    conv: (in, out, input positions, kernel, stride, groups); linear: (k, n) at one row;
    memory-bound operators: (op, input elements). Input positions come from the analytic
    input bytes (float32), so a non-square input is compared by its area.
    """
    model = create_model(name, num_classes=10, input_shape=input_shape)
    modules = dict(model.named_modules())
    shapes: set[tuple] = set()
    for layer in analyze_costs(model).layers:
        if layer.module == OUTSIDE_LEAVES:
            continue
        mod = modules[layer.module]
        elements = layer.input_bytes // 4
        if isinstance(mod, nn.Conv2d):
            positions = elements // mod.in_channels
            shapes.add(
                (
                    "conv",
                    mod.in_channels,
                    mod.out_channels,
                    positions,
                    mod.kernel_size[0],
                    mod.stride[0],
                    mod.groups,
                )
            )
        elif isinstance(mod, nn.Linear):
            shapes.add(("linear", mod.in_features, mod.out_features))
        elif module_op(mod) in ("maxpool", "avgpool", "norm", "lrn", "activation"):
            shapes.add((module_op(mod), elements))
    return frozenset(shapes)


def _model_layers(name: str) -> tuple[tuple[int, ...], frozenset[tuple]]:
    """The model's layer shapes at the accuracy input, or at ImageNet's when it needs more."""
    try:
        return ACCURACY_INPUT, _layer_shapes(name, ACCURACY_INPUT)
    except InputShapeError:
        return IMAGENET_INPUT, _layer_shapes(name, IMAGENET_INPUT)


def _benchmark_shapes() -> set[tuple]:
    out: set[tuple] = set()
    for s in CONV_SHAPES:
        out.add(("conv", s.in_channels, s.out_channels, s.size**2, s.kernel, s.stride, s.groups))
    for m, k, n in GEMM_SHAPES:
        if m == 1:
            out.add(("linear", k, n))
    for op in ("maxpool", "avgpool", "norm", "lrn", "activation"):
        for c, side in OP_SHAPES:
            out.add((op, c * side * side))
    return out


@pytest.mark.parametrize("name", sorted(list_models()))
def test_no_micro_benchmark_shape_is_a_model_layer(name: str) -> None:
    shape, layers = _model_layers(name)
    assert layers, f"{name}: the cost analysis found no layers"
    clash = sorted(layers & _benchmark_shapes())
    assert not clash, (
        f"{name} at input {shape}: micro-benchmark shapes equal to model layers {clash}"
    )


def test_the_comparison_catches_a_model_layer() -> None:
    # the check itself must be able to fail: cascade's first layer is a 3 -> 16 3x3 conv on 32x32
    layers = _layer_shapes("cascade", ACCURACY_INPUT)
    assert ("conv", 3, 16, 32 * 32, 3, 1, 1) in layers
    old_grid_shape = ConvShape(3, 16, 32)
    key = ("conv", 3, 16, old_grid_shape.size**2, 3, 1, 1)
    assert key in layers and key not in _benchmark_shapes()


def test_benchmarks_span_the_models_weight_reuse_and_weight_count() -> None:
    # disjoint, but not out of range: reuse (output positions) from 1 to beyond 32x32 and
    # weight counts from hundreds to millions, as in the registered models
    reuse = [s.out_side**2 for s in CONV_SHAPES]
    weights = [s.in_channels // s.groups * s.kernel**2 * s.out_channels for s in CONV_SHAPES]
    assert min(reuse) == 1 and max(reuse) > 32 * 32
    assert min(weights) < 1_000 and max(weights) > 1_000_000
    assert math.isclose(max(reuse), 36 * 36)


def test_shipped_host_profiles_hold_no_model_layer() -> None:
    # the committed measurements themselves, not only today's shape list, are held out
    layers = frozenset().union(*(_model_layers(n)[1] for n in list_models()))
    checked = 0
    for entry in profile_entries():
        profile = load_profile(entry.name)
        m = profile.measured
        if m is None:
            continue
        checked += 1
        measured = {
            (
                "conv",
                c.in_channels,
                c.out_channels,
                c.height * c.width,
                c.kernel,
                c.stride,
                c.groups,
            )
            for c in m.conv
        }
        measured |= {("linear", g.k, g.n) for g in m.gemm if g.m == 1}
        clash = sorted(measured & layers)
        assert not clash, f"{entry.name}: measured shapes equal to model layers {clash}"
    assert checked, "no shipped profile has micro-benchmarks"

"""Shallow-Deep Networks: shapes on every input size, the final exit is the plain backbone,
ICs land where configured (the paper's placements by default), and config errors."""

import itertools

import pytest
import torch

from eebench.models import ModelConfigError, create_model, list_models
from eebench.models.blocks import cumulative_fractions, profile_sequence
from eebench.models.sdn import PAPER_IC_POSITIONS, InternalClassifier

SMALL = {
    "sdn-resnet": {"depth": 20, "width": 4},
    "sdn-vgg": {"width_mult": 0.0625},
    "sdn-mobilenet": {"width_mult": 0.0625},
}
SHAPES = [(1, 8, 8), (3, 32, 32), (3, 224, 224)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _backbone_fractions(model):
    """Cumulative share (by the model's basis) after each backbone unit, recomputed independently."""
    units = [u for stage in model.stages for u in stage]
    profiles = profile_sequence([*units, model.exits[-1]], model.input_shape)
    return cumulative_fractions(profiles, model.position_basis)[: len(units)]


def test_all_three_are_registered():
    assert list_models("sdn-*") == ["sdn-mobilenet", "sdn-resnet", "sdn-vgg"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_all_gives_one_logit_tensor_per_exit(name, shape):
    model = create_model(name, num_classes=5, input_shape=shape, **SMALL[name]).eval()
    assert model.family == "intermediate"
    assert model.num_exits == model.num_stages == len(PAPER_IC_POSITIONS) + 1
    with torch.no_grad():
        outs = model.forward_all(torch.randn(2, *shape))
    assert [tuple(o.shape) for o in outs] == [(2, 5)] * model.num_exits
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_final_exit_is_the_plain_backbone(name):
    model = create_model(name, num_classes=10, input_shape=(3, 32, 32), **SMALL[name]).eval()
    backbone = model.backbone()
    ic_params = {id(p) for e in model.exits[:-1] for p in e.parameters()}
    assert not ic_params & {id(p) for p in backbone.parameters()}
    assert all(isinstance(e, InternalClassifier) for e in model.exits[:-1])
    assert not any(isinstance(m, InternalClassifier) for m in backbone.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        outs = model.forward_all(x)
        assert torch.allclose(outs[-1], backbone(x), atol=1e-5)
        assert torch.allclose(model.forward_until(x, 2), outs[2], atol=1e-6)


def test_paper_placements_resnet56_and_vgg16():
    # The SDN code's add_ic masks: ResNet-56 after blocks 4, 8, 12, 16, 20, 24 (unit 0 is the
    # stem); VGG-16 after convs 2, 4, 6, 7, 9, 10.
    assert create_model("sdn-resnet").ic_units == [4, 8, 12, 16, 20, 24]
    assert create_model("sdn-vgg").ic_units == [1, 3, 5, 6, 8, 9]


@pytest.mark.parametrize("basis", ["macs", "layers"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_ics_land_where_configured(name, basis):
    model = create_model(name, position_basis=basis, **SMALL[name])
    fractions = _backbone_fractions(model)
    declared = [e.position for e in model.exit_info]
    units = model.ic_units
    assert declared == pytest.approx([fractions[u] for u in units] + [1.0])
    assert units == sorted(set(units)) and units[-1] < len(fractions) - 1

    # the placement is the closest one-IC-per-unit placement (checked by brute force) ...
    def distance(us):
        return sum(abs(fractions[u] - p) for u, p in zip(us, PAPER_IC_POSITIONS))

    best = min(distance(c) for c in itertools.combinations(range(len(fractions) - 1), len(units)))
    assert distance(units) == pytest.approx(best)
    # ... and each IC is on its nearest unit whenever those are all distinct
    nearest = [
        min(range(len(fractions) - 1), key=lambda u: abs(fractions[u] - p))
        for p in PAPER_IC_POSITIONS
    ]
    if len(set(nearest)) == len(nearest):
        assert [abs(fractions[u] - p) for u, p in zip(units, PAPER_IC_POSITIONS)] == pytest.approx(
            [abs(fractions[u] - p) for u, p in zip(nearest, PAPER_IC_POSITIONS)]
        )


def test_small_backbone_shares_out_the_ics_one_per_unit():
    # ResNet-14 has a stem and 6 blocks: six ICs take the six units before the last one.
    model = create_model("sdn-resnet", depth=14, width=4)
    assert model.ic_units == [0, 1, 2, 3, 4, 5]


def test_custom_positions_by_layers_are_exact_for_resnet56():
    # ResNet-56 by layers: stem 1 layer, each block 2, classifier 1 (56 in all).
    model = create_model("sdn-resnet", ic_positions=[0.25, 0.5], position_basis="layers")
    # 0.25 * 56 = 14 -> nearest 1 + 2u is 13 or 15 (tie: the earlier, u = 6); 0.5 -> 27 (u = 13)
    assert model.ic_units == [6, 13]
    assert [e.position for e in model.exit_info] == pytest.approx([13 / 56, 27 / 56, 1.0])


def test_no_ics_is_the_plain_backbone():
    model = create_model("sdn-mobilenet", width_mult=0.125, ic_positions=[])
    assert model.num_exits == 1 and model.exit_info[0].position == 1.0


def test_mobilenet_adapts_strides_to_the_input_and_can_drop_the_depthwise_relu():
    final = {
        shape: create_model("sdn-mobilenet", input_shape=shape, width_mult=0.125).exit_info[-1]
        for shape in SHAPES
    }
    # CIFAR: 32 -> 2 (four halvings); ImageNet: stride-2 stem and 224 -> 7; digits stop at 2x2
    assert [final[s].feature_shape[1:] for s in SHAPES] == [(2, 2), (2, 2), (7, 7)]
    relus = [
        sum(
            isinstance(m, torch.nn.ReLU)
            for m in create_model("sdn-mobilenet", width_mult=0.125, dw_relu=flag).modules()
        )
        for flag in (True, False)
    ]
    assert relus[0] - relus[1] == 13  # one per depthwise-separable block


def test_internal_classifier_reduces_to_about_four_by_four():
    ic = InternalClassifier((16, 32, 32), num_classes=10)
    assert ic.linear.in_features == 16 * 4 * 4
    small = InternalClassifier((16, 6, 6), num_classes=10)  # below 8 px: no pooling
    assert small.linear.in_features == 16 * 6 * 6
    assert ic(torch.randn(2, 16, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "config", "pattern"),
    [
        (
            "sdn-resnet",
            {"ic_positions": [0.5, 0.3]},
            r"'ic_positions': expected strictly increasing",
        ),
        (
            "sdn-resnet",
            {"ic_positions": [0.0, 0.5]},
            r"'ic_positions'.*in \(0, 1\).*got \[0.0, 0.5\]",
        ),
        (
            "sdn-vgg",
            {"width_mult": 0.1, "ic_positions": [0.5, 1.0]},
            r"'ic_positions'.*got \[0.5, 1.0\]",
        ),
        ("sdn-vgg", {"width_mult": 0.1, "ic_positions": 0.5}, r"'ic_positions'.*got 0.5"),
        ("sdn-resnet", {"depth": 8}, r"'ic_positions': expected at most 3 positions.*4 units"),
        ("sdn-resnet", {"depth": 51}, r"'depth': expected 6n\+2.*got 51"),
        ("sdn-resnet", {"width": -4}, r"'width': expected a positive integer, got -4"),
        ("sdn-vgg", {"width_mult": 0}, r"'width_mult': expected a positive number.*got 0"),
        ("sdn-mobilenet", {"width_mult": "half"}, r"'width_mult'.*got 'half'"),
        ("sdn-mobilenet", {"position_basis": "params"}, r"'position_basis'.*got 'params'"),
        ("sdn-mobilenet", {"dw_relu": "no"}, r"'dw_relu': expected true or false, got 'no'"),
    ],
)
def test_invalid_config_names_field_expectation_and_value(name, config, pattern):
    with pytest.raises(ModelConfigError, match=pattern) as err:
        create_model(name, **config)
    assert err.value.model == name

"""Analytic costs: checked against the lecture's formula, hand-computed models, a second counter
(torch's FlopCounterMode) and the whole recording pass, for every registered model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from eebench.cli import main
from eebench.costs import (
    COUNTED_OPS_NOTE,
    OUTSIDE_LEAVES,
    analyze_costs,
    count_macs,
    count_ops,
    cumulative,
    expected_cost,
    layer_costs,
)
from eebench.models import InputShapeError, MultiExitModel, create_model, list_models, listing
from eebench.models.listing import CUM_MACS_COLUMN, FINAL_MACS_COLUMN, models_table

SHAPES = [(3, 32, 32), (3, 48, 48), (3, 64, 64), (3, 224, 224)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the count after each test


# --------------------------------------------------------------------------- lecture formula
def lecture_conv_macs(in_side: int, layers: list[tuple[int, int, int, int, int]]) -> int:
    """C_conv = sum_i n_{i-1} * s_i^2 * n_i * m_i^2 for layers (n_in, n_out, kernel, stride, pad)."""
    total, m = 0, in_side
    for n_in, n_out, s, stride, pad in layers:
        m = (m + 2 * pad - s) // stride + 1
        total += n_in * s**2 * n_out * m**2
    return total


CONV_STACKS = {
    "same-padding": (32, [(3, 16, 3, 1, 1), (16, 32, 3, 1, 1), (32, 32, 3, 1, 1)]),
    "strided": (32, [(3, 8, 3, 2, 1), (8, 16, 3, 2, 1), (16, 32, 3, 2, 1)]),
    "valid-and-large-kernels": (28, [(1, 6, 5, 1, 0), (6, 16, 5, 1, 0), (16, 120, 5, 2, 0)]),
    "mixed": (17, [(3, 12, 7, 2, 3), (12, 24, 1, 1, 0), (24, 24, 3, 1, 2), (24, 5, 4, 3, 1)]),
}


@pytest.mark.parametrize("stack", sorted(CONV_STACKS))
@pytest.mark.parametrize("bias", [False, True])
def test_lecture_formula_equals_fvcore_on_conv_stacks(stack, bias):
    side, layers = CONV_STACKS[stack]
    modules: list[nn.Module] = []
    for n_in, n_out, s, stride, pad in layers:
        modules += [nn.Conv2d(n_in, n_out, s, stride=stride, padding=pad, bias=bias), nn.ReLU()]
    net = nn.Sequential(*modules).eval()
    x = torch.zeros(1, layers[0][0], side, side)
    assert count_macs(net, (x,)) == lecture_conv_macs(side, layers)


# --------------------------------------------------------------------------- hand-built model
class TinyStage1(nn.Module):
    """Strided conv, a sigmoid fvcore does not count, max-pooling; ``unused`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # 8x8 -> 4x4, with bias
        self.pool = nn.MaxPool2d(2)  # 4x4 -> 2x2
        self.unused = nn.Conv2d(16, 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(torch.sigmoid(self.conv(x)))


class TinyHead1(nn.Module):
    """A functional matmul with a bare parameter (outside any leaf module), then a linear layer."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(64, 32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(x, 1) @ self.proj)


class TinyEE(MultiExitModel):
    """Two exits on 3x8x8 input with every count computed by hand below."""

    family = "test"

    def __init__(self) -> None:
        super().__init__(5, (3, 8, 8))
        self.stages.append(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        )
        self.exits.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
        self.stages.append(TinyStage1())
        self.exits.append(TinyHead1(5))
        # hand-computed, per sample
        self.expected = {
            ("stage", 0): {
                "macs": 3 * 3**2 * 8 * 8**2,  # 13_824
                "other_ops": 2 * 8 * 8 * 8,  # eval batch norm with affine: 2 per element
                "params": 3 * 8 * 9 + 2 * 8,
                "input_bytes": 4 * 3 * 8 * 8,
                "output_bytes": 4 * 8 * 8 * 8,
            },
            ("exit", 0): {
                "macs": 8 * 5,
                "other_ops": 8 * 8 * 8,  # adaptive average pooling: 1 per input element
                "params": 8 * 5 + 5,
                "input_bytes": 4 * 8 * 8 * 8,
                "output_bytes": 4 * 5,
            },
            ("stage", 1): {
                "macs": 8 * 3**2 * 16 * 4**2,  # 18_432; bias additions are not MACs
                "other_ops": 16 * 4 * 4,  # max pooling: 1 per input element
                "params": 8 * 9 * 16 + 16,  # ``unused`` does not run, so it does not count
                "input_bytes": 4 * 8 * 8 * 8,
                "output_bytes": 4 * 16 * 2 * 2,
            },
            ("exit", 1): {
                "macs": 64 * 32 + 32 * 5,
                "other_ops": 0,
                "params": 64 * 32 + 32 * 5 + 5,
                "input_bytes": 4 * 16 * 2 * 2,
                "output_bytes": 4 * 5,
            },
        }


@pytest.fixture
def tiny() -> TinyEE:
    return TinyEE()


def test_hand_built_model_matches_hand_computed_costs(tiny):
    costs = analyze_costs(tiny)
    table = costs.table
    assert list(zip(table["part"], table["index"])) == [
        ("stage", 0),
        ("exit", 0),
        ("stage", 1),
        ("exit", 1),
    ]
    for (part, index), expected in tiny.expected.items():
        row = table[(table["part"] == part) & (table["index"] == index)].iloc[0]
        for column, value in expected.items():
            assert row[column] == value, f"{part} {index} {column}"
    assert set(table["source"]) == {"analytic"}
    assert table.attrs["counted_ops"] == COUNTED_OPS_NOTE == costs.counted_ops
    e = tiny.expected
    np.testing.assert_array_equal(costs.stage_macs, [e["stage", 0]["macs"], e["stage", 1]["macs"]])
    np.testing.assert_array_equal(costs.head_macs, [e["exit", 0]["macs"], e["exit", 1]["macs"]])
    reach0 = e["stage", 0]["macs"] + e["exit", 0]["macs"]
    np.testing.assert_array_equal(
        costs.cumulative_macs, [reach0, reach0 + e["stage", 1]["macs"] + e["exit", 1]["macs"]]
    )
    reach0 = e["stage", 0]["params"] + e["exit", 0]["params"]
    np.testing.assert_array_equal(
        costs.cumulative_params, [reach0, reach0 + e["stage", 1]["params"] + e["exit", 1]["params"]]
    )


def test_unsupported_ops_and_uncalled_modules_are_in_the_table(tiny):
    costs = analyze_costs(tiny)
    stage1 = next(p for p in costs.parts if (p.part, p.index) == ("stage", 1))
    assert stage1.unsupported_ops == {"aten::sigmoid": 1}
    assert stage1.uncalled_modules == ("stages.1.unused",)
    row = costs.table.iloc[2]
    assert row["unsupported_ops"] == "aten::sigmoid=1"
    assert row["uncalled_modules"] == "stages.1.unused"
    # a stage does not report the rest of the model as "uncalled"
    assert costs.table.iloc[0]["uncalled_modules"] == ""


def test_counting_uses_eval_mode_and_restores_training(tiny):
    tiny.train()
    costs = analyze_costs(tiny)
    assert tiny.training
    assert costs.parts[0].other_ops == tiny.expected["stage", 0]["other_ops"]


def test_layer_costs_of_hand_built_model(tiny):
    layers = layer_costs(tiny)
    conv = layers[layers["module"] == "stages.0.0"].iloc[0]
    assert conv["type"] == "Conv2d"
    assert conv["macs"] == tiny.expected["stage", 0]["macs"]
    assert conv["params"] == 3 * 8 * 9
    assert conv["weight_bytes"] == 4 * 3 * 8 * 9
    assert conv["input_bytes"] == 4 * 3 * 8 * 8
    assert conv["output_bytes"] == 4 * 8 * 8 * 8
    bn = layers[layers["module"] == "stages.0.1"].iloc[0]
    assert bn["weight_bytes"] == 4 * 4 * 8  # weight, bias, running mean and variance
    assert bn["macs"] == 0 and bn["other_ops"] == 2 * 8 * 8 * 8
    # the functional matmul of head 1 is kept in a row of its own
    outside = layers[
        (layers["part"] == "exit") & (layers["index"] == 1) & (layers["module"] == OUTSIDE_LEAVES)
    ]
    assert outside["macs"].tolist() == [64 * 32]
    assert "stages.1.unused" not in set(layers["module"])


# --------------------------------------------------------------------------- every registered model
@pytest.fixture(scope="module", params=list_models())
def analyzed(request) -> tuple[MultiExitModel, object]:
    """(model in eval mode, its CostTable) at the first of SHAPES the model accepts."""
    torch.set_num_threads(1)
    for shape in SHAPES:
        try:
            model = create_model(request.param, input_shape=shape).eval()
        except InputShapeError:
            continue
        return model, analyze_costs(model)
    pytest.fail(f"{request.param} builds on none of {SHAPES}")


def _parts(model: MultiExitModel):
    states = model.example_states(1)
    for i in range(model.num_stages):
        yield ("stage", i), model.stage_module(i), states[i]
        yield ("exit", i), model.exit_module(i), states[i + 1]


def test_flop_counter_mode_agrees_with_fvcore(analyzed):
    """A second, independent counter: torch's FlopCounterMode counts conv and matrix products as
    2 FLOPs per multiply-add, so half its count must match fvcore's MACs."""
    model, costs = analyzed
    macs = {(p.part, p.index): p.macs for p in costs.parts}
    with torch.no_grad():
        for key, root, inputs in _parts(model):
            with FlopCounterMode(display=False) as counter:
                root(*inputs)
            other = counter.get_total_flops() / 2
            assert other == pytest.approx(macs[key], rel=0.01), key
    assert costs.stage_macs.min() > 0


class _RecordingPass(nn.Module):
    def __init__(self, model: MultiExitModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.forward_all(x))


def test_stage_and_head_costs_add_up_to_the_recording_pass(analyzed):
    model, costs = analyzed
    whole = count_ops(_RecordingPass(model), (torch.zeros(1, *model.input_shape),))
    assert int(costs.stage_macs.sum() + costs.head_macs.sum()) == whole.macs
    assert sum(p.other_ops for p in costs.parts) == whole.other_ops
    assert costs.cumulative_macs[-1] == whole.macs
    assert np.all(np.diff(costs.cumulative_macs) > 0)


def test_table_shape_and_parameters(analyzed):
    model, costs = analyzed
    table = costs.table
    assert len(table) == 2 * model.num_exits
    assert (table["macs"] >= 0).all() and (table["output_bytes"] > 0).all()
    assert (
        costs.stage_macs.shape
        == costs.head_macs.shape
        == costs.cumulative_macs.shape
        == (model.num_exits,)
    )
    # stages and heads of a multi-exit model use disjoint parameters: together, the whole model
    assert int(costs.cumulative_params[-1]) == sum(p.numel() for p in model.parameters())


def test_layer_rows_add_up_to_their_part(analyzed):
    _, costs = analyzed
    layers = costs.layer_table
    sums = layers.groupby(["part", "index"])[["macs", "other_ops"]].sum()
    for p in costs.parts:
        assert sums.loc[(p.part, p.index), "macs"] == p.macs
        assert sums.loc[(p.part, p.index), "other_ops"] == p.other_ops
    assert (layers["weight_bytes"] >= 4 * layers["params"]).all()


# --------------------------------------------------------------------------- cumulative / expected
def test_cumulative_counts_every_head_up_to_the_exit():
    np.testing.assert_allclose(cumulative([1.0, 2.0, 4.0], [0.1, 0.2, 0.4]), [1.1, 3.3, 7.7])
    with pytest.raises(ValueError, match="equal length"):
        cumulative([1, 2], [1, 2, 3])


def test_expected_cost_on_hand_made_distributions():
    cum = [10.0, 30.0, 60.0]
    assert expected_cost([0.5, 0.25, 0.25], cum) == pytest.approx(5 + 7.5 + 15)
    assert expected_cost([0, 0, 1], cum) == 60.0
    assert expected_cost([1, 0, 0], cum) == 10.0
    points = np.array([[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.5]])
    out = expected_cost(points, cum)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [10.0, 30.0, 2 + 9 + 30])
    # fractions counted from samples (k/N) sum to 1 only up to rounding
    assert expected_cost([1 / 3, 1 / 3, 1 / 3], cum) == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ([0.5, 0.6, -0.1], r"non-negative, row 0 has -0.1 at exit 2"),
        ([0.5, 0.25, 0.2], r"sum to 1, row 0 sums to 0.95"),
        ([[1, 0, 0], [0.5, 0.5, 0.5]], r"sum to 1, row 1 sums to 1.5"),
        ([0.5, 0.5], r"shape \(3,\) or \(points, 3\).*got shape \(2,\)"),
        ([[[1, 0, 0]]], r"got shape \(1, 1, 3\)"),
        ([float("nan"), 0.5, 0.5], r"row 0 are not finite"),
    ],
)
def test_expected_cost_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        expected_cost(fractions, [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- eebench list models
def test_models_table_shows_cumulative_macs_per_exit():
    table = models_table((3, 32, 32), filter="big-little")
    row = table.iloc[0]
    costs = analyze_costs(create_model("big-little"))
    cells = row[CUM_MACS_COLUMN].split(" / ")
    assert len(cells) == row["exits"] == 2
    np.testing.assert_allclose([float(c) for c in cells], costs.cumulative_macs / 1e6, rtol=5e-3)
    # a cascade's plain network is its last member alone: the big member's stage and head
    final_only = costs.stage_macs[-1] + costs.head_macs[-1]
    assert float(row[FINAL_MACS_COLUMN]) == pytest.approx(final_only / 1e6, rel=5e-3)


def test_models_table_says_why_a_model_cannot_run(monkeypatch):
    def refuse(name, num_classes, input_shape):
        raise InputShapeError(name, "input_shape", "height and width >= 64", tuple(input_shape))

    monkeypatch.setattr(listing, "create_model", refuse)
    row = models_table((3, 32, 32), filter="big-little").iloc[0]
    assert row["model"] == "big-little"
    assert row["note"] == (
        "not runnable: big-little: invalid config field 'input_shape': expected height and width >= 64, "
        "got (3, 32, 32)"
    )
    assert row[CUM_MACS_COLUMN] == row[FINAL_MACS_COLUMN] == "-"


def test_cli_list_models_prints_macs(capsys):
    assert main(["list", "models", "--filter", "cascade", "--input-shape", "3,16,16"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs = 2 x MACs" in out
    assert CUM_MACS_COLUMN in out
    costs = analyze_costs(create_model("cascade", input_shape=(3, 16, 16)))
    assert " / ".join(f"{v / 1e6:.3g}" for v in costs.cumulative_macs) in out

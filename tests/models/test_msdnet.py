"""MSDNet: structure, stage/exit decomposition, counts against the reference code, errors, training."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from eebench.models import InputShapeError, ModelConfigError, MultiExitModel, as_tuple, create_model
from eebench.models.msdnet import MSDNet, block_steps, layer_plan, min_input_side

# Reference counts of the paper's public PyTorch code (github kalviny/MSDNet-PyTorch,
# models/msdnet.py at commit 9a6386e), built with its README arguments and its args.py
# defaults (growthRate 6, grFactor and bnFactor 1-2-4, prune max, reduction 0.5, bottleneck)
# for 10 classes:
#   CIFAR anytime:  --nBlocks 7 --stepmode even --step 2 --base 4 --nChannels 16, 32x32 input;
#   CIFAR budgeted: --nBlocks 5 --stepmode lin_grow --step 1 --base 1 --nChannels 16;
#   ImageNet:       --nBlocks 5 --stepmode even --step 4 --base 4 --nChannels 32
#                   --growthRate 16 --grFactor 1-2-4-4 --bnFactor 1-2-4-4, 224x224, 1000 classes.
# Per exit, cumulative over the forward order (blocks and classifiers up to that exit, as its
# op_counter.py accumulates them): parameters, and multiply-adds of every Conv2d and Linear.
# Its op_counter.py prints slightly larger "FLOPs" for the same network because it also adds
# ReLU elements, average-pooling and linear biases: 15.13M, 25.48M, 37.06M, 46.28M, 57.28M,
# 66.89M, 75.86M for CIFAR anytime.
REF_CIFAR_ANYTIME_MACS = [14955776, 25235968, 36745984, 45926400, 56876288, 66460160, 75407104]
REF_CIFAR_ANYTIME_PARAMS = [422266, 853572, 1240122, 1649108, 2120302, 2533592, 2986690]
REF_CIFAR_BUDGETED_PARAMS = [288094, 626520, 983478, 1445984, 2020874]
REF_IMAGENET_MACS = [337214464, 681654272, 1003659008, 1249626240, 1355606016]
REF_IMAGENET_PARAMS = [4238504, 8772240, 13073272, 16748416, 23958440]
# the reference's ImageNet 7x7 stem conv has a bias in front of its BatchNorm; ours has none
IMAGENET_STEM_BIAS = 32


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the count


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cumulative_params(model: MultiExitModel) -> list[int]:
    out, acc = [], 0
    for i in range(model.num_exits):
        acc += n_params(model.stages[i]) + n_params(model.exits[i])
        out.append(acc)
    return out


def cumulative_conv_linear_macs(model: MultiExitModel) -> list[int]:
    """fvcore on each stage's and head's static path; conv and linear multiply-adds only."""
    with warnings.catch_warnings():  # fvcore's import uses the deprecated torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    states = model.example_states(1)
    out, acc = [], 0
    for i in range(model.num_exits):
        for path, inputs in (
            (model.stage_module(i), states[i]),
            (model.exit_module(i), states[i + 1]),
        ):
            fa = FlopCountAnalysis(path.eval(), inputs)
            fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = fa.by_operator()
            acc += by_op.get("conv", 0) + by_op.get("linear", 0)
        out.append(acc)
    return out


@pytest.fixture(scope="module")
def anytime() -> MSDNet:
    return create_model("msdnet-cifar-anytime", num_classes=10, input_shape=(3, 32, 32)).eval()


@pytest.fixture(scope="module")
def imagenet() -> MSDNet:
    return create_model("msdnet-imagenet", num_classes=1000, input_shape=(3, 224, 224)).eval()


# ----------------------------------------------------------------- structure
@pytest.mark.parametrize(
    ("name", "shape", "config", "exits"),
    [
        ("msdnet", (1, 8, 8), {}, 4),
        ("msdnet", (3, 32, 32), {"n_blocks": 3, "prune": "min", "bottleneck": False}, 3),
        ("msdnet", (3, 20, 28), {"reduction": 0, "step_mode": "lin_grow", "step": 1}, 4),
        ("msdnet", (1, 8, 8), {"n_scales": 1, "gr_factor": [1], "bn_factor": [2]}, 4),
        ("msdnet-cifar-budgeted", (3, 32, 32), {}, 5),
    ],
)
def test_forward_all_gives_one_logit_tensor_per_block(name, shape, config, exits):
    model = create_model(name, num_classes=7, input_shape=shape, **config).eval()
    assert model.num_exits == model.num_stages == exits
    with torch.no_grad():
        outs = model.forward_all(torch.randn(3, *shape))
    assert [tuple(o.shape) for o in outs] == [(3, 7)] * exits
    assert all(torch.isfinite(o).all() for o in outs)


def test_anytime_forward_all_and_forward_until_agree(anytime):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = anytime.forward_all(x)
        assert len(outs) == 7 and all(o.shape == (2, 10) for o in outs)
        torch.testing.assert_close(anytime.forward_until(x, 2), outs[2], rtol=0, atol=0)


def test_state_is_per_scale_tuple_coarsest_last_and_shrinks_when_pruned(anytime):
    assert anytime.steps == [4, 2, 2, 2, 2, 2, 2]
    # 16 layers over 3 scales: the finest scale goes after layer 6 and the next after layer 12
    assert anytime.scales_per_stage == [3, 3, 2, 2, 2, 1, 1]
    states = anytime.example_states(1)
    assert [len(s) for s in states[1:]] == anytime.scales_per_stage
    assert [tuple(t.shape[2:]) for t in states[1]] == [(32, 32), (16, 16), (8, 8)]
    for s in states[1:]:
        assert tuple(s[-1].shape[2:]) == (8, 8)  # every exit reads the coarsest scale


def test_exit_info_matches_a_real_forward(anytime):
    info = anytime.exit_info
    state = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        for i, e in enumerate(info):
            state = anytime.forward_stage(i, state)
            coarsest = as_tuple(state)[-1]
            assert (e.index, e.stage) == (i, i)
            assert e.feature_shape == tuple(coarsest.shape[1:])
            assert e.features == coarsest.shape[1]
            assert anytime.exits[i].features[0][0].in_channels == e.features
    # cumulative layers over all 16 layers
    assert [e.position for e in info] == pytest.approx(
        [4 / 16, 6 / 16, 8 / 16, 10 / 16, 12 / 16, 14 / 16, 1.0]
    )


def test_layer_plan_matches_the_reference_rules():
    # lin_grow: exit k after layer 1 + 2 + ... + k (the paper's budgeted-batch layout)
    assert block_steps(5, 1, "lin_grow", 1) == [1, 2, 3, 4, 5]
    plan = layer_plan(
        [1, 2, 3, 4, 5], n_scales=3, prune="max", n_channels=16, growth_rate=6, reduction=0.5
    )
    # interval ceil(15 / 3) = 5: scales drop at layers 6 and 11, each followed by a transition
    assert [(p.in_scales, p.out_scales) for p in plan][4:7] == [(3, 3), (3, 2), (2, 2)]
    assert [i + 1 for i, p in enumerate(plan) if p.transition_to is not None] == [6, 11]
    assert plan[5].in_channels == 16 + 5 * 6 and plan[5].transition_to == (16 + 6 * 6) // 2
    # 'min' keeps every scale until the last n_scales - 1 layers; transitions at L/3 and 2L/3
    plan = layer_plan(
        [4, 2, 2, 2], n_scales=3, prune="min", n_channels=8, growth_rate=4, reduction=0.5
    )
    assert [p.out_scales for p in plan] == [3] * 8 + [2, 1]
    assert [i + 1 for i, p in enumerate(plan) if p.transition_to is not None] == [3, 6]


# ----------------------------------------------------------------- counts vs the reference
def test_cifar_anytime_params_and_macs_equal_the_reference(anytime):
    assert n_params(anytime) == REF_CIFAR_ANYTIME_PARAMS[-1]
    assert cumulative_params(anytime) == REF_CIFAR_ANYTIME_PARAMS
    assert cumulative_conv_linear_macs(anytime) == REF_CIFAR_ANYTIME_MACS


def test_cifar_budgeted_params_equal_the_reference():
    model = create_model("msdnet-cifar-budgeted", num_classes=10, input_shape=(3, 32, 32))
    assert cumulative_params(model) == REF_CIFAR_BUDGETED_PARAMS


def test_imagenet_params_and_macs_equal_the_reference(imagenet):
    assert imagenet.scales_per_stage == [4, 3, 2, 1, 1]
    assert cumulative_params(imagenet) == [p - IMAGENET_STEM_BIAS for p in REF_IMAGENET_PARAMS]
    assert cumulative_conv_linear_macs(imagenet) == REF_IMAGENET_MACS
    assert [e.feature_shape[1:] for e in imagenet.exit_info] == [(7, 7)] * 5


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"growth_rate": 0}, "growth_rate"),
        ({"growth_rate": -4}, "growth_rate"),
        (
            {"growth_rate": 3, "gr_factor": [1, 1, 2]},
            "growth_rate",
        ),  # cannot be split between strided and regular conv
        ({"n_blocks": 0}, "n_blocks"),
        ({"step": 0}, "step"),
        ({"n_channels": 2.5}, "n_channels"),
        ({"n_scales": 3, "bn_factor": [1, 2]}, "bn_factor"),
        ({"n_scales": 2, "gr_factor": [1, 2, 4]}, "gr_factor"),
        ({"gr_factor": [1, 0, 4]}, "gr_factor"),
        ({"step_mode": "linear"}, "step_mode"),
        ({"prune": "middle"}, "prune"),
        ({"prune": "min", "n_blocks": 1, "base": 1}, "prune"),  # too few layers to drop 2 scales
        ({"stem": "tiny"}, "stem"),
        ({"reduction": 1.5}, "reduction"),
        ({"bottleneck": "yes"}, "bottleneck"),
        ({"head_channels": 0}, "head_channels"),
    ],
)
def test_invalid_config_names_the_field(config, field):
    with pytest.raises(ModelConfigError, match=rf"invalid config field '{field}'") as err:
        create_model("msdnet", input_shape=(3, 32, 32), **config)
    assert err.value.field_name == field
    assert not isinstance(err.value, InputShapeError)


def test_preset_override_typo_suggests_the_knob():
    with pytest.raises(ModelConfigError, match=r"'growth_rte'.*did you mean 'growth_rate'"):
        create_model("msdnet-cifar-anytime", growth_rte=8)


def test_preset_accepts_an_override():
    model = create_model("msdnet-cifar-anytime", input_shape=(3, 32, 32), n_blocks=2)
    assert model.num_exits == 2 and model.metadata.config == {"n_blocks": 2}


@pytest.mark.parametrize(
    ("name", "shape", "config", "need"),
    [
        ("msdnet", (1, 8, 8), {"n_scales": 4}, 9),  # scales 9, 5, 3, 2
        ("msdnet-cifar-anytime", (3, 4, 32), {}, 5),  # scales 5, 3, 2
        ("msdnet-imagenet", (3, 32, 32), {}, 33),
    ],
)
def test_too_small_input_says_what_is_needed(name, shape, config, need):
    with pytest.raises(
        InputShapeError, match=rf"'input_shape'.*height and width >= {need}\b"
    ) as err:
        create_model(name, input_shape=shape, **config)
    assert err.value.field_name == "input_shape"
    assert create_model(name, input_shape=(shape[0], need, need), **config).num_exits >= 1


def test_generic_msdnet_fits_its_scales_to_the_input():
    assert create_model("msdnet", input_shape=(1, 8, 8)).n_scales == 3
    assert create_model("msdnet", input_shape=(1, 4, 4)).n_scales == 2
    assert create_model("msdnet", input_shape=(1, 3, 3)).n_scales == 2  # sides 3, 2
    assert create_model("msdnet", input_shape=(1, 2, 2)).n_scales == 1
    assert min_input_side(3, "cifar") == 5 and min_input_side(4, "imagenet") == 33


# ----------------------------------------------------------------- training
def test_small_default_trains_on_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:160], dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target[:160])
    model = create_model("msdnet", num_classes=10, input_shape=(1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(10):
        outs = model.forward_all(x)
        loss = sum(nn.functional.cross_entropy(o, y) for o in outs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses
    model.eval()
    with torch.no_grad():
        accuracy = [(o.argmax(1) == y).float().mean().item() for o in model.forward_all(x)]
    assert min(accuracy) > 0.5, accuracy

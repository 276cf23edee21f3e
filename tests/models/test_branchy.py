"""BranchyNet: shapes on every input size, the final exit is the plain backbone, declared
positions, and config errors."""

import pytest
import torch

from eebench.models import ModelConfigError, create_model
from eebench.models.branchy import BranchyNet

SMALL = {
    "branchynet-lenet": {},
    "branchynet-alexnet": {"width_mult": 0.25},
    "branchynet-resnet": {"depth": 8, "width": 4},
}
SHAPES = [(1, 8, 8), (3, 32, 32), (3, 224, 224)]
EXITS = {"branchynet-lenet": 2, "branchynet-alexnet": 3, "branchynet-resnet": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_all_gives_one_logit_tensor_per_exit(name, shape):
    model = create_model(name, num_classes=7, input_shape=shape, **SMALL[name]).eval()
    assert model.family == "intermediate"
    assert model.num_exits == model.num_stages == EXITS[name]
    with torch.no_grad():
        outs = model.forward_all(torch.randn(2, *shape))
    assert [tuple(o.shape) for o in outs] == [(2, 7)] * EXITS[name]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_final_exit_is_the_plain_backbone(name):
    model = create_model(name, num_classes=10, input_shape=(3, 32, 32), **SMALL[name]).eval()
    backbone = model.backbone()
    branch_params = {id(p) for e in model.exits[:-1] for p in e.parameters()}
    backbone_params = {id(p) for p in backbone.parameters()}
    assert not branch_params & backbone_params
    assert branch_params | backbone_params == {id(p) for p in model.parameters()}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = backbone(x)
        outs = model.forward_all(x)
        assert torch.allclose(outs[-1], plain, atol=1e-6)
        for i in range(model.num_exits):
            assert torch.allclose(model.forward_until(x, i), outs[i], atol=1e-6)


def test_paper_branch_points():
    # B-LeNet: after conv 1; B-AlexNet: after conv 2 and conv 3; B-ResNet-110: after layer 3 and 37.
    assert create_model("branchynet-lenet", input_shape=(1, 28, 28)).branch_after == [0]
    alex = create_model("branchynet-alexnet", width_mult=0.25)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in s.modules()) for s in alex.stages]
    assert convs == [2, 1, 2]
    resnet = create_model("branchynet-resnet", position_basis="layers")
    assert resnet.branch_after == [1, 18]
    assert [e.position for e in resnet.exit_info] == pytest.approx([3 / 110, 37 / 110, 1.0])


def test_lenet_positions_by_layers_and_by_hand_counted_macs():
    layers = create_model("branchynet-lenet", input_shape=(1, 8, 8), position_basis="layers")
    assert [e.position for e in layers.exit_info] == pytest.approx([1 / 5, 1.0])
    # 1x8x8: conv1 5x5 1->5 at 8x8, conv2 5->10 at 4x4, conv3 10->20 at 2x2, FC 20->84, FC 84->10
    conv1, conv2, conv3 = 1 * 5 * 25 * 64, 5 * 10 * 25 * 16, 10 * 20 * 25 * 4
    total = conv1 + conv2 + conv3 + 20 * 84 + 84 * 10
    macs = create_model("branchynet-lenet", input_shape=(1, 8, 8))
    assert [e.position for e in macs.exit_info] == pytest.approx([conv1 / total, 1.0])


def test_resnet_custom_branch_blocks_and_declared_features():
    model = create_model("branchynet-resnet", depth=20, width=4, branch_blocks=[2, 4, 7])
    assert model.num_exits == 4
    info = model.exit_info
    assert [e.feature_shape for e in info] == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (16, 8, 8)]
    positions = [e.position for e in info]
    assert positions == sorted(positions) and positions[-1] == 1.0 and positions[0] > 0


def test_small_input_is_never_pooled_below_one_pixel():
    model = create_model("branchynet-lenet", input_shape=(1, 2, 2)).eval()
    with torch.no_grad():
        outs = model.forward_all(torch.randn(1, 1, 2, 2))
    assert [tuple(o.shape) for o in outs] == [(1, 10), (1, 10)]


@pytest.mark.parametrize(
    ("name", "config", "pattern"),
    [
        ("branchynet-resnet", {"depth": 57}, r"'depth': expected 6n\+2.*got 57"),
        ("branchynet-resnet", {"depth": 0}, r"'depth'.*got 0"),
        ("branchynet-resnet", {"width": 0}, r"'width': expected a positive integer, got 0"),
        (
            "branchynet-resnet",
            {"depth": 20, "branch_blocks": [4, 2]},
            r"'branch_blocks'.*increasing",
        ),
        ("branchynet-resnet", {"depth": 20, "branch_blocks": [0]}, r"'branch_blocks'.*\[1, 8\]"),
        ("branchynet-resnet", {"depth": 20, "branch_blocks": [9]}, r"'branch_blocks'.*got \[9\]"),
        ("branchynet-lenet", {"width_mult": 0}, r"'width_mult': expected a positive number.*got 0"),
        ("branchynet-alexnet", {"width_mult": -0.5}, r"'width_mult'.*got -0.5"),
        (
            "branchynet-alexnet",
            {"position_basis": "flops"},
            r"'position_basis'.*'macs'.*got 'flops'",
        ),
    ],
)
def test_invalid_config_names_field_expectation_and_value(name, config, pattern):
    with pytest.raises(ModelConfigError, match=pattern) as err:
        create_model(name, **config)
    assert err.value.model == name


def test_class_is_usable_without_the_registry():
    from eebench.models.branchy import LeNetSpec

    model = BranchyNet(10, (1, 8, 8), LeNetSpec(width_mult=2.0))
    assert model.metadata.family == "intermediate"
    assert model.describe()["num_exits"] == 2

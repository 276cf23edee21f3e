"""attach_exits: a ResNet-18-style module, a plain nn.Sequential and a cut across a skip
connection split into stages that reproduce the backbone; every bad backbone or exit list gets
an error that says what and how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from eebench import attach_exits
from eebench.models.attach import AttachedExitsModel, AttachError
from eebench.models.contract import (
    costs_add_up,
    exits_declared_truthfully,
    forward_all_shapes,
    no_shared_parameters,
    stages_equal_forward_all,
)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNet18(nn.Module):
    """ResNet-18's layout (2-2-2-2 basic blocks, torchvision's module names), narrow."""

    def __init__(self, num_classes: int = 10, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        chans = [width, width * 2, width * 4, width * 8]
        cin = width
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, c, stride), Block(c, c)))
            cin = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomise_bn(module: nn.Module) -> None:
    """BatchNorm statistics away from 0/1 so a skipped or doubled layer would show."""
    g = torch.Generator().manual_seed(5)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def captured(backbone: nn.Module, names: list[str], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The backbone's output and the outputs of the named submodules (forward hooks)."""
    seen: dict[str, Tensor] = {}
    handles = [
        backbone.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
        for n in names
    ]
    try:
        out = backbone(x)
    finally:
        for h in handles:
            h.remove()
    return out, seen


@torch.no_grad()
def test_resnet18_style_backbone_splits_into_stages_that_reproduce_it():
    torch.manual_seed(0)
    backbone = ResNet18(num_classes=7).eval()
    randomise_bn(backbone)
    exits = ["layer1", "layer2.1", "layer3"]
    model = attach_exits(backbone, exits, num_classes=7, input_shape=(3, 16, 16)).eval()
    assert isinstance(model, AttachedExitsModel) and model.family == "intermediate"
    assert model.num_exits == 4 and model.exit_names == [*exits, "classifier"]
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    outs = model.forward_all(x)
    want, feats = captured(backbone, exits, x)
    torch.testing.assert_close(outs[-1], want, rtol=0, atol=0)  # the plain network is the backbone
    for i, name in enumerate(exits):  # each early exit = its head on that submodule's output
        torch.testing.assert_close(outs[i], model.exits[i].head(feats[name]), rtol=0, atol=0)
    assert [e.feature_shape for e in model.exit_info] == [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32,)]
    # default heads: pool + linear sized from the probe
    assert [model.exits[i].head[-1].in_features for i in range(3)] == [4, 8, 16]
    # the weights are the backbone's own (shared objects), listed once
    assert model.stages[0].conv1.weight is backbone.conv1.weight
    assert model.exits[-1].fc.weight is backbone.fc.weight
    head_params = sum(p.numel() for p in model.head_parameters())
    assert sum(p.numel() for p in model.parameters()) == (
        sum(p.numel() for p in backbone.parameters()) + head_params
    )
    for clause in (
        forward_all_shapes,
        exits_declared_truthfully,
        stages_equal_forward_all,
        no_shared_parameters,
        costs_add_up,
    ):
        clause(model)


@torch.no_grad()
def test_sequential_backbone_with_given_heads():
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 16),
        nn.ReLU(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    ).eval()
    heads = [nn.Linear(16, 3), nn.Sequential(nn.Tanh(), nn.Linear(16, 3))]
    model = attach_exits(backbone, ["2", "4"], num_classes=3, input_shape=(3, 2, 2), head=heads)
    x = torch.randn(5, 3, 2, 2)
    outs = model.eval().forward_all(x)
    h1 = torch.relu(backbone[1](x.flatten(1)))
    h2 = torch.relu(backbone[3](h1))
    torch.testing.assert_close(outs[0], heads[0](h1), rtol=0, atol=0)
    torch.testing.assert_close(outs[1], heads[1](h2), rtol=0, atol=0)
    torch.testing.assert_close(outs[2], backbone(x), rtol=0, atol=0)
    assert model.exits[0].head is heads[0]


@torch.no_grad()
def test_a_cut_inside_a_residual_block_carries_the_skip_in_the_state():
    block = Block(3, 3)
    backbone = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    randomise_bn(backbone)
    model = attach_exits(
        backbone,
        ["0.conv1"],
        num_classes=4,
        input_shape=(3, 6, 6),
        head=lambda shape, n: nn.Sequential(
            nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], n)
        ),
    ).eval()
    x = torch.randn(2, 3, 6, 6)
    state = model.forward_stage(0, x)
    assert isinstance(state, tuple) and len(state) == 2  # the block's input travels on for its skip
    torch.testing.assert_close(state[0], x, rtol=0, atol=0)
    torch.testing.assert_close(state[1], block.conv1(x), rtol=0, atol=0)
    torch.testing.assert_close(model.forward_all(x)[-1], backbone(x), rtol=0, atol=0)
    assert model.exit_info[0].feature_shape == (3, 6, 6)
    stages_equal_forward_all(model)
    exits_declared_truthfully(model)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.body = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(self.gate(x)).mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x * 2
        return x


def test_an_untraceable_backbone_names_the_submodule_and_line_and_leaf_modules_fix_it():
    with pytest.raises(AttachError) as info:
        attach_exits(Branchy(), ["body"], num_classes=3, input_shape=(2, 4, 4))
    msg = str(info.value)
    assert "cannot be traced by torch.fx" in msg and "submodule 'gate'" in msg
    assert "test_attach_exits.py" in msg and "if x.sum() > 0" in msg
    assert "leaf_modules=['gate']" in msg
    model = attach_exits(
        Branchy(), ["body"], num_classes=3, input_shape=(2, 4, 4), leaf_modules=["gate"]
    )
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_all(x)[-1], model.backbone(x))


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"exits": ["layer5"]}, ["'layer5' is not a submodule", "'layer4'"]),
        ({"exits": ["layer2.3"]}, ["'layer2.3' is not a submodule", "'layer2.1'"]),
        ({"exits": ["layer3", "layer1"]}, ["order they run", "['layer1', 'layer3']"]),
        ({"exits": ["layer1", "layer1.0"]}, ["'layer1.0' lies inside 'layer1'"]),
        ({"exits": []}, ["exits is empty"]),
        ({"exits": ["fc"]}, ["at or after the input of the backbone's classifier"]),
        ({"exits": ["layer1"], "head": [nn.Linear(4, 5)] * 2}, ["2 modules for 1 exits"]),
        ({"exits": ["layer1"], "head": {"layer9": nn.Identity()}}, ["not exits"]),
        ({"exits": ["layer1"], "num_classes": 6}, ["gives 5 classes but 6 were asked"]),
        (
            {"exits": ["layer1"], "head": lambda s, n: nn.Flatten()},
            ["head of exit 'layer1'", "(batch, 5)"],
        ),
        ({"exits": ["layer1"], "classifier": "fcc"}, ["classifier 'fcc' is not called", "'fc'"]),
        ({"exits": ["layer1"], "input_shape": (3, 1)}, ["cannot run on input shape (3, 1)"]),
    ],
)
def test_bad_exit_lists_and_heads_get_clear_errors(kwargs, needles):
    args = {"num_classes": 5, "input_shape": (3, 16, 16), **kwargs}
    with pytest.raises(AttachError) as info:
        attach_exits(ResNet18(num_classes=5), **args)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_a_module_called_twice_cannot_carry_an_exit():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(AttachError, match="called 2 times"):
        attach_exits(Twice(), ["conv"], num_classes=3, input_shape=(2, 4, 4))


def test_backbone_weights_load_into_the_split_model():
    torch.manual_seed(0)
    trained = ResNet18(num_classes=5)
    model = attach_exits(ResNet18(num_classes=5), ["layer2"], num_classes=5, input_shape=(3, 8, 8))
    model.load_backbone_state_dict(trained.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().forward_all(x)[-1], trained.eval()(x), rtol=0, atol=0
        )


@torch.no_grad()
def test_torchvision_resnet18_when_the_vision_extra_is_installed():
    models = pytest.importorskip(
        "torchvision.models", reason="torchvision is the optional 'vision' extra"
    )
    backbone = models.resnet18(weights=None, num_classes=10).eval()  # no download
    model = attach_exits(
        backbone, ["layer1", "layer2.1", "layer3"], num_classes=10, input_shape=(3, 32, 32)
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    want, feats = captured(backbone, ["layer1", "layer2.1", "layer3"], x)
    outs = model.forward_all(x)
    torch.testing.assert_close(outs[-1], want, rtol=0, atol=0)
    torch.testing.assert_close(outs[1], model.exits[1].head(feats["layer2.1"]), rtol=0, atol=0)
    stages_equal_forward_all(model)


def test_a_shape_read_before_an_exit_and_used_after_it_is_refused():
    class ShapeSpan(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1)
            self.b = nn.Conv2d(2, 2, 1)
            self.fc = nn.Linear(32, 3)

        def forward(self, x: Tensor) -> Tensor:
            n = x.shape[0]
            return self.fc(self.b(self.a(x)).reshape(n, -1))

    with pytest.raises(AttachError, match="carries a non-tensor value .*int"):
        attach_exits(ShapeSpan(), ["a"], num_classes=3, input_shape=(2, 4, 4))
    # flatten(1) needs no shape from before the cut: the same network splits fine
    ShapeSpan.forward = lambda self, x: self.fc(self.b(self.a(x)).flatten(1))
    assert attach_exits(ShapeSpan(), ["a"], num_classes=3, input_shape=(2, 4, 4)).num_exits == 2

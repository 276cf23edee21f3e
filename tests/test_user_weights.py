"""Loading a user's plain state_dict: whole model or backbone, strictly, with errors that name
the keys and shapes that differ and point to the right form of ``checkpoint:``."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from eebench import attach_exits
from eebench.errors import CheckpointError
from eebench.models import create_model
from eebench.training.user_weights import is_eebench_checkpoint, load_user_weights


def net(width: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 3),
    )


def attached(width: int = 4):
    return attach_exits(net(width), ["1"], num_classes=3, input_shape=(1, 6, 6))


def test_backbone_weights_load_and_are_recorded_with_their_hash(tmp_path):
    torch.manual_seed(1)
    source = net()
    path = tmp_path / "bb.pt"
    torch.save(source.state_dict(), path)
    model = attached()
    info = load_user_weights(model, path, "backbone")
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_all(x)[-1], source.eval()(x), rtol=0, atol=0)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info.part, info.tensors) == ("backbone", 6)
    assert not is_eebench_checkpoint(path)


def test_a_backbone_file_given_as_the_whole_model_points_to_the_backbone_form(tmp_path):
    torch.save(net().state_dict(), tmp_path / "bb.pt")
    with pytest.raises(CheckpointError) as info:
        load_user_weights(attached(), tmp_path / "bb.pt", "model")
    msg = str(info.value)
    assert "missing keys (8)" in msg and "unexpected keys (6)" in msg
    assert "use checkpoint: {backbone: PATH}" in msg


def test_a_wider_network_names_every_mismatched_shape(tmp_path):
    torch.save(net(width=5).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError) as info:
        load_user_weights(attached(width=4), tmp_path / "wide.pt", "backbone")
    msg = str(info.value)
    assert "shape mismatches (5)" in msg
    assert "'0.weight' is (5, 1, 3, 3) in the file but (4, 1, 3, 3) in the backbone" in msg
    assert "'6.weight' is (3, 5) in the file but (3, 4) in the backbone" in msg


def test_backbone_weights_need_a_model_with_a_backbone(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    model = create_model("branchynet-lenet", num_classes=3, input_shape=(1, 28, 28))
    with pytest.raises(CheckpointError, match="needs a model built with eebench.attach_exits"):
        load_user_weights(model, tmp_path / "w.pt", "backbone")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [([torch.zeros(1)], "holds a list, not a state_dict"), ({"w": 3}, "to non-tensors")],
)
def test_files_that_are_not_a_state_dict(tmp_path, payload, needle):
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=needle):
        load_user_weights(attached(), tmp_path / "x.pt")

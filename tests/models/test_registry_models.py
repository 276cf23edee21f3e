"""One parametrised test suite over the whole model registry.

A model is tested the moment it is registered: it builds, runs, holds every
clause of the model contract (:mod:`eebench.models.contract`, the same code
``eebench check-model`` runs on a user's model: exits declared truthfully,
stages that reproduce ``forward_all``, no shared parameters, ONNX parity, a
cost table that adds up, executor == vectorised evaluation), and rebuilds
from its own metadata.
"""

from __future__ import annotations

import pytest
import torch

from eebench.models import InputShapeError, MultiExitModel, contract, create_model, list_models

NUM_CLASSES = 7  # not the default, so a model that ignores num_classes is caught
# 3x32x32 first; paper-scale ImageNet variants refuse it and run on the next shape that fits
SHAPES = [(3, 32, 32), (3, 48, 48), (3, 64, 64), (3, 224, 224)]
SMALL_SHAPE = (1, 8, 8)
BATCH = 2


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the count after each test


def build(name: str, input_shape: tuple[int, ...]) -> MultiExitModel:
    return create_model(name, num_classes=NUM_CLASSES, input_shape=input_shape).eval()


@pytest.fixture(scope="module", params=list_models())
def built(request) -> tuple[str, MultiExitModel]:
    """(name, model in eval mode) at the first of SHAPES the architecture accepts."""
    name = request.param
    refusals = []
    for shape in SHAPES:
        try:
            return name, build(name, shape)
        except InputShapeError as err:
            refusals.append(str(err))
    pytest.fail(f"{name} builds on none of {SHAPES}: {refusals}")


def check_forward_all(model: MultiExitModel) -> None:
    contract.forward_all_shapes(model)
    assert model.num_classes == NUM_CLASSES


def test_builds_on_32x32_or_says_why(built):
    name, model = built
    if model.input_shape != SHAPES[0]:
        with pytest.raises(InputShapeError, match="input_shape"):
            build(name, SHAPES[0])
    check_forward_all(model)


@pytest.mark.parametrize("name", list_models())
def test_small_input_runs_or_raises_input_shape_error(name):
    try:
        model = build(name, SMALL_SHAPE)
    except InputShapeError as err:
        assert err.field_name == "input_shape"
        assert "input_shape" in str(err)
        return
    assert model.input_shape == SMALL_SHAPE
    check_forward_all(model)


# the clauses `eebench check-model` runs on a user's model, applied to the whole zoo
@pytest.mark.parametrize("clause", list(contract.CLAUSES))
def test_model_contract(built, clause):
    contract.CLAUSES[clause](built[1])


def test_metadata_rebuilds_the_same_model(built):
    name, model = built
    meta = model.metadata
    assert meta.name == name
    assert meta.family == model.family
    assert meta.num_classes == NUM_CLASSES
    assert tuple(meta.input_shape) == model.input_shape
    rebuilt = create_model(
        meta.name, num_classes=meta.num_classes, input_shape=meta.input_shape, **meta.config
    )
    assert rebuilt.num_exits == model.num_exits
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in model.parameters()
    )
    assert [e.feature_shape for e in rebuilt.exit_info] == [
        e.feature_shape for e in model.exit_info
    ]

"""One parametrised test suite over the whole model registry.

A model is tested the moment it is registered: it builds, runs, declares its
exits truthfully, decomposes into stages that reproduce ``forward_all``, and
rebuilds from its own metadata.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from eebench.models import InputShapeError, MultiExitModel, as_tuple, create_model, list_models

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


def random_input(model: MultiExitModel, batch: int = BATCH) -> Tensor:
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(1))


def check_forward_all(model: MultiExitModel) -> None:
    with torch.no_grad():
        outs = model.forward_all(random_input(model))
    assert model.num_exits == model.num_stages >= 1
    assert isinstance(outs, list) and len(outs) == model.num_exits
    for i, out in enumerate(outs):
        assert out.shape == (BATCH, NUM_CLASSES), f"exit {i}"
        assert torch.isfinite(out).all(), f"exit {i}"


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


class _ReadRecorder(TorchFunctionMode):
    """Ids of every tensor handed to a torch function: which state tensors a head reads."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for a in [*args, *kwargs.values()]:
            for t in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(t, Tensor):
                    self.read.add(id(t))
        return func(*args, **kwargs)


def test_exit_info_matches_a_real_forward(built):
    _, model = built
    info = model.exit_info
    assert [e.index for e in info] == list(range(model.num_exits))
    stages = [e.stage for e in info]
    assert all(0 <= s < model.num_stages for s in stages)
    assert all(a < b for a, b in zip(stages, stages[1:])), f"stage indices not increasing: {stages}"
    positions = [e.position for e in info]
    assert all(0.0 < p <= 1.0 + 1e-9 for p in positions), positions
    assert all(a <= b for a, b in zip(positions, positions[1:])), f"positions decrease: {positions}"
    assert positions[-1] == pytest.approx(1.0, abs=1e-6)

    state = random_input(model)
    with torch.no_grad():
        for i, e in enumerate(info):
            state = model.forward_stage(i, state)
            recorder = _ReadRecorder()
            with recorder:
                model.forward_exit(i, state)
            read = [t for t in as_tuple(state) if id(t) in recorder.read]
            assert read, f"exit {i} reads no tensor of its state"
            read_shapes = {tuple(t.shape[1:]) for t in read}
            assert e.feature_shape in read_shapes, (
                f"exit {i} declares {e.feature_shape}, reads {read_shapes}"
            )
            assert e.features == e.feature_shape[0]


def test_stage_by_stage_equals_forward_all(built):
    _, model = built
    x = random_input(model)
    with torch.no_grad():
        reference = model.forward_all(x)
        state = x
        flat = as_tuple(x)
        for i in range(model.num_stages):
            state = model.forward_stage(i, state)
            torch.testing.assert_close(model.forward_exit(i, state), reference[i], rtol=0, atol=0)
            # the flat static paths used for tracing and export compute the same thing
            flat = model.stage_module(i)(*flat)
            assert isinstance(flat, tuple)
            torch.testing.assert_close(model.exit_module(i)(*flat), reference[i], rtol=0, atol=0)
        for i in range(model.num_exits):
            torch.testing.assert_close(model.forward_until(x, i), reference[i], rtol=0, atol=0)


def test_example_states_feed_every_stage(built):
    _, model = built
    states = model.example_states(BATCH)
    assert len(states) == model.num_stages + 1
    assert states[0][0].shape == (BATCH, *model.input_shape)
    with torch.no_grad():
        for i in range(model.num_stages):
            out = model.stage_module(i)(*states[i])
            assert [t.shape for t in out] == [t.shape for t in states[i + 1]], f"stage {i}"


def _param_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def test_stages_share_no_parameters(built):
    _, model = built
    seen: dict[int, int] = {}
    for i, stage in enumerate(model.stages):
        for pid in _param_ids(stage):
            assert pid not in seen, f"stages {seen.get(pid)} and {i} share a parameter tensor"
            seen[pid] = i


def test_cascade_members_have_distinct_storage(built):
    _, model = built
    if model.family != "cascade":
        pytest.skip("feature reuse is allowed outside cascades")
    members = [
        list(model.stages[i].parameters()) + list(model.exits[i].parameters())
        for i in range(model.num_stages)
    ]
    ids = [{id(p) for p in m} for m in members]
    storages = [{p.untyped_storage().data_ptr() for p in m} for m in members]
    for i in range(len(members)):
        assert members[i], f"member {i} has no parameters"
        for j in range(i):
            assert not ids[i] & ids[j], f"members {j} and {i} share parameter objects"
            assert not storages[i] & storages[j], f"members {j} and {i} share parameter storage"


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

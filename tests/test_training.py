"""Training schemes: joint, layer-wise (frozen = bit-identical), distillation, cascade; config; determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eebench.data import get_splits, iterate_batches
from eebench.errors import ConfigError
from eebench.models import MultiExitModel
from eebench.training import (
    TrainConfig,
    create_seeded_model,
    distillation_loss,
    early_exit_weights,
    get_scheme,
    read_checkpoint,
    run_phase,
    train_model,
)


class Chain(MultiExitModel):
    """A tiny backbone of conv-BN-ReLU stages, each with a linear exit on the flattened map."""

    family = "test-chain"

    def __init__(
        self, num_classes: int = 10, input_shape=(1, 8, 8), width: int = 4, stages: int = 3
    ) -> None:
        super().__init__(num_classes, input_shape)
        c = input_shape[0]
        for _ in range(stages):
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
                )
            )
            features = width * input_shape[1] * input_shape[2]
            self.exits.append(nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes)))
            c = width
        self.set_metadata("test-chain", {"width": width, "stages": stages})


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread on a shared machine (conftest restores the count)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def splits():
    return get_splits("digits", seed=0, limit=400)


def _chain(seed: int = 0) -> Chain:
    torch.manual_seed(seed)
    return Chain()


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


FAST = {"epochs": 1, "batch_size": 32, "lr": 1e-2}


# ----------------------------------------------------------------------------- config
def test_train_config_round_trips_through_json_and_validates_fields():
    cfg = TrainConfig(
        scheme="distill", epochs=3, exit_weights=[0.5, 1.0], optimizer="sgd", temperature=4.0
    )
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_json(cfg.to_json()).digest() == cfg.digest()
    assert cfg.replace(epochs=4).digest() != cfg.digest()
    with pytest.raises(ConfigError, match=r"epoch.*Did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"optimizer"):
        TrainConfig.from_dict({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match=r"scheme.*did you mean 'layerwise'"):
        TrainConfig.from_dict({"scheme": "layerwize"})
    with pytest.raises(ConfigError, match=r"lr"):
        TrainConfig.from_dict({"lr": -1})


def test_exit_weights_uniform_linear_and_given():
    assert early_exit_weights("uniform", 4) == [1.0, 1.0, 1.0]
    assert early_exit_weights("linear", 4) == [0.25, 0.5, 0.75]
    assert early_exit_weights([0.1, 0.2], 3) == [0.1, 0.2]
    with pytest.raises(ConfigError, match="expected 2 weights"):
        early_exit_weights([0.1], 3)


def test_joint_loss_is_final_plus_weighted_early_exits(splits):
    model = _chain()
    cfg = TrainConfig(exit_weights=[0.3, 0.7])
    (phase,) = get_scheme("joint").phases(model, cfg)
    x, y = next(iterate_batches(splits.train, 16))
    loss, logits = phase.loss(model, x, y)
    outs = model.forward_all(x)
    expected = (
        F.cross_entropy(outs[2], y)
        + 0.3 * F.cross_entropy(outs[0], y)
        + 0.7 * F.cross_entropy(outs[1], y)
    )
    assert torch.allclose(loss, expected) and sorted(logits) == [0, 1, 2]


# ----------------------------------------------------------------------------- applicability
def test_schemes_that_do_not_apply_to_a_family_are_refused(splits):
    cascade = create_seeded_model("cascade", {"width": 4}, 10, splits.input_shape, 0)
    for scheme in ("joint", "layerwise", "distill"):
        with pytest.raises(
            ConfigError,
            match=rf"scheme: '{scheme}' does not apply to cascade.*Use scheme 'cascade'",
        ):
            train_model(cascade, splits, TrainConfig(scheme=scheme, **FAST), progress=False)
    with pytest.raises(ConfigError, match="scheme: 'cascade' trains the independent members"):
        train_model(_chain(), splits, TrainConfig(scheme="cascade", **FAST), progress=False)


def test_model_must_match_the_dataset(splits):
    with pytest.raises(ConfigError, match="num_classes=10"):
        train_model(Chain(num_classes=3), splits, TrainConfig(**FAST), progress=False)
    with pytest.raises(ConfigError, match=r"input_shape=\(1, 8, 8\)"):
        train_model(Chain(input_shape=(1, 16, 16)), splits, TrainConfig(**FAST), progress=False)


# ----------------------------------------------------------------------------- layer-wise
def test_layerwise_phase_leaves_earlier_stages_bit_identical(splits):
    model = _chain()
    cfg = TrainConfig(scheme="layerwise", **FAST)
    phases = get_scheme("layerwise").phases(model, cfg)
    assert [p.name for p in phases] == ["stage0", "stage1", "stage2"]
    gen = torch.Generator().manual_seed(0)
    run_phase(model, splits, cfg, phases[0], generator=gen, progress=False)
    frozen = [_state(model.stages[0]), _state(model.exits[0])]
    later = [_state(model.stages[2]), _state(model.exits[2])]
    before = [_state(model.stages[1]), _state(model.exits[1])]
    records = run_phase(model, splits, cfg, phases[1], generator=gen, progress=False)
    # weights AND BatchNorm buffers (running stats, batch counter) of stage 0 did not move
    assert _same(_state(model.stages[0]), frozen[0]) and _same(_state(model.exits[0]), frozen[1])
    assert _same(_state(model.stages[2]), later[0]) and _same(_state(model.exits[2]), later[1])
    bn_before = before[0]["1.running_mean"]
    assert not torch.equal(model.stages[1][1].running_mean, bn_before)
    assert not torch.equal(model.stages[1][0].weight, before[0]["0.weight"])
    assert records[0].train_accuracy[0] is None and records[0].train_accuracy[1] is not None
    assert all(p.requires_grad for p in model.parameters())  # flags restored after the phase


def test_full_layerwise_training_reaches_above_chance(splits):
    model = _chain()
    result = train_model(
        model,
        splits,
        TrainConfig(scheme="layerwise", epochs=2, batch_size=32, lr=2e-2),
        progress=False,
        threads=1,
    )
    assert result.phases == ["stage0", "stage1", "stage2"] and len(result.history) == 6
    assert len(result.test_accuracy) == 3 and result.test_accuracy[2] > 0.3
    assert not model.training


# ----------------------------------------------------------------------------- distillation
def test_distillation_loss_gradient_is_the_softened_difference():
    torch.manual_seed(0)
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 4)
    y = torch.randint(0, 4, (5,))
    distillation_loss(s, t, y, temperature=3.0, alpha=1.0).backward()
    expected = 3.0 * (F.softmax(s.detach() / 3, 1) - F.softmax(t / 3, 1)) / 5
    assert torch.allclose(s.grad, expected, atol=1e-6)
    # alpha = 0 is plain cross-entropy, whatever the teacher says
    assert torch.allclose(distillation_loss(s, t, y, 3.0, 0.0), F.cross_entropy(s, y))
    assert torch.allclose(
        distillation_loss(s, torch.randn(5, 4), y, 3.0, 0.0), F.cross_entropy(s, y)
    )


def test_student_phase_uses_the_teachers_outputs(splits):
    model = _chain()
    cfg = TrainConfig(scheme="distill", temperature=2.0, alpha=0.7, **FAST)
    teacher_phase, student_phase = get_scheme("distill").phases(model, cfg)
    assert teacher_phase.name == "teacher" and student_phase.name == "students"
    model.eval()
    x, y = next(iterate_batches(splits.train, 16))
    loss, outs = student_phase.loss(model, x, y)
    with torch.no_grad():
        all_outs = model.forward_all(x)
    expected = sum(distillation_loss(all_outs[i], all_outs[2], y, 2.0, 0.7) for i in (0, 1))
    assert sorted(outs) == [0, 1] and torch.allclose(loss, expected, atol=1e-6)
    with torch.no_grad():  # a different teacher (final exit) gives a different student loss
        model.exits[2][1].weight.mul_(-3.0)
    changed, _ = student_phase.loss(model, x, y)
    assert not torch.allclose(changed, loss)


def test_distill_keeps_the_teacher_frozen_while_students_learn(splits):
    model = _chain()
    cfg = TrainConfig(scheme="distill", **FAST)
    teacher_phase, student_phase = get_scheme("distill").phases(model, cfg)
    gen = torch.Generator().manual_seed(0)
    run_phase(model, splits, cfg, teacher_phase, generator=gen, progress=False)
    teacher = [_state(m) for m in (*model.stages, model.exits[2])]
    students = [_state(model.exits[i]) for i in (0, 1)]
    run_phase(model, splits, cfg, student_phase, generator=gen, progress=False)
    assert all(_same(_state(m), s) for m, s in zip((*model.stages, model.exits[2]), teacher))
    assert not any(_same(_state(model.exits[i]), students[i]) for i in (0, 1))


def test_distill_with_trainable_backbone_uses_a_frozen_copy_of_the_teacher(splits):
    model = _chain()
    cfg = TrainConfig(scheme="distill", freeze_backbone=False, **FAST)
    teacher_phase, student_phase = get_scheme("distill").phases(model, cfg)
    gen = torch.Generator().manual_seed(0)
    run_phase(model, splits, cfg, teacher_phase, generator=gen, progress=False)
    stage0 = _state(model.stages[0])
    run_phase(model, splits, cfg, student_phase, generator=gen, progress=False)
    assert not _same(_state(model.stages[0]), stage0)


# ----------------------------------------------------------------------------- cascade
def test_cascade_members_train_on_their_own_and_distil_from_the_largest(splits):
    model = create_seeded_model("cascade", {"width": 4}, 10, splits.input_shape, 0)
    plain = get_scheme("cascade").phases(model, TrainConfig(scheme="cascade", **FAST))
    assert [p.name for p in plain] == ["member0", "member1", "member2"]
    cfg = TrainConfig(scheme="cascade", cascade_distill=True, alpha=1.0, **FAST)
    phases = get_scheme("cascade").phases(model, cfg)
    assert [p.name for p in phases] == [
        "member2",
        "member0",
        "member1",
    ]  # the largest member teaches
    gen = torch.Generator().manual_seed(0)
    run_phase(model, splits, cfg, phases[0], generator=gen, progress=False)
    big = _state(model.stages[2])
    x, y = next(iterate_batches(splits.train, 16))
    model.eval()
    loss, _ = phases[1].loss(model, x, y)
    with torch.no_grad():
        outs = model.forward_all(x)
    assert torch.allclose(
        loss, distillation_loss(outs[0], outs[2], y, cfg.temperature, 1.0), atol=1e-6
    )
    run_phase(model, splits, cfg, phases[1], generator=gen, progress=False)
    assert _same(_state(model.stages[2]), big)


# ----------------------------------------------------------------------------- the loop
def test_training_is_deterministic_for_a_seed(splits):
    cfg = TrainConfig(scheme="joint", epochs=1, batch_size=32, lr=1e-2, seed=5)
    runs = []
    for _ in range(2):
        model = _chain(seed=1)
        result = train_model(model, splits, cfg, progress=False, threads=1)
        runs.append((_state(model), result))
    assert _same(runs[0][0], runs[1][0])
    assert runs[0][1].history[0].train_loss == runs[1][1].history[0].train_loss
    other = _chain(seed=1)
    train_model(other, splits, cfg.replace(seed=6), progress=False, threads=1)
    assert not _same(_state(other), runs[0][0])


def test_joint_training_learns_and_reports_every_exit(splits):
    model = _chain()
    result = train_model(
        model, splits, TrainConfig(epochs=3, batch_size=32, lr=2e-2), progress=False, threads=1
    )
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert len(result.val_accuracy) == len(result.test_accuracy) == 3
    assert result.test_accuracy[2] > 0.3  # chance is 0.1
    assert result.complete


def test_interrupt_keeps_the_last_complete_epochs_checkpoint(splits, tmp_path):
    model = _chain()
    calls = {"n": 0}
    forward_all = model.forward_all

    def interrupted(x):
        calls["n"] += 1
        if calls["n"] > 12 and model.training:  # during the second epoch
            raise KeyboardInterrupt
        return forward_all(x)

    model.forward_all = interrupted  # type: ignore[method-assign]
    path = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train_model(
            model,
            splits,
            TrainConfig(epochs=3, batch_size=32),
            progress=False,
            checkpoint_path=path,
        )
    _, info = read_checkpoint(path)
    assert not info.complete and len(info.result.history) == 1 and info.result.history[0].epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary files left behind

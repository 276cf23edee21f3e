"""The training schemes, chosen by name: joint, layer-wise, knowledge distillation, cascade.

A scheme turns a model and a :class:`TrainConfig` into a list of
:class:`~eebench.training.loop.Phase`; the loop runs them. Which modules a
phase trains and which it freezes is the whole difference between schemes:

* ``joint``: one phase, every stage and exit, ``L = L(final) + sum_i w_i L(exit_i)``.
* ``layerwise``: phase ``i`` trains stage ``i`` with exit ``i``; stages and
  exits before it are frozen (weights and BatchNorm statistics), later ones
  are not run.
* ``distill``: the backbone with its final exit first (the teacher), then the
  early exits as students on the teacher's softened outputs (KL at
  temperature T, weight alpha, plus cross-entropy); the backbone stays frozen
  in the second phase unless ``freeze_backbone`` is off.
* ``cascade``: each member of a cascade on its own, optionally distilled from
  the largest member (``cascade_distill``).
* ``heads``: only the early exits, distilled from the final output of the
  backbone, which stays frozen (a pretrained network with exits attached).
* ``imta``: IMTA (Li et al., ICCV 2019) without inline subnetwork
  collaboration: joint training with gradient equilibrium, then the early
  exits fine-tuned by one-for-all distillation from the frozen final exit.
* ``none``: no training at all; the weights come from the model's checkpoint.

Cascade members share no parameters, so only ``cascade`` applies to them, and
``cascade`` applies to nothing else.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eebench.errors import ConfigError
from eebench.models import MultiExitModel
from eebench.registry import Registry
from eebench.training.config import TrainConfig
from eebench.training.imta import forward_all_equilibrium
from eebench.training.loop import Phase
from eebench.training.losses import (
    distillation_loss,
    early_exit_weights,
    joint_loss,
    one_for_all_loss,
)


class Scheme:
    """A way to train a multi-exit model: a check that it applies, and its phases."""

    summary: ClassVar[str] = ""
    cascades_only: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, model: MultiExitModel) -> None:
        """Raise ConfigError when this scheme does not apply to the model's family."""
        cascade = is_cascade(model)
        name = model.metadata.name
        if self.cascades_only and not cascade:
            raise ConfigError(
                f"'{self.name}' trains the independent members of a cascade; model '{name}' "
                f"(family '{model.family}') shares a backbone between its exits: use scheme 'joint', "
                "'layerwise' or 'distill'",
                field="scheme",
            )
        if not self.cascades_only and cascade:
            raise ConfigError(
                f"'{self.name}' does not apply to cascade '{name}': its members share no "
                "parameters, so there is no backbone to train jointly, layer by layer or as a teacher. "
                "Use scheme 'cascade' (with cascade_distill=true to distil from the largest member)",
                field="scheme",
            )
        if not self.cascades_only and list(model.named_parameters(recurse=False)):
            owned = [n for n, _ in model.named_parameters(recurse=False)]
            raise ConfigError(
                f"model '{name}' holds parameters {owned} outside its stages and exits; "
                f"scheme '{self.name}' cannot assign them to a stage",
                field="scheme",
            )

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        raise NotImplementedError


SCHEMES: Registry[type[Scheme]] = Registry("scheme")


def get_scheme(name: str) -> Scheme:
    """An instance of the scheme registered as ``name``."""
    return SCHEMES.get(name)(name)


def is_cascade(model: MultiExitModel) -> bool:
    return model.family == "cascade"


def stage_groups(model: MultiExitModel) -> list[list[nn.Module]]:
    """The modules of each stage; modules outside ``stages``/``exits`` belong to stage 0."""
    extras = [m for m in model.children() if m is not model.stages and m is not model.exits]
    return [[stage, *(extras if i == 0 else [])] for i, stage in enumerate(model.stages)]


def _ce(logits: Tensor, labels: Tensor, config: TrainConfig) -> Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)


@SCHEMES.register("joint")
class JointScheme(Scheme):
    summary = "all stages and exits at once: L = L(final) + sum_i w_i L(exit_i)"

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        weights = early_exit_weights(config.exit_weights, model.num_exits)

        def loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
            outs = m.forward_all(x)
            return joint_loss(outs, y, weights, config.label_smoothing), dict(enumerate(outs))

        return [Phase("joint", config.epochs, [model], loss)]


@SCHEMES.register("layerwise")
class LayerwiseScheme(Scheme):
    summary = "stage by stage: stage i with its exit, earlier stages frozen"

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        groups = stage_groups(model)
        phases = []
        for i in range(model.num_stages):

            def loss(
                m: MultiExitModel, x: Tensor, y: Tensor, i: int = i
            ) -> tuple[Tensor, dict[int, Tensor]]:
                with torch.no_grad():
                    state = x
                    for j in range(i):
                        state = m.forward_stage(j, state)
                out = m.forward_exit(i, m.forward_stage(i, state))
                return _ce(out, y, config), {i: out}

            frozen = [mod for j in range(i) for mod in (*groups[j], model.exits[j])]
            phases.append(
                Phase(f"stage{i}", config.epochs, [*groups[i], model.exits[i]], loss, frozen)
            )
        return phases


@SCHEMES.register("distill")
class DistillScheme(Scheme):
    summary = "backbone + final exit (teacher) first, then the early exits distilled from it"

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        last = model.num_exits - 1
        backbone = [mod for group in stage_groups(model) for mod in group]
        students = [model.exits[i] for i in range(last)]

        def teacher_loss(
            m: MultiExitModel, x: Tensor, y: Tensor
        ) -> tuple[Tensor, dict[int, Tensor]]:
            out = m.forward_until(x, last)
            return _ce(out, y, config), {last: out}

        phases = [
            Phase(
                "teacher",
                config.teacher_phase_epochs,
                [*backbone, model.exits[last]],
                teacher_loss,
                students,
            )
        ]
        if not students:
            return phases
        if config.freeze_backbone:
            phases.append(
                Phase(
                    "students",
                    config.epochs,
                    students,
                    self._frozen_loss(config, last),
                    [*backbone, model.exits[last]],
                )
            )
        else:
            holder: dict[str, MultiExitModel] = {}

            def snapshot() -> None:
                teacher = copy.deepcopy(model).eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)
                holder["teacher"] = teacher

            phases.append(
                Phase(
                    "students",
                    config.epochs,
                    [model],
                    self._free_loss(config, last, holder),
                    start=snapshot,
                )
            )
        return phases

    @staticmethod
    def _frozen_loss(config: TrainConfig, last: int):
        """Students on a frozen backbone: one backbone pass gives both their input and the teacher."""

        def loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
            with torch.no_grad():
                states, state = [], x
                for i in range(m.num_stages):
                    state = m.forward_stage(i, state)
                    states.append(state)
                teacher = m.forward_exit(last, state)
            outs = {i: m.forward_exit(i, states[i]) for i in range(last)}
            total = sum(
                distillation_loss(
                    o, teacher, y, config.temperature, config.alpha, config.label_smoothing
                )
                for o in outs.values()
            )
            return total, outs

        return loss

    @staticmethod
    def _free_loss(config: TrainConfig, last: int, holder: dict[str, MultiExitModel]):
        """Students and backbone together against a frozen copy of the phase-1 teacher; the
        final exit keeps its cross-entropy so the backbone stays a good classifier."""

        def loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
            with torch.no_grad():
                teacher = holder["teacher"].forward_until(x, last)
            outs = m.forward_all(x)
            total = _ce(outs[last], y, config)
            for o in outs[:last]:
                total = total + distillation_loss(
                    o, teacher, y, config.temperature, config.alpha, config.label_smoothing
                )
            return total, dict(enumerate(outs))

        return loss


@SCHEMES.register("cascade")
class CascadeScheme(Scheme):
    summary = "each cascade member on its own (optionally distilled from the largest member)"
    cascades_only = True

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        def member_loss(i: int, teacher_index: int | None):
            def loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
                out = m.forward_exit(i, m.forward_stage(i, x))
                if teacher_index is None:
                    return _ce(out, y, config), {i: out}
                with torch.no_grad():
                    teacher = m.forward_exit(teacher_index, m.forward_stage(teacher_index, x))
                kd = distillation_loss(
                    out, teacher, y, config.temperature, config.alpha, config.label_smoothing
                )
                return kd, {i: out}

            return loss

        def member(i: int) -> list[nn.Module]:
            return [model.stages[i], model.exits[i]]

        if not config.cascade_distill or model.num_exits == 1:
            return [
                Phase(f"member{i}", config.epochs, member(i), member_loss(i, None))
                for i in range(model.num_exits)
            ]
        sizes = [
            sum(p.numel() for mod in member(i) for p in mod.parameters())
            for i in range(model.num_exits)
        ]
        t = max(range(model.num_exits), key=lambda i: (sizes[i], i))
        phases = [Phase(f"member{t}", config.teacher_phase_epochs, member(t), member_loss(t, None))]
        for i in range(model.num_exits):
            if i != t:
                phases.append(
                    Phase(f"member{i}", config.epochs, member(i), member_loss(i, t), member(t))
                )
        return phases


@SCHEMES.register("heads")
class HeadsScheme(Scheme):
    summary = "early exits only, distilled from the frozen backbone's final output"

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        last = model.num_exits - 1
        students = [model.exits[i] for i in range(last)]
        if not students:
            return []
        backbone = [mod for group in stage_groups(model) for mod in group]
        return [
            Phase(
                "heads",
                config.epochs,
                students,
                DistillScheme._frozen_loss(config, last),
                [*backbone, model.exits[last]],
            )
        ]


@SCHEMES.register("imta")
class ImtaScheme(Scheme):
    """IMTA (Li et al., *Improved Techniques for Training Adaptive Deep Networks*, ICCV 2019).

    Two phases, as in the paper's public code (kalviny/IMTA):

    1. ``ge`` (``teacher_epochs``, default ``epochs``): every stage and exit
       with the joint loss (``exit_weights``, uniform as in the paper) and
       *gradient equilibrium*: stage ``i`` of ``n`` receives the mean, not the
       sum, of the gradients of exits ``i .. n-1``
       (:mod:`eebench.training.imta`).
    2. ``ofa`` (``epochs``): *one-for-all knowledge distillation*: the early
       exits learn from the final exit's softened outputs (temperature ``T``,
       weight ``alpha``, plus ``(1 - alpha)`` cross-entropy) while the
       backbone and the final exit stay frozen, as the public code freezes
       its GE-trained network in this step.

    Left out: *inline subnetwork collaboration* (exit ``i`` also reads a
    projection of exit ``i - 1``'s prediction). It adds a connection between
    heads, so exit ``i``'s logits would no longer be a function of stage
    ``i``'s state alone, which the multi-exit contract (and with it the
    per-head cost counting, export and the true early-exit executor) relies
    on. Simplified: the public code trains fresh linear classifiers in step 2
    and rescales only MSDNet's coarsest scale; here the phase-1 exits are
    fine-tuned and every tensor of a stage's state is rescaled.
    """

    summary = (
        "IMTA without inline collaboration: joint with gradient equilibrium, then "
        "one-for-all distillation of the early exits from the frozen final exit"
    )

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        weights = early_exit_weights(config.exit_weights, model.num_exits)
        last = model.num_exits - 1

        def ge_loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
            outs = forward_all_equilibrium(m, x)
            return joint_loss(outs, y, weights, config.label_smoothing), dict(enumerate(outs))

        phases = [Phase("ge", config.teacher_phase_epochs, [model], ge_loss)]
        students = [model.exits[i] for i in range(last)]
        if not students:
            return phases

        def ofa_loss(m: MultiExitModel, x: Tensor, y: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
            with torch.no_grad():
                states, state = [], x
                for i in range(m.num_stages):
                    state = m.forward_stage(i, state)
                    states.append(state)
                final = m.forward_exit(last, state)
            outs = [m.forward_exit(i, states[i]) for i in range(last)]
            total = one_for_all_loss(
                [*outs, final], y, config.temperature, config.alpha, config.label_smoothing
            )
            return total, dict(enumerate(outs))

        backbone = [mod for group in stage_groups(model) for mod in group]
        phases.append(
            Phase("ofa", config.epochs, students, ofa_loss, [*backbone, model.exits[last]])
        )
        return phases


@SCHEMES.register("none")
class NoTrainingScheme(Scheme):
    summary = "no training: the weights come from the model's checkpoint (a pretrained network)"

    def check(self, model: MultiExitModel) -> None:
        """Applies to every family: nothing is trained."""

    def phases(self, model: MultiExitModel, config: TrainConfig) -> list[Phase]:
        return []

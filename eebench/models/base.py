"""The multi-exit model API shared by every family.

A multi-exit model is an ordered sequence of *stages* and *exits*. Stage ``i``
maps a *state* to the next state; exit ``i`` maps the state returned by stage
``i`` to logits. Everything downstream (cost counting, ONNX export, the true
early-exit executor, exit recording) works on this decomposition only, never
on a data-dependent forward, so each piece can be traced, counted, exported
and timed on its own static path.

A state is a tensor or a tuple of tensors:

* intermediate-classifier models pass a single feature map;
* multi-scale networks pass one feature map per scale (a tuple);
* cascades pass ``(x, features_i)``: the raw input travels on unchanged so
  that member ``i + 1`` starts from scratch, with no feature reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from eebench.errors import EEBenchError

State = Tensor | tuple[Tensor, ...]


class ModelConfigError(EEBenchError, ValueError):
    """An invalid model configuration: names the field, what was expected and what was given."""

    def __init__(self, model: str, field_name: str, expected: str, given: Any) -> None:
        self.model = model
        self.field_name = field_name
        self.expected = expected
        self.given = given
        super().__init__(
            f"{model}: invalid config field '{field_name}': expected {expected}, got {given!r}"
        )


class InputShapeError(ModelConfigError):
    """The architecture cannot run on the requested input shape (e.g. too small to downsample)."""


@dataclass(frozen=True)
class ExitInfo:
    """What a model declares about one exit; a registry-wide test checks it against a forward.

    ``stage`` is the stage whose output the exit reads. ``features`` is the
    channel (or feature) count of the tensor the head reads, ``feature_shape``
    its per-sample shape. ``position`` is the cumulative depth of the exit as
    a fraction of the backbone (or of the cascade), in (0, 1].
    """

    index: int
    stage: int
    features: int
    feature_shape: tuple[int, ...]
    position: float
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelMetadata:
    """Identity of a built model: enough to rebuild it through the registry."""

    name: str
    family: str
    num_classes: int
    input_shape: tuple[int, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def as_tuple(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors (the form used for tracing and export)."""
    return state if isinstance(state, tuple) else (state,)


def from_tuple(tensors: Sequence[Tensor]) -> State:
    """Inverse of :func:`as_tuple`: a single tensor stays a tensor."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


class MultiExitModel(nn.Module):
    """Base class of every early-exit network in eebench.

    Subclasses set ``family`` and fill ``self.stages`` and ``self.exits`` (two
    ``nn.ModuleList`` of equal length) in ``__init__``; stage ``i`` is called
    as ``stages[i](state)`` and exit ``i`` as ``exits[i](state)``. A subclass
    whose stages need a different calling convention overrides
    :meth:`forward_stage` / :meth:`forward_exit`.

    ``exit_info`` is computed once by a forward on a zero input of the
    declared shape, so the declaration cannot drift from the code; subclasses
    may override :meth:`_exit_positions` to declare depth positions.
    """

    family: ClassVar[str] = "unknown"

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ModelConfigError(
                type(self).__name__, "num_classes", "an integer >= 2", num_classes
            )
        if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
            raise ModelConfigError(
                type(self).__name__,
                "input_shape",
                "(channels, height, width), all positive",
                tuple(input_shape),
            )
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.stages = nn.ModuleList()
        self.exits = nn.ModuleList()
        self._metadata: ModelMetadata | None = None
        self._exit_info: list[ExitInfo] | None = None

    # ----------------------------------------------------------------- structure
    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward_stage(self, i: int, state: State) -> State:
        """Run stage ``i``. For stage 0 the state is the input batch."""
        return self.stages[i](state)

    def forward_exit(self, i: int, state: State) -> Tensor:
        """Logits of exit ``i`` from the state returned by stage ``i``."""
        return self.exits[i](state)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Every exit's logits in one pass (each stage runs once): for recording."""
        outs: list[Tensor] = []
        state: State = x
        for i in range(self.num_stages):
            state = self.forward_stage(i, state)
            outs.append(self.forward_exit(i, state))
        return outs

    def forward(self, x: Tensor) -> list[Tensor]:  # noqa: D102 - same as forward_all
        return self.forward_all(x)

    def forward_until(self, x: Tensor, exit_index: int) -> Tensor:
        """Logits of one exit, computing only the stages it needs (and no other head)."""
        state: State = x
        for i in range(exit_index + 1):
            state = self.forward_stage(i, state)
        return self.forward_exit(exit_index, state)

    # ----------------------------------------------------------------- metadata
    def set_metadata(self, name: str, config: dict[str, Any]) -> None:
        self._metadata = ModelMetadata(
            name=name,
            family=self.family,
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            config=dict(config),
        )

    @property
    def metadata(self) -> ModelMetadata:
        if self._metadata is None:
            self.set_metadata(type(self).__name__, {})
        assert self._metadata is not None
        return self._metadata

    def _exit_positions(self) -> list[float]:
        """Cumulative depth of each exit as a fraction of the whole; default: by parameters."""
        counts = [sum(p.numel() for p in s.parameters()) for s in self.stages]
        total = max(sum(counts), 1)
        out, acc = [], 0
        for c in counts:
            acc += c
            out.append(acc / total)
        return out

    @property
    def exit_info(self) -> list[ExitInfo]:
        if self._exit_info is None:
            self._exit_info = self._declare_exits()
        return self._exit_info

    def _exit_read_tensor(self, i: int, state: State) -> Tensor:
        """The tensor exit ``i`` reads from the state (the last element of a tuple state)."""
        return as_tuple(state)[-1]

    @torch.no_grad()
    def _declare_exits(self) -> list[ExitInfo]:
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, *self.input_shape)
            state: State = x
            info = []
            positions = self._exit_positions()
            for i in range(self.num_stages):
                state = self.forward_stage(i, state)
                t = self._exit_read_tensor(i, state)
                info.append(
                    ExitInfo(
                        index=i,
                        stage=i,
                        features=int(t.shape[1]),
                        feature_shape=tuple(int(s) for s in t.shape[1:]),
                        position=float(positions[i]),
                        name=f"exit{i}",
                    )
                )
            return info
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------- static paths
    def stage_module(self, i: int) -> nn.Module:
        """Stage ``i`` as a module taking and returning flat tensors: for tracing and export."""
        return _StagePath(self, i)

    def exit_module(self, i: int) -> nn.Module:
        """Exit head ``i`` as a module taking the flat state tensors and returning logits."""
        return _ExitPath(self, i)

    @torch.no_grad()
    def example_states(self, batch_size: int = 1) -> list[tuple[Tensor, ...]]:
        """The flat input of every stage for a zero batch: element ``i`` feeds stage ``i``.

        Element ``num_stages`` is the output of the last stage.
        """
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(batch_size, *self.input_shape)
            states = [as_tuple(x)]
            state: State = x
            for i in range(self.num_stages):
                state = self.forward_stage(i, state)
                states.append(as_tuple(state))
            return states
        finally:
            self.train(was_training)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (metadata, exits, parameter count)."""
        return {
            **self.metadata.to_dict(),
            "num_exits": self.num_exits,
            "params": sum(p.numel() for p in self.parameters()),
            "exits": [e.to_dict() for e in self.exit_info],
        }


class _StagePath(nn.Module):
    """Stage ``i`` of a model with a flat tuple-of-tensors signature."""

    def __init__(self, model: MultiExitModel, i: int) -> None:
        super().__init__()
        self.model = model
        self.i = i

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        return as_tuple(self.model.forward_stage(self.i, from_tuple(tensors)))


class _ExitPath(nn.Module):
    """Exit head ``i`` of a model with a flat tuple-of-tensors signature."""

    def __init__(self, model: MultiExitModel, i: int) -> None:
        super().__init__()
        self.model = model
        self.i = i

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model.forward_exit(self.i, from_tuple(tensors))


def check_positive(model: str, **fields: Any) -> None:
    """Raise ModelConfigError for the first non-positive integer field."""
    for name, value in fields.items():
        if isinstance(value, (list, tuple)):
            bad = [v for v in value if not isinstance(v, int) or v <= 0]
            if bad or not value:
                raise ModelConfigError(model, name, "a non-empty list of positive integers", value)
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelConfigError(model, name, "a positive integer", value)

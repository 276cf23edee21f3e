"""The training configuration: one validated, frozen, JSON round-trippable object.

It is part of the checkpoint cache key, so every field here changes the
trained weights; things that do not (progress bars, output paths) stay out.
``epochs`` counts epochs *per phase*: per stage for layer-wise training, per
member for cascades, per phase (teacher, students) for distillation and IMTA.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eebench.errors import ConfigError


class TrainConfig(BaseModel):
    """How to train a multi-exit model (scheme, optimiser, schedule, losses, seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: str = "joint"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = Field(
        0, ge=0, description="epochs between lr drops (step schedule); 0 = a third of the phase"
    )
    gamma: float = Field(0.1, gt=0, le=1)
    seed: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # joint training: L = L(final) + sum_i w_i L(exit_i) over the early exits
    exit_weights: Literal["uniform", "linear"] | list[float] = "uniform"
    # knowledge distillation (schemes distill and imta; cascades with cascade_distill); for imta,
    # teacher_epochs counts its gradient-equilibrium phase and epochs its distillation phase
    temperature: float = Field(3.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    freeze_backbone: bool = True
    teacher_epochs: int | None = Field(None, ge=1)
    cascade_distill: bool = False

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        from eebench.training.schemes import SCHEMES

        if value not in SCHEMES:
            close = difflib.get_close_matches(value, SCHEMES.names(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown scheme '{value}'{hint}; known: {', '.join(SCHEMES.names())}")
        return value

    @field_validator("exit_weights")
    @classmethod
    def _non_negative_weights(cls, value: Any) -> Any:
        if isinstance(value, list) and any(w < 0 for w in value):
            raise ValueError(f"weights must be non-negative, got {value}")
        return value

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> TrainConfig:
        """Validate a mapping; errors name the field, what was expected and the nearest valid key."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise _config_error(err, source) from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"not valid JSON: {err}", source=source) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object of training options", source=source)
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self) -> str:
        """A stable hash of every field: part of the checkpoint cache key."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    # ------------------------------------------------------------------ derived
    @property
    def teacher_phase_epochs(self) -> int:
        return self.teacher_epochs or self.epochs


def _config_error(err: ValidationError, source: str | None) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        key = str(first["loc"][0])
        close = difflib.get_close_matches(key, list(TrainConfig.model_fields), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return ConfigError(
            f"unknown training option.{hint} Known: {', '.join(TrainConfig.model_fields)}",
            source,
            key,
        )
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{message} (got {first.get('input')!r})", source, loc)

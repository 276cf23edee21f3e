"""The suite file: a declarative benchmark, validated before anything runs.

A suite names the dataset and split seed, the models (registry name, config,
training recipe or a checkpoint), the policies with their threshold grids,
the calibration targets, the backends and hardware profiles, and the
measurement settings. Unknown keys and wrong types are refused with the file,
the field path and (for keys and registered names) the nearest valid name;
names are checked against the registries in :mod:`eebench.suites.names`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from eebench.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FallbackDatasetSpec(_Strict):
    name: str = "digits"
    options: dict[str, Any] = Field(default_factory=dict)


class DatasetSpec(_Strict):
    """The dataset and split seed. ``fallback`` is used (and recorded in the run) when the dataset
    is not available here, e.g. CIFAR-10 without a local copy."""

    name: str = "digits"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)
    fallback: FallbackDatasetSpec | None = None


class WeightsSpec(_Strict):
    """A user's plain state_dict file: for the whole ``model`` or only its ``backbone`` (a model
    built with ``eebench.attach_exits``). Relative paths are taken from the suite file's folder."""

    model: str | None = None
    backbone: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WeightsSpec:
        if (self.model is None) == (self.backbone is None):
            raise ValueError(
                "give exactly one of 'model' (the whole model's state_dict) or 'backbone' (the "
                "backbone's state_dict, for exits attached with eebench.attach_exits)"
            )
        return self

    @property
    def part(self) -> str:
        return "model" if self.model is not None else "backbone"

    @property
    def path(self) -> str:
        return str(self.model if self.model is not None else self.backbone)


class ModelSpec(_Strict):
    """One model of a suite. ``name`` is a registry name or a factory spec
    (``package.module:function`` or ``path/to/file.py:function``, relative to the suite file).
    ``checkpoint`` is an eebench checkpoint or a plain state_dict file (a path), or
    ``{model: PATH}`` / ``{backbone: PATH}``; ``training: none`` uses its weights as they are,
    ``training: heads`` trains only the early exits on the frozen backbone."""

    name: str
    id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    # passed to eebench.training.TrainConfig, which checks its keys (scheme, epochs, lr, ...)
    training: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | WeightsSpec | None = None

    @property
    def label(self) -> str:
        return self.id or self.name

    @field_validator("training", mode="before")
    @classmethod
    def _scheme_shorthand(cls, v: Any) -> Any:
        """``training: none`` / ``training: heads`` are short for ``{scheme: none|heads}``."""
        if isinstance(v, str):
            if v not in ("none", "heads"):
                raise ValueError(
                    f"expected a mapping of training options, 'none' or 'heads', got '{v}'"
                )
            return {"scheme": v}
        return v

    @model_validator(mode="after")
    def _none_needs_weights(self) -> ModelSpec:
        if self.training.get("scheme") == "none" and self.checkpoint is None:
            raise ValueError(
                "training: none uses the weights of 'checkpoint', which is missing: give "
                "checkpoint: PATH (or {model: PATH} / {backbone: PATH}), or train the model"
            )
        return self


class Grid(_Strict):
    """An evenly spaced threshold grid (inclusive of both ends)."""

    start: float = 0.0
    stop: float = 1.0
    num: int = Field(101, ge=1)

    def values(self) -> list[float]:
        if self.num == 1:
            return [self.start]
        step = (self.stop - self.start) / (self.num - 1)
        return [self.start + i * step for i in range(self.num)]


class PolicySpec(_Strict):
    name: str
    confidence: list[str] = Field(default_factory=lambda: ["max_softmax"])
    thresholds: Grid | list[float] = Field(default_factory=Grid)
    options: dict[str, Any] = Field(default_factory=dict)

    def threshold_values(self) -> list[float]:
        return (
            self.thresholds.values() if isinstance(self.thresholds, Grid) else list(self.thresholds)
        )

    @model_validator(mode="after")
    def _patience_counts(self) -> PolicySpec:
        """Patience thresholds count agreeing consecutive exits: whole numbers >= 1."""
        if self.name == "patience":
            bad = [t for t in self.threshold_values() if t < 1 or t != int(t)]
            if bad:
                raise ValueError(
                    f"thresholds: patience thresholds are counts of agreeing consecutive exits "
                    f"and must be whole numbers >= 1, got {bad}"
                )
        return self


class CalibrationSpec(_Strict):
    """Targets chosen on val and reported on test."""

    accuracy_within: list[float] = Field(default_factory=lambda: [0.01])
    budget_fractions: list[float] = Field(
        default_factory=lambda: [0.5],
        description=(
            "average-MAC budgets as fractions of the plain network's MACs (the network without "
            "early exits: every stage and the final head only; a cascade's last member alone), "
            "i.e. of what the final-only baseline costs"
        ),
    )
    exit_distributions: list[list[float]] = Field(default_factory=list)
    rounding: Literal["cumulative", "msdnet"] = Field(
        "cumulative",
        description=(
            "how budgeted-batch and exit-distribution targets become samples per exit: "
            "'cumulative' rounds the cumulative counts; 'msdnet' takes floor(n x p_k) per exit in "
            "float32 as MSDNet's public code does (leftovers to the final exit)"
        ),
    )

    @field_validator("accuracy_within", "budget_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for x in v:
            if not 0 <= x <= 1:
                raise ValueError(f"each value must be in [0, 1], got {x}")
        return v


ENERGY_METER_CHOICES = ("auto", "rapl", "nvml", "jetson", "estimated")


class EnergySpec(_Strict):
    """Energy per stage and head: which meter, and how long its windows are.

    ``auto`` reads the meter of the device the backend runs on (RAPL for CPU
    backends, NVML for CUDA, the INA3221 rails on a Jetson); naming a meter that
    cannot see a backend's device is an error. ``profile`` names a hardware
    profile whose idle and active power estimate the energy where the right
    meter is not readable (``meter: estimated`` always does). Each window lasts
    ``periods_per_window`` meter updates (at least ``min_window_s``); the idle
    baseline and every part get ``idle_windows`` / ``windows`` of them.
    ``measurement.energy: false`` (or ``true``) is short for ``enabled``.
    """

    enabled: bool = True
    meter: str = "auto"
    profile: str | None = None
    periods_per_window: int = Field(10, ge=1)
    min_window_s: float = Field(0.1, ge=0)
    windows: int = Field(5, ge=2)
    idle_windows: int = Field(5, ge=2)
    probe_s: float = Field(0.5, gt=0)

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, v: str) -> str:
        if v not in ENERGY_METER_CHOICES:
            close = difflib.get_close_matches(v, ENERGY_METER_CHOICES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"unknown energy meter '{v}'; {hint}expected one of {ENERGY_METER_CHOICES}"
            )
        return v

    @model_validator(mode="after")
    def _estimate_needs_profile(self) -> EnergySpec:
        if self.meter == "estimated" and not self.profile:
            raise ValueError(
                "meter 'estimated' needs 'profile': the hardware profile whose idle and active "
                "power give the estimate"
            )
        return self


class MeasurementSpec(_Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    threads: list[int] = Field(default_factory=lambda: [1])
    warmup: int = Field(5, ge=0)
    min_repeats: int = Field(20, ge=1)
    min_time_s: float = Field(0.2, ge=0)
    max_time_s: float = Field(5.0, gt=0)
    noisy_cv: float = Field(0.1, gt=0)
    # adaptive stopping: repeat past the minimum until the median's confidence interval is within
    # rel_ci_target of the median (or max_time_s); a part still wider is flagged noisy
    adaptive: bool = True
    rel_ci_target: float = Field(0.02, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    energy: EnergySpec = Field(default_factory=EnergySpec)

    @field_validator("energy", mode="before")
    @classmethod
    def _energy_flag(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x <= 0 for x in v):
            raise ValueError(f"expected a non-empty list of positive integers, got {v}")
        return v

    @model_validator(mode="after")
    def _time_range(self) -> MeasurementSpec:
        if self.min_time_s > self.max_time_s:
            raise ValueError(
                f"min_time_s ({self.min_time_s}) is above max_time_s ({self.max_time_s}); "
                "lower min_time_s or raise max_time_s"
            )
        return self


class ValidationSpec(_Strict):
    """True early-exit runs of the calibrated operating points.

    ``clock`` times both sides of predicted vs measured: ``wall`` is latency as a user sees it;
    ``thread-cpu`` counts only the CPU time of the thread running the loop, which leaves out
    time lost to preemption on a shared, oversubscribed machine and equals latency only for
    single-threaded backends (``measurement.threads: [1]``).
    """

    enabled: bool = True
    samples: int = Field(200, ge=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    repeats: int = Field(3, ge=1)
    clock: Literal["wall", "thread-cpu"] = "wall"


SERVING_SCENARIOS = ("SingleStream", "Server", "Offline")
SERVING_STRATEGIES = ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup", "plain")
"""Kept equal to :data:`eebench.serving.strategies.STRATEGIES` (a test holds them together;
the schema does not import the serving package, which imports torch)."""
SERVING_MODES = ("per-stage", "static", "fused", "compiled")
"""Deployment modes the serving step can run (kept equal to :data:`eebench.serving.modes.MODES`):
one call per stage and exit head, one static all-exits graph, one graph with the exit inside,
each stage and exit head compiled by ``torch.compile``."""


def _serving_name(valid: tuple[str, ...], what: str) -> Any:
    """A list item that must be one of ``valid``: the error names the item's index (pydantic puts
    it in the field path, e.g. ``serving.strategies[1]``) and the nearest valid name."""

    def check(name: str) -> str:
        if name in valid:
            return name
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown serving {what} '{name}'{hint} (known: {', '.join(valid)})")

    return AfterValidator(check)


ServingScenario = Annotated[str, _serving_name(SERVING_SCENARIOS, "scenario")]
ServingStrategy = Annotated[str, _serving_name(SERVING_STRATEGIES, "strategy")]
ServingMode = Annotated[str, _serving_name(SERVING_MODES, "deployment mode")]


class ServingSearchSpec(_Strict):
    """The Server-scenario search for the largest QPS that holds ``latency_bound_ms``: probe
    ``lo_qps``, then ``hi_qps``, then ``steps`` geometric bisections."""

    lo_qps: float = Field(gt=0)
    hi_qps: float = Field(gt=0)
    steps: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ServingSearchSpec:
        if self.lo_qps > self.hi_qps:
            raise ValueError(f"lo_qps ({self.lo_qps}) is above hi_qps ({self.hi_qps}); swap them")
        return self


class ServingSpec(_Strict):
    """Early exit under load (MLCommons LoadGen): scenarios, strategies and their load.

    The operating point served is the first calibrated point of ``policy`` / ``confidence``
    (``calibration`` picks one by name). Server runs at each ``target_qps`` and, with
    ``search``, looks for the largest QPS whose ``percentile`` latency stays within
    ``latency_bound_ms``. ``samples`` test samples form the Query Sample Library.
    LoadGen sizes an Offline test from ``offline_expected_qps``; left out, it is derived from a
    short run of the strategy itself just before each Offline test, so that the test lasts its
    minimum duration (a fixed guess below the real throughput makes LoadGen call it INVALID).
    """

    enabled: bool = True
    scenarios: list[ServingScenario] = Field(default_factory=lambda: ["Server"])
    strategies: list[ServingStrategy] = Field(default_factory=lambda: list(SERVING_STRATEGIES))
    modes: list[ServingMode] = Field(default_factory=lambda: ["per-stage"])
    backends: list[str] | None = None
    target_qps: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)
    search: ServingSearchSpec | None = None
    latency_bound_ms: float | None = Field(None, gt=0)
    percentile: float = Field(0.99, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    timeout_ms: float = Field(1.0, ge=0)
    min_duration_s: float = Field(1.0, gt=0)
    max_duration_s: float = Field(10.0, gt=0)
    min_query_count: int = Field(100, ge=1)
    # None: measured before each Offline test (eebench.serving.offline.calibrate_offline)
    offline_expected_qps: float | None = Field(None, gt=0)
    single_stream_expected_latency_ms: float = Field(0.1, gt=0)
    samples: int = Field(500, ge=1)
    threads: int = Field(1, ge=1)
    policy: str = "threshold"
    confidence: str = "max_softmax"
    calibration: str | None = None

    @field_validator("scenarios", "strategies", "modes")
    @classmethod
    def _not_empty(cls, v: list[str], info: Any) -> list[str]:
        if not v:
            valid = {
                "scenarios": SERVING_SCENARIOS,
                "strategies": SERVING_STRATEGIES,
                "modes": SERVING_MODES,
            }[info.field_name]
            raise ValueError(f"give at least one of {', '.join(valid)}")
        return v

    @model_validator(mode="after")
    def _server_load(self) -> ServingSpec:
        if "Server" in self.scenarios:
            if not self.target_qps and self.search is None:
                raise ValueError(
                    "scenario 'Server' needs its load: give target_qps (a list of QPS > 0) or "
                    "search: {lo_qps, hi_qps, steps}"
                )
            if self.latency_bound_ms is None:
                need = "search" if self.search is not None else "Server"
                raise ValueError(
                    f"latency_bound_ms is missing: the {need} scenario judges each run by its "
                    f"p{self.percentile * 100:g} latency against this bound (milliseconds > 0)"
                )
        if self.min_duration_s > self.max_duration_s:
            raise ValueError(
                f"min_duration_s ({self.min_duration_s}) is above max_duration_s "
                f"({self.max_duration_s})"
            )
        return self


class SuiteSpec(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    models: list[ModelSpec]
    policies: list[PolicySpec] = Field(default_factory=lambda: [PolicySpec(name="threshold")])
    baselines: list[str] = Field(default_factory=lambda: ["oracle", "final-only", "aggregation"])
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    backends: list[str] = Field(default_factory=lambda: ["torch-cpu"])
    measurement: MeasurementSpec = Field(default_factory=MeasurementSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    serving: ServingSpec | None = None
    record_batch_size: int = Field(256, ge=1)
    # small models train fastest on one intra-op thread (more threads mostly wait on each other)
    train_threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _unique_model_ids(self) -> SuiteSpec:
        seen: set[str] = set()
        for m in self.models:
            if m.label in seen:
                raise ValueError(
                    f"model id '{m.label}' appears twice; give each model a distinct 'id'"
                )
            seen.add(m.label)
        if not self.models:
            raise ValueError("a suite needs at least one model")
        if self.validation.clock == "thread-cpu" and self.measurement.threads[:1] != [1]:
            raise ValueError(
                "validation.clock 'thread-cpu' counts one thread's CPU time, which is latency "
                f"only for single-threaded runs; measurement.threads starts with "
                f"{self.measurement.threads[:1]}: use threads: [1] or validation.clock: wall"
            )
        return self


# ---------------------------------------------------------------------- loading
def _is_union_tag(part: Any) -> bool:
    """pydantic adds union member names ('Grid', 'list[float]') to error locations."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            if _is_union_tag(part):
                continue
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_for_path(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (to suggest valid keys)."""
    model: Any = SuiteSpec
    for part in loc[:-1]:
        if isinstance(part, int) or _is_union_tag(part):
            continue
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        nxt = None
        for c in candidates:
            inner = getattr(c, "__args__", ())
            for cc in (c, *inner):
                if isinstance(cc, type) and issubclass(cc, BaseModel):
                    nxt = cc
                    break
            if nxt:
                break
        model = nxt
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def format_validation_error(err: ValidationError, source: str) -> ConfigError:
    lines = []
    errors = err.errors()
    unknown_paths = {
        _field_path(tuple(e["loc"])[:-1]) for e in errors if e["type"] == "extra_forbidden"
    }
    for e in errors:
        loc = tuple(e["loc"])
        path = _field_path(loc)
        if e["type"] != "extra_forbidden" and path in unknown_paths:
            continue  # the other arm of a union failing: the unknown key says it all
        if e["type"] == "extra_forbidden":
            owner = _model_for_path(loc)
            valid = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{path}: unknown key{hint} (valid keys: {', '.join(valid)})")
        elif e["type"] == "missing":
            lines.append(f"{path}: required field is missing")
        elif e["type"] == "value_error" and isinstance(e.get("input"), str):
            # eebench's own checks of one name: the message already quotes it
            lines.append(f"{path}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(
                f"{path}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})"
            )
    first, *rest = lines
    msg = first + ("".join(f"\n  {source}: {x}" for x in rest) if rest else "")
    return ConfigError(msg, source=source)


def parse_suite(data: Any, source: str = "<suite>") -> SuiteSpec:
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}", source=source
        )
    bad = _non_finite(data)
    if bad:
        raise ConfigError(
            f"{', '.join(bad)}: numbers must be finite (no .nan, .inf or -.inf); give a finite "
            "value or leave the field out for its default",
            source=source,
        )
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, source) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _comment_start(line: str) -> int:
    """Index where a YAML comment begins on ``line`` (len(line) when none): a '#' at the start
    or after whitespace, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return len(line)


def expand_env(text: str, source: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in the YAML's content (never in comments, so
    a commented-out reference cannot break a suite): local data paths differ between machines."""

    def sub(m: re.Match[str], line_no: int) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"line {line_no}: environment variable {name} is not set; set it or write "
            f"${{{name}:-default}}",
            source=source,
        )

    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        cut = _comment_start(line)
        if "${" in line[:cut]:
            lines[n] = _ENV_REF.sub(lambda m, n=n: sub(m, n + 1), line[:cut]) + line[cut:]
    return "".join(lines)


def _non_finite(data: Any, path: str = "") -> list[str]:
    """Field paths of every NaN or infinite number (YAML's .nan / .inf) anywhere in a suite."""
    if isinstance(data, float) and not math.isfinite(data):
        return [f"{path or '(top level)'} = {data}"]
    if isinstance(data, dict):
        return [
            p for k, v in data.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))
        ]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def load_suite_file(path: Path) -> SuiteSpec:
    try:
        text = expand_env(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise ConfigError(f"cannot read suite file: {err.strerror}", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not a UTF-8 text file (byte {err.start}: {err.reason}); save the suite as UTF-8 YAML",
            source=str(path),
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"not valid YAML{where}: {getattr(err, 'problem', err)}", source=str(path)
        ) from None
    return parse_suite(data, source=str(path))

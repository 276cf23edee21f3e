"""Per-part timing of a prepared model: each stage and each exit head on its own.

Stage ``i`` is timed on the state stage ``i - 1`` produces for the same
input batch, and exit ``i`` on the state stage ``i`` produces, so each part
sees real activations of the right shape on the backend's own value types.
From these parts the latency of any operating point is predicted: a sample
that leaves at exit ``e`` ran stages ``0..e`` and heads ``0..e``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eebench.errors import ConfigError
from eebench.measure.probe import SpeedProbe, torch_matmul_probe
from eebench.measure.timing import (
    CI_TARGET,
    DEFAULT_CLOCK,
    PROBE_PART,
    Clock,
    ColdStart,
    Measurement,
    MeasurementSpec,
    StoppingRule,
    TimingConfig,
    clock_name,
    median_within_target,
    time_callable,
)

INJECT_DELAY_ENV = "EEBENCH_INJECT_DELAY"
"""Testing hook: ``EEBENCH_INJECT_DELAY=model:stage_index:factor`` makes stage
``stage_index`` of ``model`` (its label, as in the results tables) take ``factor``
times as long in :func:`measure_parts`, by busy-waiting after each call for
``(factor - 1)`` times the call's own duration. It exists to check that
``eebench compare`` detects a known slowdown (benchmarks/compare_acceptance.py);
never set it for real measurements. The wait is host-side: on an asynchronous
device (CUDA) it widens the launch, so use it with CPU backends."""


@dataclass(frozen=True)
class InjectedDelay:
    """A deliberate slowdown of one stage (see :data:`INJECT_DELAY_ENV`)."""

    model: str
    stage: int
    factor: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InjectedDelay | None:
        raw = (os.environ if environ is None else environ).get(INJECT_DELAY_ENV, "").strip()
        if not raw:
            return None
        parts = raw.rsplit(":", 2)
        try:
            model, stage, factor = parts[0], int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ConfigError(
                f"expected MODEL:STAGE_INDEX:FACTOR such as 'sdn-s:1:1.3', got {raw!r}; "
                f"unset it for normal measurements",
                "environment",
                INJECT_DELAY_ENV,
            ) from None
        if not model or stage < 0 or factor < 1.0:
            raise ConfigError(
                f"expected a model label, a stage index >= 0 and a factor >= 1, got {raw!r}",
                "environment",
                INJECT_DELAY_ENV,
            )
        return cls(model, stage, factor)

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` followed by a busy wait that stretches the call to ``factor`` times its length."""
        extra = self.factor - 1.0

        def slowed() -> Any:
            t0 = time.perf_counter_ns()
            out = fn()
            until = t0 + (time.perf_counter_ns() - t0) * (1.0 + extra)
            while time.perf_counter_ns() < until:
                pass
            return out

        return slowed


def spec_for(
    prepared: Any, part: str, index: int | None, batch_size: int, clock: str = "wall", **extra: Any
) -> MeasurementSpec:
    """The description of a measurement on ``prepared`` (its backend, device, threads, ...);
    ``clock`` names what measured it (``wall``, ``thread-cpu``, ``cuda-events``, ...)."""
    d = prepared.describe()
    keep = (
        "graph_optimization_level",
        "allow_spinning",
        "io_binding",
        "session_providers",
        "export_cached",
    )
    return MeasurementSpec(
        model=str(d.get("model", prepared.model_name)),
        part=part,
        index=index,
        backend=str(d["backend"]),
        device=str(d["device"]),
        threads=int(d["threads"]),
        batch_size=int(batch_size),
        provider=d.get("provider"),
        interop_threads=d.get("interop_threads"),
        dtype=str(d.get("dtype", "float32")),
        input_shape=tuple(prepared.input_shape),
        extra={k: d[k] for k in keep if k in d} | extra,
        clock=clock,
        source=str(d.get("source") or f"measured:{d['backend']}"),
    )


@dataclass(frozen=True)
class PartMeasurements:
    """One measurement per stage and per exit head, for one backend and batch size.

    ``probe`` is the machine-speed probe timed in the same rounds (``interleaved``
    context; see :func:`backend_speed_probe`; its ``spec.extra["speed_probe"]`` says what
    it ran): not a part of the model, so not in :attr:`all`.
    """

    stages: tuple[Measurement, ...]
    exits: tuple[Measurement, ...]
    probe: Measurement | None = None

    def stage_ns(self, stat: str = "median") -> np.ndarray:
        return np.array([getattr(m.stats, stat) for m in self.stages])

    def head_ns(self, stat: str = "median") -> np.ndarray:
        return np.array([getattr(m.stats, stat) for m in self.exits])

    def cumulative_ns(self, stat: str = "median") -> np.ndarray:
        """Latency to reach and evaluate exit i: stages 0..i plus heads 0..i."""
        return np.cumsum(self.stage_ns(stat) + self.head_ns(stat))

    def predict(self, exit_indices: Sequence[int] | np.ndarray, stat: str = "median") -> np.ndarray:
        """Predicted per-sample latency (ns) of samples leaving at ``exit_indices``."""
        return predict_latency(exit_indices, self.stage_ns(stat), self.head_ns(stat))

    @property
    def all(self) -> list[Measurement]:
        return [*self.stages, *self.exits]

    @property
    def with_probe(self) -> list[Measurement]:
        """:attr:`all` plus the speed probe when there is one (what the tables record)."""
        return [*self.all, *([self.probe] if self.probe is not None else [])]

    @property
    def noisy(self) -> bool:
        return any(m.noisy for m in self.all)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "stages": [m.to_dict() for m in self.stages],
            "exits": [m.to_dict() for m in self.exits],
        }
        if self.probe is not None:
            d["probe"] = self.probe.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartMeasurements:
        return cls(
            tuple(Measurement.from_dict(m) for m in d["stages"]),
            tuple(Measurement.from_dict(m) for m in d["exits"]),
            Measurement.from_dict(d["probe"]) if d.get("probe") else None,
        )


def predict_latency(
    exit_indices: Sequence[int] | np.ndarray, stage_ns: np.ndarray, head_ns: np.ndarray
) -> np.ndarray:
    """Per sample, the sum of the latencies of the stages and heads it executed."""
    cumulative = np.cumsum(
        np.asarray(stage_ns, dtype=np.float64) + np.asarray(head_ns, dtype=np.float64)
    )
    idx = np.asarray(exit_indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= cumulative.size):
        raise ValueError(
            f"exit indices must lie in [0, {cumulative.size - 1}], got {idx.min()}..{idx.max()}"
        )
    return cumulative[idx]


CONTEXTS = ("interleaved", "isolated", "pipeline")

PASS_CI_TARGET = "pass-ci-target"
"""``stopped_by`` of a part measured in the ``pipeline`` context when the whole pass met the
interval target but the part's own median did not (it is then flagged noisy)."""

BURST_S = 0.005
"""Target length of one burst of consecutive calls of a part in the ``interleaved`` context."""


def backend_speed_probe(prepared: Any, seed: int = 0) -> SpeedProbe:
    """The machine-speed probe run through ``prepared``'s backend (``prepared.speed_probe``;
    ``torch.mm`` on the host for an object that has none).

    Timed in the same rounds as the parts, it measures how fast the machine was while
    they were measured; ``eebench compare`` divides each part's change by the probe's
    change, so a machine that was busier during one run does not pass for a regression.
    Only a probe that runs through the parts' backend slows down the way they do.
    """
    make = getattr(prepared, "speed_probe", None)
    return make(seed) if callable(make) else torch_matmul_probe(seed)


def measure_parts(
    prepared: Any,
    x: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 1,
    config: TimingConfig | None = None,
    clock: Clock = DEFAULT_CLOCK,
    seed: int = 0,
    context: str = "interleaved",
    label: str | None = None,
    probe: bool = True,
) -> PartMeasurements:
    """Time every stage and exit head of ``prepared`` on one batch.

    ``x`` is the host input batch (default: standard-normal noise of the
    model's input shape, seeded, ``batch_size`` rows); ``config`` defaults to
    :class:`TimingConfig`'s defaults. ``label`` is the model's id in a suite
    (matched by the testing hook besides the model's registry name).

    ``context="interleaved"`` (the default) times the parts in rounds: each
    round gives every part one untimed call (its weights back in cache) and a
    burst of consecutive timed calls of about :data:`BURST_S`; rounds go on
    until every part's stopping rule is met (each part's own count, time and
    interval; a part that met its interval target early goes on being sampled, and
    it counts as stopped by ``ci-target`` only while all its samples still meet it,
    so a measurement stopped by its target is never flagged noisy). Every part's
    samples thus span the whole measurement window, so
    a burst of load from another process slows all parts a little instead of
    one part entirely: on a shared machine this is what keeps two runs of the
    same code comparable part by part. With ``probe`` the rounds also time the
    backend's speed probe (:func:`backend_speed_probe`, ``PartMeasurements.probe``). ``context="isolated"`` repeats each part
    on its own until its stopping rule is met, one part after the other.
    ``context="pipeline"`` repeats whole forward passes (stage 0, head 0,
    stage 1, ...) and times each part where it runs, so each sees the cache
    state the parts before it leave, as in a real early-exit run; the stopping
    rule then counts passes (a part whose own median is wider than the target when the
    pass met it says ``pass-ci-target``). The context is recorded with every measurement.

    When the :data:`INJECT_DELAY_ENV` testing hook names this model, that stage
    is slowed down and its measurement's ``extra`` says ``injected_factor``.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got '{context}'")
    config = config or TimingConfig()
    if x is None:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, *prepared.input_shape, generator=g)
    batch = int(x.shape[0])
    with prepared.activated():
        x_native = prepared.to_input(x)
        timer = prepared.interval_timer(clock)
        how = str(getattr(timer, "name", clock_name(clock)))

        model_label = label or spec_for(prepared, "stage", 0, batch, how).model
        names = {model_label, spec_for(prepared, "stage", 0, batch, how).model}
        inject = InjectedDelay.from_env()
        if inject is not None and inject.model not in names:
            inject = None
        if inject is not None and inject.stage >= prepared.num_stages:
            raise ConfigError(
                f"stage {inject.stage} does not exist: {model_label} has stages "
                f"0..{prepared.num_stages - 1}",
                "environment",
                INJECT_DELAY_ENV,
            )

        control = (
            backend_speed_probe(prepared, seed) if probe and context == "interleaved" else None
        )

        def spec(part: str, i: int) -> MeasurementSpec:
            marks: dict[str, Any] = {"context": context}
            if inject is not None and part == "stage" and i == inject.stage:
                marks["injected_factor"] = inject.factor
            if control is not None and part == PROBE_PART:
                marks["speed_probe"] = control.kind
            return spec_for(prepared, part, i, batch, how, **marks)

        def run_stage(i: int, state: Any) -> Any:
            return prepared.run_stage(i, state)

        if inject is not None:
            plain, slowed = run_stage, inject.wrap

            def run_stage(i: int, state: Any) -> Any:
                if i == inject.stage:
                    return slowed(lambda: plain(i, state))()
                return plain(i, state)

        if context == "pipeline":
            return _pipeline(prepared, x_native, config, timer, clock, spec, run_stage)
        states = prepared.stage_inputs(x_native)
        if context == "interleaved":
            return _interleaved(prepared, states, run_stage, config, timer, clock, spec, control)
        stages, exits = [], []
        for i in range(prepared.num_stages):
            s_in, s_out = states[i], states[i + 1]
            stages.append(
                time_callable(
                    lambda i=i, s=s_in: run_stage(i, s),
                    spec("stage", i),
                    config,
                    timer,
                    clock,
                )
            )
            exits.append(
                time_callable(
                    lambda i=i, s=s_out: prepared.run_exit(i, s),
                    spec("exit", i),
                    config,
                    timer,
                    clock,
                )
            )
    return PartMeasurements(tuple(stages), tuple(exits))


def _interleaved(
    prepared: Any,
    states: Sequence[Any],
    run_stage: Callable[[int, Any], Any],
    config: TimingConfig,
    timer: Any,
    clock: Clock,
    spec: Callable[[str, int], MeasurementSpec],
    probe: SpeedProbe | None = None,
) -> PartMeasurements:
    n_parts = prepared.num_stages
    names = [("stage", i) for i in range(n_parts)] + [("exit", i) for i in range(n_parts)]
    calls: list[Callable[[], Any]] = [
        (lambda i=i, st=states[i]: run_stage(i, st)) for i in range(n_parts)
    ] + [(lambda i=i, st=states[i + 1]: prepared.run_exit(i, st)) for i in range(n_parts)]
    if probe is not None:
        names.append((PROBE_PART, 0))
        calls.append(probe.run)
    warm = [[int(timer(fn)) for _ in range(config.warmup)] for fn in calls]
    # burst length per part from its warm-up calls (one extra call when there are none)
    typical = [float(np.median(w)) if w else float(timer(fn)) for w, fn in zip(warm, calls)]
    burst = [int(min(1000, max(1, BURST_S * 1e9 // max(t, 1.0)))) for t in typical]
    samples: list[list[int]] = [[] for _ in calls]
    spent = [0] * len(calls)
    rules = [StoppingRule(config) for _ in calls]
    stopped = [""] * len(calls)
    while True:
        for j, fn in enumerate(calls):
            fn()  # untimed: the parts before it may have evicted its weights
            t0 = clock()
            for _ in range(burst[j]):
                samples[j].append(int(timer(fn)))
            spent[j] += clock() - t0
        for j in range(len(calls)):
            if not stopped[j]:
                stopped[j] = rules[j](samples[j], spent[j])
        if all(stopped):
            # a part that met its interval target in an earlier round kept being sampled
            # while the others caught up: it stops there only if all its samples still meet
            # the target (else its stop reason would say ci-target of a median flagged noisy)
            lapsed = [
                j
                for j, why in enumerate(stopped)
                if why == CI_TARGET and not median_within_target(samples[j], config)
            ]
            if not lapsed:
                break
            for j in lapsed:
                stopped[j] = ""
    out = [
        Measurement(spec(part, i), tuple(samples[j]), config, tuple(warm[j]), stopped[j])
        for j, (part, i) in enumerate(names)
    ]
    control = out[2 * n_parts] if probe is not None else None
    return PartMeasurements(tuple(out[:n_parts]), tuple(out[n_parts : 2 * n_parts]), control)


def _pipeline(
    prepared: Any,
    x_native: Any,
    config: TimingConfig,
    timer: Any,
    clock: Clock,
    spec: Callable[[str, int], MeasurementSpec],
    run_stage: Callable[[int, Any], Any],
) -> PartMeasurements:
    n_parts = prepared.num_stages
    stage_ns: list[list[int]] = [[] for _ in range(n_parts)]
    head_ns: list[list[int]] = [[] for _ in range(n_parts)]

    def one_pass() -> tuple[list[int], list[int]]:
        state = (x_native,)
        out: list[Any] = []
        s_t, h_t = [], []
        for i in range(n_parts):
            s_t.append(int(timer(lambda i=i, st=state: out.append(run_stage(i, st)))))
            state = out.pop()
            h_t.append(int(timer(lambda i=i, st=state: prepared.run_exit(i, st))))
        return s_t, h_t

    warm = [one_pass() for _ in range(config.warmup)]
    # adaptive stopping watches the pass total: every part's median is then known about as
    # well as the pass's (the parts are parts of it); parts still too wide are flagged noisy
    totals: list[int] = []
    stop = StoppingRule(config)
    start = clock()
    while True:
        s_t, h_t = one_pass()
        for i in range(n_parts):
            stage_ns[i].append(s_t[i])
            head_ns[i].append(h_t[i])
        totals.append(sum(s_t) + sum(h_t))
        stopped = stop(totals, clock() - start)
        if stopped:
            break

    def why(samples: list[int]) -> str:
        # the pass met the target; a part says so only when it met it too
        if stopped == CI_TARGET and not median_within_target(samples, config):
            return PASS_CI_TARGET
        return stopped

    stages = tuple(
        Measurement(
            spec("stage", i),
            tuple(stage_ns[i]),
            config,
            tuple(w[0][i] for w in warm),
            why(stage_ns[i]),
        )
        for i in range(n_parts)
    )
    exits = tuple(
        Measurement(
            spec("exit", i),
            tuple(head_ns[i]),
            config,
            tuple(w[1][i] for w in warm),
            why(head_ns[i]),
        )
        for i in range(n_parts)
    )
    return PartMeasurements(stages, exits)


def measure_cold_start(
    backend: Any,
    model: Any,
    batch_size: int = 1,
    threads: int | None = None,
    clock: Clock = DEFAULT_CLOCK,
    **options: Any,
) -> tuple[Any, ColdStart]:
    """Prepare ``model`` on ``backend`` and run one full pass, timing both; returns the
    prepared model and its :class:`ColdStart`."""
    t0 = clock()
    prepared = backend.prepare(model, batch_size=batch_size, threads=threads, **options)
    t1 = clock()
    x = torch.zeros(batch_size, *prepared.input_shape)
    with prepared.activated():
        t2 = clock()
        outs = prepared.run_all(prepared.to_input(x))
        prepared.to_numpy(outs[-1])
        prepared.sync()
        t3 = clock()
        details = prepared.describe()
    return prepared, ColdStart(
        details["backend"], prepared.model_name, int(t1 - t0), int(t3 - t2), details
    )

"""Per-part timing of a prepared model: each stage and each exit head on its own.

Stage ``i`` is timed on the state stage ``i - 1`` produces for the same
input batch, and exit ``i`` on the state stage ``i`` produces, so each part
sees real activations of the right shape on the backend's own value types.
From these parts the latency of any operating point is predicted: a sample
that leaves at exit ``e`` ran stages ``0..e`` and heads ``0..e``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eebench.measure.timing import (
    DEFAULT_CLOCK,
    Clock,
    ColdStart,
    Measurement,
    MeasurementSpec,
    TimingConfig,
    clock_name,
    time_callable,
)


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
    """One measurement per stage and per exit head, for one backend and batch size."""

    stages: tuple[Measurement, ...]
    exits: tuple[Measurement, ...]

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
    def noisy(self) -> bool:
        return any(m.noisy for m in self.all)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [m.to_dict() for m in self.stages],
            "exits": [m.to_dict() for m in self.exits],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartMeasurements:
        return cls(
            tuple(Measurement.from_dict(m) for m in d["stages"]),
            tuple(Measurement.from_dict(m) for m in d["exits"]),
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


CONTEXTS = ("isolated", "pipeline")


def measure_parts(
    prepared: Any,
    x: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 1,
    config: TimingConfig | None = None,
    clock: Clock = DEFAULT_CLOCK,
    seed: int = 0,
    context: str = "isolated",
) -> PartMeasurements:
    """Time every stage and exit head of ``prepared`` on one batch.

    ``x`` is the host input batch (default: standard-normal noise of the
    model's input shape, seeded, ``batch_size`` rows); ``config`` defaults to
    :class:`TimingConfig`'s defaults.

    ``context="isolated"`` repeats each part on its own until the stopping
    rule is met: the cleanest number per part, with caches hot for that part.
    ``context="pipeline"`` repeats whole forward passes (stage 0, head 0,
    stage 1, ...) and times each part where it runs, so each sees the cache
    state the parts before it leave, as in a real early-exit run; the stopping
    rule then counts passes. The context is recorded with every measurement.
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

        def spec(part: str, i: int) -> MeasurementSpec:
            return spec_for(prepared, part, i, batch, how, context=context)

        if context == "pipeline":
            return _pipeline(prepared, x_native, config, timer, clock, spec)
        states = prepared.stage_inputs(x_native)
        stages, exits = [], []
        for i in range(prepared.num_stages):
            s_in, s_out = states[i], states[i + 1]
            stages.append(
                time_callable(
                    lambda i=i, s=s_in: prepared.run_stage(i, s),
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


def _pipeline(
    prepared: Any,
    x_native: Any,
    config: TimingConfig,
    timer: Any,
    clock: Clock,
    spec: Callable[[str, int], MeasurementSpec],
) -> PartMeasurements:
    n_parts = prepared.num_stages
    stage_ns: list[list[int]] = [[] for _ in range(n_parts)]
    head_ns: list[list[int]] = [[] for _ in range(n_parts)]

    def one_pass() -> tuple[list[int], list[int]]:
        state = (x_native,)
        out: list[Any] = []
        s_t, h_t = [], []
        for i in range(n_parts):
            s_t.append(int(timer(lambda i=i, st=state: out.append(prepared.run_stage(i, st)))))
            state = out.pop()
            h_t.append(int(timer(lambda i=i, st=state: prepared.run_exit(i, st))))
        return s_t, h_t

    warm = [one_pass() for _ in range(config.warmup)]
    start = clock()
    passes = 0
    while True:
        s_t, h_t = one_pass()
        for i in range(n_parts):
            stage_ns[i].append(s_t[i])
            head_ns[i].append(h_t[i])
        passes += 1
        elapsed = clock() - start
        if passes >= config.min_runs and elapsed >= config.min_time_s * 1e9:
            stopped = "min-runs-and-time"
            break
        if passes >= config.max_runs:
            stopped = "max-runs"
            break
        if elapsed >= config.max_time_s * 1e9:
            stopped = "max-time"
            break
    stages = tuple(
        Measurement(
            spec("stage", i), tuple(stage_ns[i]), config, tuple(w[0][i] for w in warm), stopped
        )
        for i in range(n_parts)
    )
    exits = tuple(
        Measurement(
            spec("exit", i), tuple(head_ns[i]), config, tuple(w[1][i] for w in warm), stopped
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

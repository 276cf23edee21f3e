"""Latency sampling and statistics: adaptive repetition, raw samples kept, noise flagged.

A :class:`Measurement` is a frozen description of *what* was timed (model,
part, backend, device, threads, batch size) plus the raw samples; every
statistic is computed from the samples, so a stored measurement can always be
re-analysed and two measurements are comparable only when their descriptions
say they are.

The clock is a parameter everywhere (a callable returning nanoseconds,
``time.perf_counter_ns`` by default) so the statistics and the stopping rule
are tested with a seeded fake clock. The device is synchronised by the timer
itself (``sync`` after every call, or CUDA events for the CUDA backends): a
number never measures only the launch of asynchronous work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from eebench.errors import ConfigError

Clock = Callable[[], int]
"""A monotonic clock returning integer nanoseconds."""

DEFAULT_CLOCK: Clock = time.perf_counter_ns

CLOCKS: dict[str, Clock] = {
    "wall": time.perf_counter_ns,
    "thread-cpu": time.thread_time_ns,
}
"""Named clocks. ``wall`` is latency as a user sees it. ``thread-cpu`` counts only the CPU
time of the calling thread: on a shared, oversubscribed machine it excludes time lost to
preemption, and it equals latency only for single-threaded work that runs on the calling
thread (torch with 1 thread, ONNX Runtime with intra_op_num_threads=1)."""


def clock_name(clock: Clock) -> str:
    """The name a clock is recorded under (``custom`` for an injected one)."""
    for name, c in CLOCKS.items():
        if c is clock:
            return name
    return "custom"


class IntervalTimer(Protocol):
    """Times one call of ``fn`` including device synchronisation; returns nanoseconds."""

    def __call__(self, fn: Callable[[], object]) -> int: ...


class HostTimer:
    """Host clock around ``fn(); sync()``: correct for CPU work and for any device whose
    ``sync`` waits for completion."""

    def __init__(
        self, clock: Clock = DEFAULT_CLOCK, sync: Callable[[], None] | None = None
    ) -> None:
        self.clock = clock
        self.sync = sync

    def __call__(self, fn: Callable[[], object]) -> int:
        t0 = self.clock()
        fn()
        if self.sync is not None:
            self.sync()
        return self.clock() - t0


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to repeat a call.

    After ``warmup`` untimed calls, the call is repeated until at least
    ``min_runs`` samples *and* ``min_time_s`` seconds are reached, or until the
    cap ``max_time_s`` (or ``max_runs``) is hit, whichever comes first.
    A measurement whose coefficient of variation exceeds ``noisy_cv`` is
    flagged ``noisy``.
    """

    warmup: int = 5
    min_runs: int = 20
    min_time_s: float = 0.2
    max_time_s: float = 10.0
    max_runs: int = 100_000
    noisy_cv: float = 0.10

    def __post_init__(self) -> None:
        checks = [
            ("warmup", self.warmup >= 0, "an integer >= 0"),
            ("min_runs", self.min_runs >= 1, "an integer >= 1"),
            (
                "max_runs",
                self.max_runs >= self.min_runs,
                f"an integer >= min_runs ({self.min_runs})",
            ),
            ("min_time_s", self.min_time_s >= 0, "a number of seconds >= 0"),
            (
                "max_time_s",
                self.max_time_s >= self.min_time_s,
                f"a number >= min_time_s ({self.min_time_s})",
            ),
            ("noisy_cv", self.noisy_cv > 0, "a positive fraction such as 0.1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"expected {expected}, got {getattr(self, name)!r}", "TimingConfig", name
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimingRun:
    """The raw outcome of :func:`collect_samples`."""

    samples_ns: tuple[int, ...]
    warmup_ns: tuple[int, ...]
    elapsed_ns: int
    stopped_by: str


def collect_samples(
    fn: Callable[[], object],
    config: TimingConfig = TimingConfig(),
    timer: IntervalTimer | None = None,
    clock: Clock = DEFAULT_CLOCK,
) -> TimingRun:
    """Warm up, then time ``fn`` repeatedly under ``config``'s stopping rule.

    ``timer`` times one call (default: :class:`HostTimer` on ``clock`` without
    sync); ``clock`` measures the total elapsed time for the stopping rule.
    """
    timer = timer or HostTimer(clock)
    warm = tuple(int(timer(fn)) for _ in range(config.warmup))
    min_ns = int(config.min_time_s * 1e9)
    max_ns = int(config.max_time_s * 1e9)
    samples: list[int] = []
    start = clock()
    while True:
        samples.append(int(timer(fn)))
        elapsed = clock() - start
        n = len(samples)
        if n >= config.min_runs and elapsed >= min_ns:
            stopped = "min-runs-and-time"
            break
        if n >= config.max_runs:
            stopped = "max-runs"
            break
        if elapsed >= max_ns:
            stopped = "max-time"
            break
    return TimingRun(tuple(samples), warm, int(elapsed), stopped)


@dataclass(frozen=True)
class LatencyStats:
    """Summary statistics of a latency sample, in nanoseconds (``cv`` is a fraction).

    Percentiles use linear interpolation (numpy's default); ``std`` is the
    sample standard deviation (ddof=1) and ``cv = std / mean``.
    """

    n: int
    mean: float
    median: float
    std: float
    min: float
    max: float
    p25: float
    p75: float
    p90: float
    p99: float
    iqr: float
    cv: float

    @classmethod
    def from_samples(cls, samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
        a = np.asarray(samples_ns, dtype=np.float64)
        if a.size == 0:
            raise ValueError("cannot compute latency statistics of an empty sample")
        p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else math.nan
        cv = std / mean if a.size > 1 and mean > 0 else math.nan
        return cls(
            n=int(a.size),
            mean=mean,
            median=float(p50),
            std=std,
            min=float(a.min()),
            max=float(a.max()),
            p25=float(p25),
            p75=float(p75),
            p90=float(p90),
            p99=float(p99),
            iqr=float(p75 - p25),
            cv=cv,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class MeasurementSpec:
    """What was measured, where and how: the frozen description of a :class:`Measurement`.

    ``part`` is ``stage`` or ``exit`` (with ``index``), or a whole-model
    measurement such as ``early-exit``, ``aggregation``, ``backbone``.
    """

    model: str
    part: str
    index: int | None
    backend: str
    device: str
    threads: int
    batch_size: int
    provider: str | None = None
    interop_threads: int | None = None
    dtype: str = "float32"
    input_shape: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    clock: str = "wall"
    source: str = ""
    """The label that travels with every number: ``measured:<backend>`` unless the backend
    says otherwise (a simulated backend reports ``estimated:<profile>``)."""

    def __post_init__(self) -> None:
        if not self.source:
            # a simulated backend's "timings" are a hardware profile's estimate, never a measurement
            prefix = "simulated:"
            label = (
                f"estimated:{self.backend[len(prefix) :]}"
                if self.backend.startswith(prefix)
                else f"measured:{self.backend}"
            )
            object.__setattr__(self, "source", label)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasurementSpec:
        d = dict(d)
        d["input_shape"] = tuple(d.get("input_shape", ()))
        return cls(**d)


_STAT_UNITS = ("mean", "median", "std", "min", "max", "p25", "p75", "p90", "p99", "iqr")


@dataclass(frozen=True)
class Measurement:
    """A frozen description, the raw samples and the statistics computed from them."""

    spec: MeasurementSpec
    samples_ns: tuple[int, ...]
    config: TimingConfig = TimingConfig()
    warmup_ns: tuple[int, ...] = ()
    stopped_by: str = ""

    def __post_init__(self) -> None:
        if not self.samples_ns:
            raise ValueError(f"measurement of {self.spec.part} {self.spec.index} has no samples")

    @cached_property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ns)

    @property
    def noisy(self) -> bool:
        """True when the spread is too large to trust the median (or cannot be judged)."""
        cv = self.stats.cv
        return bool(math.isnan(cv) or cv > self.config.noisy_cv)

    @property
    def median_ns(self) -> float:
        return self.stats.median

    @property
    def mean_ns(self) -> float:
        return self.stats.mean

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.spec.source,
            "spec": self.spec.to_dict(),
            "samples_ns": list(self.samples_ns),
            "warmup_ns": list(self.warmup_ns),
            "stopped_by": self.stopped_by,
            "config": self.config.to_dict(),
            "stats_ns": self.stats.to_dict(),
            "noisy": self.noisy,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """Rebuild from :meth:`to_dict`; the statistics are recomputed from the samples."""
        return cls(
            spec=MeasurementSpec.from_dict(d["spec"]),
            samples_ns=tuple(int(s) for s in d["samples_ns"]),
            config=TimingConfig(**d.get("config", {})),
            warmup_ns=tuple(int(s) for s in d.get("warmup_ns", ())),
            stopped_by=d.get("stopped_by", ""),
        )

    def to_row(self) -> dict[str, Any]:
        """One tidy row: the description's fields, then the statistics in microseconds."""
        spec = self.spec.to_dict()
        extra = spec.pop("extra")
        row: dict[str, Any] = {"source": spec.pop("source"), **spec, **extra}
        row["input_shape"] = "x".join(map(str, self.spec.input_shape))
        s = self.stats
        row["n"] = s.n
        for name in _STAT_UNITS:
            row[f"{name}_us"] = getattr(s, name) / 1e3
        row["cv"] = s.cv
        row["noisy"] = self.noisy
        row["stopped_by"] = self.stopped_by
        return row

    def sample_rows(self) -> list[dict[str, Any]]:
        """One tidy row per raw sample (for distributions and re-analysis)."""
        base = {k: v for k, v in self.to_row().items() if not k.endswith("_us")}
        for k in ("n", "cv", "noisy", "stopped_by"):
            base.pop(k)
        return [{**base, "sample": i, "latency_ns": s} for i, s in enumerate(self.samples_ns)]


def measurements_frame(measurements: Sequence[Measurement], samples: bool = False) -> Any:
    """A pandas DataFrame with one row per measurement (or per raw sample)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for m in measurements:
        rows.extend(m.sample_rows() if samples else [m.to_row()])
    return pd.DataFrame(rows)


def time_callable(
    fn: Callable[[], object],
    spec: MeasurementSpec,
    config: TimingConfig = TimingConfig(),
    timer: IntervalTimer | None = None,
    clock: Clock = DEFAULT_CLOCK,
) -> Measurement:
    """Time ``fn`` under ``config`` and wrap the samples with their description."""
    run = collect_samples(fn, config, timer=timer, clock=clock)
    return Measurement(spec, run.samples_ns, config, run.warmup_ns, run.stopped_by)


@dataclass(frozen=True)
class ColdStart:
    """Time to a first answer, kept apart from the steady state.

    ``prepare_ns`` covers building the backend's runnable form (copy to the
    device, ONNX export or cache load, session creation); ``first_call_ns`` is
    the first full pass through every stage and exit head.
    """

    backend: str
    model: str
    prepare_ns: int
    first_call_ns: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total_ns(self) -> int:
        return self.prepare_ns + self.first_call_ns

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": f"measured:{self.backend}", "total_ns": self.total_ns}

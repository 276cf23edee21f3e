"""Latency sampling and statistics: adaptive repetition, raw samples kept, noise flagged.

Every statistic carries its sample count and a 95% confidence interval
(:mod:`eebench.measure.stats`): order-statistic intervals for the median and the
percentiles, a circular-block bootstrap for the mean. p90 and p99 are reported
only when the sample count supports them (MLPerf LoadGen's rule, see
:func:`~eebench.measure.stats.min_samples_for_percentile`); otherwise they are
NaN with ``p90_supported``/``p99_supported`` False, never a number.

Adaptive stopping (``TimingConfig.adaptive``): after the minimum count and time,
the call is repeated until the median's interval is within
``rel_ci_target`` (2%) of the median, or until ``max_time_s``/``max_runs``;
``stopped_by`` records which. A measurement whose median interval is still
wider than the target is flagged ``noisy``. The interval treats consecutive
samples as independent; real timing samples are positively autocorrelated, so
it is, if anything, too narrow, and the stopping rule stops early rather than
late. ``eebench compare`` does not rely on it: it block-bootstraps the raw
samples.

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
from eebench.measure import stats as _stats

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


PROBE_PART = "probe"
"""``part`` of the machine-speed probe's measurement and table rows (index 0): a fixed
workload run through the parts' backend and timed in the same rounds as a model's parts
(eebench.measure.probe)."""


CI_TARGET = "ci-target"
"""``stopped_by`` of a measurement whose median is known to ``rel_ci_target``."""


def median_within_target(samples: Sequence[int] | np.ndarray, config: TimingConfig) -> bool:
    """True when the median's interval of ``samples`` is defined and its half-width is at
    most ``config.rel_ci_target`` of the median: the test behind both the adaptive stop
    (:data:`CI_TARGET`) and the ``noisy`` flag, so the two never disagree on one sample."""
    ci = _stats.median_ci(samples, config.confidence)
    return bool(ci.defined and ci.rel_half_width <= config.rel_ci_target)


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
    cap ``max_time_s`` (or ``max_runs``) is hit, whichever comes first. With
    ``adaptive=True`` it goes on after the minimum until the median's
    ``confidence`` interval has a half-width of at most ``rel_ci_target`` of the
    median (checked every ~10% more samples), still capped by ``max_time_s`` and
    ``max_runs``. Either way a measurement whose median interval is wider than
    ``rel_ci_target`` (or undefined: too few samples) is flagged ``noisy``.
    ``noisy_cv`` is kept for configurations that set it; noisiness is no longer
    judged on the coefficient of variation, which heavy tails (preemption on a
    shared machine) inflate while the median stays well determined.
    """

    warmup: int = 5
    min_runs: int = 20
    min_time_s: float = 0.2
    max_time_s: float = 10.0
    max_runs: int = 100_000
    noisy_cv: float = 0.10
    adaptive: bool = False
    rel_ci_target: float = 0.02
    confidence: float = 0.95

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
            ("rel_ci_target", self.rel_ci_target > 0, "a positive fraction such as 0.02"),
            ("confidence", 0 < self.confidence < 1, "a level in (0, 1) such as 0.95"),
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
    ``stopped_by`` is ``min-runs-and-time`` (non-adaptive), ``ci-target``
    (adaptive: the median is known to ``rel_ci_target``), ``max-time`` or ``max-runs``.
    """
    timer = timer or HostTimer(clock)
    warm = tuple(int(timer(fn)) for _ in range(config.warmup))
    samples: list[int] = []
    stop = StoppingRule(config)
    start = clock()
    while True:
        samples.append(int(timer(fn)))
        elapsed = clock() - start
        stopped = stop(samples, elapsed)
        if stopped:
            break
    return TimingRun(tuple(samples), warm, int(elapsed), stopped)


class StoppingRule:
    """``config``'s stopping rule as a callable: given the samples so far and the elapsed
    nanoseconds, the reason to stop (``""`` to go on).

    The median's interval is recomputed only every ~10% more samples (at least
    10), so checking costs O(n) amortised, not O(n) per call.
    """

    def __init__(self, config: TimingConfig) -> None:
        self.config = config
        self.min_ns = int(config.min_time_s * 1e9)
        self.max_ns = int(config.max_time_s * 1e9)
        self.next_check = 0

    def __call__(self, samples: Sequence[int], elapsed_ns: int) -> str:
        c, n = self.config, len(samples)
        if n >= c.min_runs and elapsed_ns >= self.min_ns:
            if not c.adaptive:
                return "min-runs-and-time"
            if n >= self.next_check:
                self.next_check = n + max(10, n // 10)
                if median_within_target(samples, c):
                    return CI_TARGET
        if n >= c.max_runs:
            return "max-runs"
        if elapsed_ns >= self.max_ns:
            return "max-time"
        return ""


@dataclass(frozen=True)
class LatencyStats:
    """Summary statistics of a latency sample, in nanoseconds (``cv`` is a fraction).

    Percentiles use linear interpolation (numpy's default); ``std`` is the
    sample standard deviation (ddof=1) and ``cv = std / mean``. ``*_ci_lo`` /
    ``*_ci_hi`` bound the median, p90 and p99 (order statistics) and the mean
    (circular-block bootstrap) at ``confidence``; NaN where ``n`` cannot bound
    them. ``p90``/``p99`` are NaN unless ``p90_supported``/``p99_supported``.
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
    confidence: float = 0.95
    median_ci_lo: float = math.nan
    median_ci_hi: float = math.nan
    mean_ci_lo: float = math.nan
    mean_ci_hi: float = math.nan
    p90_ci_lo: float = math.nan
    p90_ci_hi: float = math.nan
    p99_ci_lo: float = math.nan
    p99_ci_hi: float = math.nan
    p90_supported: bool = False
    p99_supported: bool = False

    @property
    def median_rel_half_width(self) -> float:
        """Half-width of the median's interval relative to the median (NaN when undefined)."""
        if math.isnan(self.median_ci_lo) or self.median == 0:
            return math.nan
        return (self.median_ci_hi - self.median_ci_lo) / 2 / self.median

    @classmethod
    def from_samples(
        cls, samples_ns: Sequence[int] | np.ndarray, confidence: float = 0.95
    ) -> LatencyStats:
        a = np.asarray(samples_ns, dtype=np.float64)
        if a.size == 0:
            raise ValueError("cannot compute latency statistics of an empty sample")
        p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else math.nan
        cv = std / mean if a.size > 1 and mean > 0 else math.nan
        med = _stats.median_ci(a, confidence)
        mci = _stats.mean_ci(a, confidence, block_length=None)
        tails = {}
        for name, q, value in (("p90", 0.90, p90), ("p99", 0.99, p99)):
            ok = _stats.percentile_supported(a.size, q)
            ci = _stats.quantile_ci(a, q, confidence) if ok else None
            tails[name] = float(value) if ok else math.nan
            tails[f"{name}_ci_lo"] = ci.lo if ci else math.nan
            tails[f"{name}_ci_hi"] = ci.hi if ci else math.nan
            tails[f"{name}_supported"] = ok
        return cls(
            n=int(a.size),
            mean=mean,
            median=float(p50),
            std=std,
            min=float(a.min()),
            max=float(a.max()),
            p25=float(p25),
            p75=float(p75),
            iqr=float(p75 - p25),
            cv=cv,
            confidence=confidence,
            median_ci_lo=med.lo,
            median_ci_hi=med.hi,
            mean_ci_lo=mci.lo,
            mean_ci_hi=mci.hi,
            **tails,
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


_STAT_UNITS = (
    "mean",
    "median",
    "std",
    "min",
    "max",
    "p25",
    "p75",
    "p90",
    "p99",
    "iqr",
    "median_ci_lo",
    "median_ci_hi",
    "mean_ci_lo",
    "mean_ci_hi",
    "p90_ci_lo",
    "p90_ci_hi",
    "p99_ci_lo",
    "p99_ci_hi",
)


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
        return LatencyStats.from_samples(self.samples_ns, self.config.confidence)

    @property
    def noisy(self) -> bool:
        """True when the median is not known to within ``config.rel_ci_target`` (its
        confidence interval is wider, or too few samples to have one)."""
        rel = self.stats.median_rel_half_width
        return bool(math.isnan(rel) or rel > self.config.rel_ci_target)

    @property
    def stop_reason(self) -> str:
        """What ended the sampling (``ci-target``, ``max-time``, ...): same as ``stopped_by``."""
        return self.stopped_by

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
        row["confidence"] = s.confidence
        row["p90_supported"] = s.p90_supported
        row["p99_supported"] = s.p99_supported
        row["noisy"] = self.noisy
        row["stopped_by"] = self.stopped_by
        return row

    def sample_rows(self) -> list[dict[str, Any]]:
        """One tidy row per raw sample (for distributions and re-analysis)."""
        base = {k: v for k, v in self.to_row().items() if not k.endswith("_us")}
        for k in ("n", "cv", "confidence", "p90_supported", "p99_supported", "noisy", "stopped_by"):
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

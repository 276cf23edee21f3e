"""A minimal latency timer for micro-benchmarks: warm-up, then the median of repeats.

The median (not the mean) because a shared machine produces one-sided
outliers; the block of repeats grows until ``min_time_s`` has passed so that
tiny operations are still timed over enough calls. The clock and the device
synchronisation are injectable, so the statistics can be tested with a fake
clock.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOCKS: dict[str, Callable[[], int]] = {
    "wall": time.perf_counter_ns,
    "thread": time.thread_time_ns,
}
"""``wall``: elapsed time. ``thread``: CPU time of the calling thread -- on a shared machine it
excludes the time the thread waited for a core, and with one torch thread (all compute on the
calling thread) it equals the latency on an idle core. Meaningless with more than one thread."""


def clock_named(name: str, threads: int, device: str = "cpu") -> Callable[[], int]:
    """The clock called ``name``; refuses the thread clock where it would under-count."""
    from eebench.errors import ConfigError

    if name not in CLOCKS:
        raise ConfigError(
            f"unknown clock '{name}'; expected one of {', '.join(CLOCKS)}", field="clock"
        )
    if name == "thread" and (threads != 1 or device != "cpu"):
        raise ConfigError(
            "the thread clock counts only the calling thread's CPU time: use it with --threads 1 on "
            f"the CPU (got {threads} threads on {device}), or use --clock wall",
            field="clock",
        )
    return CLOCKS[name]


STATISTICS = ("median", "min")


@dataclass(frozen=True)
class Timing:
    """Raw per-call samples (ns) of one timed function and their median."""

    samples_ns: list[int] = field(repr=False)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_ns) * 1e-9

    @property
    def min_s(self) -> float:
        return min(self.samples_ns) * 1e-9

    def statistic_s(self, name: str) -> float:
        """``median`` (typical call) or ``min`` (the call least disturbed by other work)."""
        if name not in STATISTICS:
            from eebench.errors import ConfigError

            raise ConfigError(
                f"unknown statistic '{name}'; expected one of {', '.join(STATISTICS)}"
            )
        return self.median_s if name == "median" else self.min_s

    @property
    def repeats(self) -> int:
        return len(self.samples_ns)


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    min_repeats: int = 10,
    max_repeats: int = 1000,
    min_time_s: float = 0.2,
    clock: Callable[[], int] = time.perf_counter_ns,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn`` call by call until ``min_repeats`` calls and ``min_time_s`` have passed."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    samples: list[int] = []
    budget = int(min_time_s * 1e9)
    spent = 0
    while len(samples) < max_repeats and (len(samples) < min_repeats or spent < budget):
        start = clock()
        fn()
        if sync is not None:
            sync()
        elapsed = clock() - start
        samples.append(elapsed)
        spent += elapsed
    return Timing(samples)

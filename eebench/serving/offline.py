"""The throughput an Offline test is sized for, measured on the System Under Test itself.

LoadGen's Offline scenario issues one query of ``1.1 x expected_qps x min_duration`` samples.
When the server is faster than the guess, it answers them all before the minimum duration and
LoadGen calls the run INVALID ("increase expected QPS"); a fixed guess in a suite is wrong for
most pairs of model, backend, strategy and mode (they span two orders of magnitude). So just
before an Offline test the same worker loop (strategy, mode, prepared model, thread settings)
serves a few chunks of samples queued all at once, as Offline queues them, without LoadGen;
LoadGen is then told ``headroom x`` the median chunk's throughput. The headroom keeps the run valid when the
LoadGen run is faster than the short calibration (warmer caches, a quieter machine); a server
slower than the guess only makes the run last longer than its minimum duration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eebench.backends.base import PreparedModel
from eebench.serving.inbox import Inbox, Request
from eebench.serving.strategies import DeciderFactory, StrategyConfig, Worker

EXPECTED_QPS_HEADROOM = 2.0
"""LoadGen is told this many times the calibrated throughput: with LoadGen's own factor 1.1 the
Offline run stays valid unless it is more than 2.2 x faster than the calibration, and lasts about
2.2 x its minimum duration when it runs as fast."""


@dataclass(frozen=True)
class OfflineCalibration:
    """Host-clock seconds of each timed chunk of ``chunk`` samples (after one warm-up chunk),
    served by the worker loop with the whole chunk queued at once.

    The rate is the median chunk's: on a shared machine noise slows some chunks down a lot (the
    mean follows them; one LoadGen run in 45 beat a mean-based rate by 2.4x and ended INVALID),
    and chunks differ in their mix of early and late exits (the fastest chunk is the easiest one,
    not the typical one: a guess from it made Offline runs last up to 16x their minimum).
    """

    chunk: int
    chunk_seconds: tuple[float, ...]
    headroom: float = EXPECTED_QPS_HEADROOM

    @property
    def measured_qps(self) -> float:
        return self.chunk / float(np.median(self.chunk_seconds))

    @property
    def expected_qps(self) -> float:
        """What LoadGen is told to expect."""
        return self.headroom * self.measured_qps

    def describe(self) -> str:
        return (
            f"measured: median of {len(self.chunk_seconds)} chunks of {self.chunk} samples "
            f"queued at once, {np.median(self.chunk_seconds) * 1e3:.2f} ms "
            f"({self.measured_qps:.4g} samples/s), served by the same worker loop without "
            f"LoadGen; x{self.headroom:g} headroom"
        )


def calibrate_offline(
    prepared: PreparedModel,
    strategy: StrategyConfig,
    x: np.ndarray,
    decider_factory: DeciderFactory | None = None,
    plain_stages: Sequence[int] | None = None,
    engine: Any = None,
    *,
    min_time_s: float = 0.1,
    min_chunks: int = 5,
    chunk: int | None = None,
    headroom: float = EXPECTED_QPS_HEADROOM,
) -> OfflineCalibration:
    """Serve chunks of ``x`` (each queued all at once, cycling through the rows) with
    ``strategy`` until at least ``min_chunks`` timed chunks add up to ``min_time_s``, after one
    warm-up chunk (a median of one or two chunks is one chunk's noise: a single slow chunk once
    put the guess 4x below the real rate).

    ``chunk`` defaults to four full batches (at least 32 samples, at most every row), so that the
    batching strategies run full batches as they do on Offline's one large query.
    """
    n = int(x.shape[0])
    if n < 1:
        raise ValueError("calibrate_offline needs at least one sample")
    if min_time_s < 0 or min_chunks < 1 or headroom <= 0:
        raise ValueError(
            f"need min_time_s >= 0, min_chunks >= 1 and headroom > 0, got {min_time_s}, "
            f"{min_chunks}, {headroom}"
        )
    size = int(chunk) if chunk is not None else min(n, max(32, 4 * strategy.max_batch))
    if size < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    answered = [0]

    def respond(requests: list[Request], _p: np.ndarray, _e: np.ndarray) -> None:
        answered[0] += len(requests)

    worker = Worker(prepared, strategy, x, respond, decider_factory, plain_stages, engine)
    start = [0]

    def one_chunk() -> float:
        inbox = Inbox()
        now = time.perf_counter_ns()
        inbox.put([Request(k, (start[0] + k) % n, now) for k in range(size)])
        inbox.close()  # the worker runs what is queued and returns
        start[0] += size
        answered[0] = 0
        t0 = time.perf_counter()
        worker.serve(inbox)
        seconds = time.perf_counter() - t0
        if answered[0] != size:
            raise RuntimeError(
                f"strategy '{strategy.name}' answered {answered[0]} of {size} queued samples"
            )
        return seconds

    times: list[float] = []
    with prepared.activated():
        one_chunk()  # warm-up: first calls, allocations, lazy initialisation
        while len(times) < min_chunks or sum(times) < min_time_s:
            times.append(one_chunk())
    return OfflineCalibration(size, tuple(times), headroom)

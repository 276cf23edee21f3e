"""The throughput an Offline test is sized for, measured on the System Under Test itself.

LoadGen's Offline scenario issues one query of ``1.1 x expected_qps x min_duration`` samples.
When the server is faster than the guess, it answers them all before the minimum duration and
LoadGen calls the run INVALID ("increase expected QPS"); a fixed guess in a suite is wrong for
most pairs of model, backend, strategy and mode (they span two orders of magnitude). So just
before an Offline test the same worker loop (strategy, mode, prepared model, thread settings)
serves a few chunks of samples queued all at once, as Offline queues them, without LoadGen;
LoadGen is then told ``headroom x`` that throughput. The headroom keeps the run valid when the
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
    """``samples`` answered in ``seconds`` (host clock, after one warm-up chunk) by the worker
    loop with every sample of a chunk queued at once; ``expected_qps`` is what LoadGen is told."""

    samples: int
    seconds: float
    chunk: int
    headroom: float = EXPECTED_QPS_HEADROOM

    @property
    def measured_qps(self) -> float:
        return self.samples / self.seconds

    @property
    def expected_qps(self) -> float:
        return self.headroom * self.measured_qps

    def describe(self) -> str:
        return (
            f"measured: {self.samples} samples in chunks of {self.chunk} queued at once, served "
            f"in {self.seconds * 1e3:.1f} ms by the same worker loop without LoadGen "
            f"({self.measured_qps:.4g} samples/s), x{self.headroom:g} headroom"
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
    chunk: int | None = None,
    headroom: float = EXPECTED_QPS_HEADROOM,
) -> OfflineCalibration:
    """Serve chunks of ``x`` (queued all at once, cycling through the rows) with ``strategy``
    until ``min_time_s`` has passed after one warm-up chunk; returns the calibration.

    ``chunk`` defaults to four full batches (at least 32 samples, at most every row), so that the
    batching strategies run full batches as they do on Offline's one large query.
    """
    n = int(x.shape[0])
    if n < 1:
        raise ValueError("calibrate_offline needs at least one sample")
    if min_time_s < 0 or headroom <= 0:
        raise ValueError(f"need min_time_s >= 0 and headroom > 0, got {min_time_s}, {headroom}")
    size = int(chunk) if chunk is not None else min(n, max(32, 4 * strategy.max_batch))
    if size < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    answered = [0]

    def respond(requests: list[Request], _p: np.ndarray, _e: np.ndarray) -> None:
        answered[0] += len(requests)

    worker = Worker(prepared, strategy, x, respond, decider_factory, plain_stages, engine)
    start = [0]

    def one_chunk() -> None:
        inbox = Inbox()
        now = time.perf_counter_ns()
        inbox.put([Request(k, (start[0] + k) % n, now) for k in range(size)])
        inbox.close()  # the worker runs what is queued and returns
        start[0] += size
        worker.serve(inbox)

    with prepared.activated():
        one_chunk()  # warm-up: first calls, allocations, lazy initialisation
        answered[0] = 0
        t0 = time.perf_counter()
        while True:
            one_chunk()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time_s:
                break
    return OfflineCalibration(answered[0], elapsed, size, headroom)

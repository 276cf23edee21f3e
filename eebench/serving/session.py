"""The System Under Test: a prepared multi-exit model served by one strategy under LoadGen.

The Query Sample Library is the host array ``x`` (every sample stays in memory; LoadGen's
``index`` is the row). LoadGen's thread only queues requests (:class:`Inbox`); one worker
thread, inside the prepared model's ``activated()`` (its thread settings and, for torch,
inference mode, both per thread), runs the strategy and answers each request when its exit
decision is made. Every answer is kept per sample, so a run can be checked against the exit
record's offline decisions for the same samples (:mod:`eebench.serving.check`).

A worker that fails answers everything still outstanding (LoadGen would otherwise wait for
ever) and the error is raised after the test.

An Offline test without a given ``offline_expected_qps`` is sized from the strategy's own
throughput, measured just before it (:mod:`eebench.serving.offline`); the run keeps the
settings LoadGen ran with and that calibration.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eebench.backends.base import PreparedModel
from eebench.serving.inbox import Inbox, Request
from eebench.serving.loadgen import LoadgenResult, ScenarioSettings, require_loadgen, run_test
from eebench.serving.offline import OfflineCalibration, calibrate_offline
from eebench.serving.strategies import DeciderFactory, StrategyConfig, Worker


@dataclass
class ServingRun:
    """One LoadGen test of one strategy: LoadGen's result and the answers served.

    ``predictions[i]`` / ``exits[i]`` are the answer and exit of sample ``i`` (-1 where LoadGen
    never asked for it); ``conflicts`` counts answers that differed from an earlier answer for
    the same sample (a correct server has none). ``settings`` are those LoadGen ran with (the
    Offline guess filled in); ``offline_calibration`` is where that guess came from (None when
    it was given). ``mode_build_s`` is what building the deployment mode took (NaN for
    ``per-stage``, which builds nothing): done once before any test, it is in no latency.
    """

    strategy: StrategyConfig
    result: LoadgenResult
    predictions: np.ndarray
    exits: np.ndarray
    served: int
    conflicts: int
    wall_s: float
    settings: ScenarioSettings | None = None
    offline_calibration: OfflineCalibration | None = None
    mode_build_s: float = float("nan")

    def accuracy(self, labels: np.ndarray) -> float:
        """Accuracy of the answers served, over the samples LoadGen asked for."""
        asked = self.predictions >= 0
        if not asked.any():
            return float("nan")
        return float((self.predictions[asked] == np.asarray(labels)[asked]).mean())


class ServingSession:
    """One prepared model, one strategy and the answers it gives; run with :meth:`run`."""

    def __init__(
        self,
        prepared: PreparedModel,
        strategy: StrategyConfig,
        x: np.ndarray,
        decider_factory: DeciderFactory | None = None,
        plain_stages: Sequence[int] | None = None,
        engine: Any = None,
    ) -> None:
        self.engine = engine
        self.prepared = prepared
        self.strategy = strategy
        self.x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        self.decider_factory = decider_factory
        self.plain_stages = plain_stages
        self._lg: Any = None
        self._lock = threading.Lock()

    def run(self, settings: ScenarioSettings, log_dir: Path) -> ServingRun:
        """One LoadGen test in ``settings.scenario``; logs are written to ``log_dir``."""
        lg = self._lg = require_loadgen()
        calibration = None
        if settings.scenario == "Offline" and settings.offline_expected_qps is None:
            calibration = self.calibrate_offline()
            settings = dataclasses.replace(settings, offline_expected_qps=calibration.expected_qps)
        n = int(self.x.shape[0])
        preds = np.full(n, -1, dtype=np.int64)
        exits = np.full(n, -1, dtype=np.int64)
        counts = {"served": 0, "conflicts": 0}
        outstanding: dict[int, Request] = {}
        inbox = Inbox()
        failure: list[BaseException] = []

        def respond(requests: list[Request], p: np.ndarray, e: np.ndarray) -> None:
            with self._lock:
                for r, pi, ei in zip(requests, p.tolist(), e.tolist()):
                    if preds[r.index] >= 0 and (preds[r.index] != pi or exits[r.index] != ei):
                        counts["conflicts"] += 1
                    preds[r.index], exits[r.index] = pi, ei
                    outstanding.pop(r.query_id, None)
                counts["served"] += len(requests)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(r.query_id, 0, 0) for r in requests])

        def issue(samples: Any) -> None:
            now = time.perf_counter_ns()
            reqs = [Request(int(s.id), int(s.index), now) for s in samples]
            with self._lock:
                if failure:  # the worker is gone: answer at once so LoadGen can finish
                    lg.QuerySamplesComplete(
                        [lg.QuerySampleResponse(r.query_id, 0, 0) for r in reqs]
                    )
                    return
                for r in reqs:
                    outstanding[r.query_id] = r
            inbox.put(reqs)

        worker = Worker(
            self.prepared,
            self.strategy,
            self.x,
            respond,
            self.decider_factory,
            self.plain_stages,
            self.engine,
        )

        def work() -> None:
            try:
                with self.prepared.activated():
                    worker.serve(inbox)
            except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
                with self._lock:
                    failure.append(err)
                    left = list(outstanding.values())
                    outstanding.clear()
                if left:
                    lg.QuerySamplesComplete(
                        [lg.QuerySampleResponse(r.query_id, 0, 0) for r in left]
                    )

        thread = threading.Thread(target=work, name=f"eebench-serve-{self.strategy.name}")
        thread.start()
        t0 = time.perf_counter()
        try:
            result = run_test(issue, lambda: None, n, settings, log_dir)
        finally:
            inbox.close()
            thread.join()
        wall = time.perf_counter() - t0
        if failure:
            raise failure[0]
        return ServingRun(
            self.strategy,
            result,
            preds,
            exits,
            counts["served"],
            counts["conflicts"],
            wall,
            settings,
            calibration,
            float("nan") if self.engine is None else float(self.engine.build_s),
        )

    def calibrate_offline(self, min_time_s: float = 0.1) -> OfflineCalibration:
        """This strategy's throughput on chunks queued all at once (see
        :func:`eebench.serving.offline.calibrate_offline`), the basis of an Offline test's size."""
        return calibrate_offline(
            self.prepared,
            self.strategy,
            self.x,
            self.decider_factory,
            self.plain_stages,
            self.engine,
            min_time_s=min_time_s,
        )

"""MLCommons LoadGen as eebench's load generator: settings, one test, and its verdict.

LoadGen (``pip install eebench[serving]``, the ``mlcommons-loadgen`` wheel) decides when
queries arrive (SingleStream: one after the other; Server: Poisson arrivals at a target QPS;
Offline: all at once), times every query from its scheduled arrival to its answer, and
judges the run: a percentile may only be claimed when enough queries ran (its early-stopping
rule), the minimum duration and query count were met and, for Server, the percentile latency
is within the bound. eebench reads that verdict from LoadGen's detail log (``result_*``
entries) and keeps the summary and detail logs beside the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eebench.errors import EEBenchError

SCENARIOS = ("SingleStream", "Server", "Offline")
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
PERCENTILES = (50.0, 90.0, 99.0)


class LoadgenUnavailable(EEBenchError):
    """mlcommons-loadgen is not installed."""


def require_loadgen() -> Any:
    """The ``mlperf_loadgen`` module, or a clear error saying what to install."""
    try:
        import mlperf_loadgen
    except ImportError as err:
        raise LoadgenUnavailable(
            f"the serving benchmarks need MLCommons LoadGen, which is not importable ({err}); "
            "install it with: pip install 'eebench[serving]' (or pip install mlcommons-loadgen)"
        ) from None
    return mlperf_loadgen


@dataclass(frozen=True)
class ScenarioSettings:
    """One LoadGen test: the scenario, its load, its bound and how long it runs.

    ``target_qps`` is the Server scenario's Poisson arrival rate; ``latency_bound_ms`` at
    ``percentile`` is its latency constraint. LoadGen sizes the other two scenarios up front
    from a guess: Offline issues ``1.1 x offline_expected_qps x min_duration`` samples in one
    query, SingleStream ``min_duration / single_stream_expected_latency`` queries (both at least
    ``min_query_count``); a guess that is too low for Offline or too high for SingleStream
    ends before the minimum duration and LoadGen calls the run INVALID (reported, not hidden).
    ``offline_expected_qps=None`` leaves the Offline guess to
    :meth:`eebench.serving.session.ServingSession.run`, which measures the strategy first.
    Seeds are fixed (``seed``), so the arrival schedule and the sample order repeat.
    """

    scenario: str
    target_qps: float = 100.0
    latency_bound_ms: float = 10.0
    percentile: float = 0.99
    min_duration_s: float = 1.0
    max_duration_s: float = 10.0
    min_query_count: int = 100
    offline_expected_qps: float | None = None
    single_stream_expected_latency_ms: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario '{self.scenario}'; expected one of {SCENARIOS}")
        if self.target_qps <= 0:
            raise ValueError(f"target_qps must be > 0, got {self.target_qps}")
        if self.offline_expected_qps is not None and not self.offline_expected_qps > 0:
            raise ValueError(
                f"offline_expected_qps must be > 0 (or None: measured), got "
                f"{self.offline_expected_qps}"
            )

    def test_settings(self, lg: Any) -> Any:
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, self.scenario)
        ts.mode = lg.TestMode.PerformanceOnly
        ts.min_duration_ms = int(self.min_duration_s * 1000)
        ts.max_duration_ms = int(self.max_duration_s * 1000)
        ts.min_query_count = int(self.min_query_count)
        bound_ns = int(self.latency_bound_ms * 1e6)
        if self.scenario == "Server":
            ts.server_target_qps = float(self.target_qps)
            ts.server_target_latency_ns = bound_ns
            ts.server_target_latency_percentile = float(self.percentile)
        elif self.scenario == "SingleStream":
            ts.single_stream_expected_latency_ns = int(self.single_stream_expected_latency_ms * 1e6)
            ts.single_stream_target_latency_percentile = float(self.percentile)
        else:
            if self.offline_expected_qps is None:
                raise ValueError(
                    "offline_expected_qps is None: measure it first (ServingSession.run does, "
                    "with calibrate_offline) or give the throughput to expect"
                )
            ts.offline_expected_qps = float(self.offline_expected_qps)
        ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(self.seed)
        return ts


@dataclass
class LoadgenResult:
    """What LoadGen measured and concluded (latencies in ns, from the detail log)."""

    scenario: str
    valid: bool
    achieved_qps: float
    scheduled_qps: float
    query_count: int
    latency_ns: dict[float, float]
    mean_latency_ns: float
    early_stopping_met: bool | None
    perf_constraints_met: bool | None
    invalid_reason: str
    log_dir: Path
    entries: dict[str, Any] = field(default_factory=dict, repr=False)

    def percentile_ms(self, p: float) -> float:
        return self.latency_ns.get(p, float("nan")) / 1e6


def parse_detail_log(path: Path, scenario: str) -> LoadgenResult:
    """LoadGen's verdict and statistics from ``mlperf_log_detail.txt`` (``:::MLLOG`` lines)."""
    entries: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            item = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        entries[str(item.get("key"))] = item.get("value")
    if "result_validity" not in entries:
        raise EEBenchError(
            f"{path}: LoadGen wrote no result (no 'result_validity' entry); the test did not "
            "finish: see the errors in this log"
        )
    latency = {
        p: float(entries[f"result_{p:.2f}_percentile_latency_ns"])
        for p in PERCENTILES
        if f"result_{p:.2f}_percentile_latency_ns" in entries
    }
    if scenario == "Server":
        achieved = float(entries.get("result_completed_samples_per_sec", "nan"))
        scheduled = float(entries.get("result_scheduled_samples_per_sec", "nan"))
    elif scenario == "Offline":
        achieved = scheduled = float(entries.get("result_samples_per_second", "nan"))
    else:  # SingleStream: one query at a time, as fast as the answers come
        mean = float(entries.get("result_mean_latency_ns", "nan"))
        achieved = scheduled = 1e9 / mean if mean > 0 else float("nan")
    early = entries.get("early_stopping_met")
    return LoadgenResult(
        scenario=scenario,
        valid=entries["result_validity"] == "VALID",
        achieved_qps=achieved,
        scheduled_qps=scheduled,
        query_count=int(entries.get("result_query_count", 0) or 0),
        latency_ns=latency,
        mean_latency_ns=float(entries.get("result_mean_latency_ns", "nan")),
        early_stopping_met=None if early is None else bool(early),
        perf_constraints_met=entries.get("result_perf_constraints_met"),
        invalid_reason=str(entries.get("result_invalid_reason", "") or ""),
        log_dir=path.parent,
        entries=entries,
    )


def run_test(
    issue: Any, flush: Any, num_samples: int, settings: ScenarioSettings, log_dir: Path
) -> LoadgenResult:
    """One LoadGen test against a System Under Test given as its two callbacks.

    ``issue(query_samples)`` receives LoadGen's query samples (``.id``, ``.index``) and must
    return at once; answers go back with ``lg.QuerySamplesComplete``. The logs are written to
    ``log_dir`` (the summary and the detail log are kept; the empty trace is removed).
    """
    lg = require_loadgen()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    sut = lg.ConstructSUT(issue, flush)
    qsl = lg.ConstructQSL(num_samples, num_samples, lambda _s: None, lambda _s: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings.test_settings(lg), log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    for extra in ("mlperf_log_trace.json", "mlperf_log_accuracy.json"):
        p = log_dir / extra
        if p.exists() and p.stat().st_size <= 2:  # empty in performance mode
            p.unlink()
    return parse_detail_log(log_dir / "mlperf_log_detail.txt", settings.scenario)

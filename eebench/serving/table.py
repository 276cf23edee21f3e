"""Rows of the ``serving`` results table: one per LoadGen test (see results/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eebench.serving.check import check_answers
from eebench.serving.loadgen import ScenarioSettings
from eebench.serving.session import ServingRun


def serving_row(
    run: ServingRun,
    settings: ScenarioSettings,
    expected: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
    *,
    mode: str,
    log_root: Path,
    search: bool = False,
    **identity: Any,
) -> dict[str, Any]:
    """One LoadGen test as a row: identity columns first (model, backend, policy, ...), then
    LoadGen's load, latencies and verdict, and the served answers against the exit record."""
    r = run.result
    check = check_answers(run.exits, run.predictions, *expected)
    server = settings.scenario == "Server"
    ran = run.settings or settings  # what LoadGen ran with (the Offline guess filled in)
    offline = settings.scenario == "Offline"
    cal = run.offline_calibration
    expected_qps = ran.offline_expected_qps if offline else None
    return {
        **identity,
        "scenario": settings.scenario,
        "strategy": run.strategy.name,
        "mode": mode,
        "mode_build_s": run.mode_build_s,
        "batch_size": run.strategy.max_batch,
        "timeout_ms": run.strategy.timeout_s * 1e3,
        "target_qps": settings.target_qps if server else float("nan"),
        "offline_expected_qps": float("nan") if expected_qps is None else expected_qps,
        "offline_calibrated_qps": cal.measured_qps if cal is not None else float("nan"),
        "offline_expected_source": (
            (cal.describe() if cal is not None else "given: serving.offline_expected_qps")
            if offline
            else ""
        ),
        "achieved_qps": r.achieved_qps,
        "latency_p50_ms": r.percentile_ms(50.0),
        "latency_p90_ms": r.percentile_ms(90.0),
        "latency_p99_ms": r.percentile_ms(99.0),
        "latency_mean_ms": r.mean_latency_ns / 1e6,
        "latency_bound_ms": settings.latency_bound_ms if server else float("nan"),
        "percentile": settings.percentile,
        "loadgen_valid": bool(r.valid),
        "early_stopping_met": r.early_stopping_met,
        "invalid_reason": r.invalid_reason,
        "query_count": r.query_count,
        "served_samples": check.served_samples,
        "accuracy": run.accuracy(labels),
        "exit_agreement": check.exit_agreement,
        "answer_agreement": check.answer_agreement,
        "answers_equal_record": bool(check.equal) and run.conflicts == 0,
        "search": bool(search),
        "log_dir": str(Path(r.log_dir).relative_to(log_root)),
    }

"""Vectorised policy evaluation vs the per-sample reference loop.

Goal (issue 4): 1,000 shared thresholds x 3 confidence measures x 8 exits x
10,000 samples in under 1 s, and at least 100x faster than the per-sample
reference loop measured in the same run. The reference loop would take
about an hour at full size, so it is timed on a subset (samples x
thresholds) and extrapolated linearly in both; ``extra_info`` says so.

Run: ``pytest tests/benchmarks --benchmark-only``
"""

import time

import numpy as np
import pytest

from eebench.evaluation import CostVector, ExitRecord, evaluate, reference_operating_points
from eebench.policies import ThresholdPolicy

N, E, C, T = 10_000, 8, 10, 1_000
MEASURES = ("max_softmax", "score_margin", "entropy")
REF_SAMPLES, REF_THRESHOLDS = 200, 10


@pytest.fixture(scope="module")
def arrays():
    """Logits of a plausible early-exit network: later exits are right more often and surer."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    logits = rng.normal(size=(N, E, C))
    right = rng.random((N, E)) < np.linspace(0.3, 0.9, E)
    logits[np.arange(N)[:, None], np.arange(E)[None, :], labels[:, None]] += right * np.linspace(
        1, 4, E
    )
    return logits.astype(np.float32), labels


def _record(logits, labels):
    return ExitRecord(logits, labels, np.arange(len(labels)), "bench-model", "bench-data", "test")


MACS = CostVector.macs(np.cumsum(np.full(E, 1.0e6)))
THRESHOLDS = np.linspace(0.0, 1.0, T)


def _vectorised(logits, labels):
    """From raw logits to the operating-point tables (a fresh record: no cached softmax)."""
    record = _record(logits, labels)
    return [evaluate(record, ThresholdPolicy(m), THRESHOLDS, [MACS]) for m in MEASURES]


def test_bench_vectorised_thresholds(benchmark, arrays):
    logits, labels = arrays
    tables = benchmark.pedantic(
        _vectorised, args=(logits, labels), rounds=5, iterations=1, warmup_rounds=1
    )
    assert [len(t) for t in tables] == [T] * len(MEASURES)
    vectorised_s = benchmark.stats.stats.mean

    # the per-sample reference loop on a subset, checked against the vectorised result on that subset
    sub = _record(logits[:REF_SAMPLES], labels[:REF_SAMPLES])
    ref_thresholds = THRESHOLDS[:: T // REF_THRESHOLDS]
    start = time.perf_counter()
    slow = [
        reference_operating_points(sub, ThresholdPolicy(m), ref_thresholds, [MACS])
        for m in MEASURES
    ]
    reference_s = time.perf_counter() - start
    for m, ref in zip(MEASURES, slow):
        fast = evaluate(sub, ThresholdPolicy(m), ref_thresholds, [MACS])
        np.testing.assert_array_equal(fast["accuracy"].to_numpy(), ref["accuracy"].to_numpy())
        for i in range(E):
            np.testing.assert_array_equal(
                fast[f"exit_frac_{i}"].to_numpy(), ref[f"exit_frac_{i}"].to_numpy()
            )

    scale = (N / REF_SAMPLES) * (T / len(ref_thresholds))
    reference_full_s = reference_s * scale
    speedup = reference_full_s / vectorised_s
    benchmark.extra_info.update(
        {
            "workload": f"{T} shared thresholds x {len(MEASURES)} confidence measures x {E} exits x {N} samples",
            "vectorised_mean_s": vectorised_s,
            "reference_measured_s": reference_s,
            "reference_measured_on": f"{REF_SAMPLES} samples x {len(ref_thresholds)} thresholds x {len(MEASURES)} measures",
            "reference_extrapolated_s": reference_full_s,
            "reference_extrapolation": f"linear in samples and thresholds (x{scale:.0f})",
            "speedup": speedup,
            "target_under_1s": vectorised_s < 1.0,
            "target_100x": speedup >= 100.0,
        }
    )
    assert vectorised_s < 1.0, f"vectorised evaluation took {vectorised_s:.3f} s (target < 1 s)"
    assert speedup >= 100.0, f"only {speedup:.0f}x faster than the per-sample loop (target >= 100x)"


def test_bench_vectorised_per_exit_thresholds(benchmark, arrays):
    """Per-exit thresholds have no ordering trick; (T, N, E) decisions are broadcast in chunks."""
    logits, labels = arrays
    record = _record(logits, labels)
    policy = ThresholdPolicy("max_softmax")
    rng = np.random.default_rng(1)
    per_exit = np.sort(rng.random((100, E)), axis=1)
    table = benchmark.pedantic(
        evaluate, args=(record, policy, per_exit, [MACS]), rounds=3, iterations=1
    )
    assert len(table) == 100
    # equal per-exit vectors must give exactly the shared-threshold results
    same = np.repeat(THRESHOLDS[::100, None], E, axis=1)
    a = evaluate(record, policy, same, [MACS])
    b = evaluate(record, policy, THRESHOLDS[::100], [MACS])
    cols = ["accuracy"] + [f"exit_frac_{i}" for i in range(E)]
    np.testing.assert_array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    benchmark.extra_info["workload"] = f"100 per-exit threshold vectors x {E} exits x {N} samples"

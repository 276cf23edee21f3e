"""Mean measured vs mean predicted latency: the prediction from the parts and the exit mix, the
intervals, and the part named for a gap, against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from eebench.measure.latency_validation import reach_fractions, validate_latency


def test_reach_fractions_count_the_samples_that_run_each_stage():
    # exits 0,0,1,2 of 4 samples: all run stage 0, half run stage 1, a quarter stage 2
    assert reach_fractions(np.array([0, 0, 1, 2]), 3).tolist() == [1.0, 0.5, 0.25]
    assert reach_fractions(np.array([2, 2]), 3).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="no samples"):
        reach_fractions(np.array([], dtype=int), 3)


def parts_of(stage, head, decision, n):
    """``(n, E, 3)`` part times, the same for every sample."""
    one = np.stack([stage, head, decision], axis=1).astype(np.int64)
    return np.repeat(one[None], n, axis=0)


def test_prediction_is_the_exit_mix_weighted_sum_of_part_means_and_a_gap_is_attributed():
    stage, head, dec = [1000, 3000], [100, 200], [50, 0]
    pparts = parts_of(stage, head, dec, 10)
    pparts[::2, 0, 0] += 200  # stage 0 alternates 1000 / 1200 ns: mean 1100
    exits = np.array([0, 1, 1, 1])  # reach: exit 0 all, exit 1 three quarters
    # by hand: 1.0 * (1100 + 100 + 50) + 0.75 * (3000 + 200 + 0) = 1250 + 2400 = 3650 ns
    want_pred = 3650.0
    # the true run: the same parts except head 1 takes 600 ns more for the three that reach it
    mparts = np.zeros((4, 2, 3), dtype=np.int64)
    mparts[:, 0] = (1100, 100, 50)
    mparts[1:, 1] = (3000, 800, 0)
    lat = mparts.sum(axis=(1, 2))
    v = validate_latency(lat, mparts, pparts, exits, clock="wall")
    assert v.predicted.estimate == pytest.approx(want_pred)
    assert v.measured.estimate == pytest.approx(lat.mean())  # (1250 + 3 * 5050) / 4 = 4100
    assert v.measured.estimate == pytest.approx(4100.0)
    assert v.ratio.estimate == pytest.approx(4100.0 / 3650.0)
    assert not v.within_tolerance  # +12.3%
    assert v.dominant_part() == (1, 1, pytest.approx(450.0))  # 0.75 * 600
    cols = v.columns()
    assert cols["gap_part"] == "head 1"
    assert cols["gap_ms"] == pytest.approx(450.0 / 1e6)
    assert cols["predicted_decision_ms"] == pytest.approx(50.0 / 1e6)
    assert cols["measured_head_ms"] == pytest.approx((100 + 0.75 * 800) / 1e6)
    assert "head 1 dominates the gap" in cols["gap_note"] and "(100%)" in cols["gap_note"]
    assert cols["ratio"] == pytest.approx(
        cols["measured_latency_ms"] / cols["predicted_latency_ms"]
    )


def test_a_point_within_ten_percent_has_no_note():
    pparts = parts_of([1000, 1000], [100, 100], [10, 0], 20)
    mparts = parts_of([1050, 1000], [100, 100], [10, 0], 20)
    v = validate_latency(mparts.sum(axis=(1, 2)), mparts, pparts, np.full(20, 1), clock="wall")
    assert v.within_tolerance and v.columns()["gap_note"] == ""


def test_the_mean_intervals_cover_the_true_means_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials, n = 200, 150
    true_stage, true_head = 1000.0, 300.0
    cover_pred = cover_meas = cover_ratio = 0
    exits = np.zeros(n, dtype=np.int64)  # everyone leaves at exit 0 of a 1-exit network
    for t in range(trials):
        pparts = np.zeros((n, 1, 3))
        pparts[:, 0, 0] = rng.gamma(4.0, true_stage / 4.0, n)
        pparts[:, 0, 1] = rng.gamma(4.0, true_head / 4.0, n)
        mparts = np.zeros((n, 1, 3))
        mparts[:, 0, 0] = rng.gamma(4.0, true_stage / 4.0, n)
        mparts[:, 0, 1] = rng.gamma(4.0, true_head / 4.0, n)
        v = validate_latency(mparts.sum(axis=(1, 2)), mparts, pparts, exits, "wall", seed=t)
        cover_pred += v.predicted.contains(true_stage + true_head)
        cover_meas += v.measured.contains(true_stage + true_head)
        cover_ratio += v.ratio.contains(1.0)
    for covered in (cover_pred, cover_meas, cover_ratio):
        assert 0.88 <= covered / trials <= 0.99


def test_mismatched_part_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(samples, exits, 3\)"):
        validate_latency(
            np.ones(2), np.ones((2, 2, 3)), np.ones((2, 3, 3)), np.zeros(2, int), "wall"
        )
    with pytest.raises(ValueError, match="3 measured latencies but 2"):
        validate_latency(
            np.ones(3), np.ones((2, 2, 3)), np.ones((2, 2, 3)), np.zeros(2, int), "wall"
        )


def test_thread_cpu_validation_clock_needs_single_threaded_measurement():
    from pydantic import ValidationError

    from eebench.suites.schema import SuiteSpec

    base = {"name": "s", "models": [{"name": "cascade"}]}
    ok = SuiteSpec.model_validate({**base, "validation": {"clock": "thread-cpu"}})
    assert ok.validation.clock == "thread-cpu" and ok.measurement.threads == [1]
    assert SuiteSpec.model_validate(base).validation.clock == "wall"
    with pytest.raises(ValidationError, match="use threads: \\[1\\] or validation.clock: wall"):
        SuiteSpec.model_validate(
            {**base, "validation": {"clock": "thread-cpu"}, "measurement": {"threads": [2]}}
        )
    with pytest.raises(ValidationError, match="thread-cpu"):
        SuiteSpec.model_validate({**base, "validation": {"clock": "cpu"}})

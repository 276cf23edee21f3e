"""The batch-1 decision path: Python-float confidences that agree with the vectorised measures,
and deciders whose batch-1 decisions equal the array path's exactly, ties at a threshold included.
"""

from __future__ import annotations

import numpy as np
import pytest

from eebench.policies import (
    LearnedGatePolicy,
    LogitsView,
    NonFiniteLogitsError,
    PatiencePolicy,
    PolicyError,
    ThresholdPolicy,
)
from eebench.policies.base import ExitDecider
from eebench.policies.confidence import CONFIDENCE, log_softmax64
from eebench.policies.row_confidence import (
    FROM_PARTS,
    ROW_MAX_CLASSES,
    ROW_TOLERANCE,
    row_kernel,
    row_softmax_parts,
)

MEASURES = ["max_softmax", "score_margin", "entropy"]
ONE = np.zeros(1, dtype=np.int64)


def random_rows(seed: int, n: int = 3000) -> list[np.ndarray]:
    """Rows of 2..ROW_MAX_CLASSES logits at scales from near-uniform to near-one-hot, float32 and
    float64, some with tied maxima."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        c = int(rng.integers(2, ROW_MAX_CLASSES + 1))
        row = rng.normal(size=c) * 10.0 ** rng.uniform(-3, 2.5)
        if k % 7 == 0:
            row[int(rng.integers(c))] = row.max()  # a tie for the top class
        rows.append(row.astype(np.float32 if k % 2 else np.float64))
    return rows


@pytest.mark.parametrize("name", MEASURES)
def test_row_kernels_agree_with_vectorised_measures_far_inside_the_tolerance(name):
    measure = CONFIDENCE.get(name)
    kernel = row_kernel(measure)
    of_parts = FROM_PARTS[measure]
    worst = 0.0
    for row in random_rows(1):
        want = float(measure(log_softmax64(row[None, :]))[0])
        got = kernel(row.tolist())
        from_parts = of_parts(*row_softmax_parts(row.tolist()))
        worst = max(worst, abs(got - want), abs(from_parts - want))
    # measured ~1e-15; the band that sends a decision to the exact path is ~9.3e-10
    assert worst <= ROW_TOLERANCE * 1e-3


def test_row_kernels_decline_a_single_class():
    for name in MEASURES:
        assert row_kernel(CONFIDENCE.get(name))([0.5]) is None


@pytest.mark.parametrize("name", MEASURES)
def test_threshold_at_exactly_a_score_decides_as_the_vectorised_evaluation(name):
    """Calibrated thresholds are scores of validation samples, so a decision at exactly a
    sample's own score (fires) and one ulp above it (stays) must match the vectorised rule."""
    policy = ThresholdPolicy(name)
    for row in random_rows(2, 600):
        logits = row[None, :]
        score = float(policy.scores(LogitsView(logits[:, None, :]))[0, 0])
        for theta, want in ((score, True), (np.nextafter(score, np.inf), False)):
            decider = policy.decider(np.array([theta, 0.0]))
            decider.reset(1)
            assert decider.decide(0, logits, ONE).tolist() == [want]


def test_batch_one_decisions_equal_the_array_path_for_every_decider():
    rng = np.random.default_rng(3)
    n, e, c = 400, 4, 10
    logits = (rng.normal(size=(n, e, c)) * rng.uniform(0.2, 6, size=(n, 1, 1))).astype(np.float32)
    labels = logits[:, -1].argmax(axis=1)
    view = LogitsView(logits, labels)
    gate = LearnedGatePolicy().fit(view)
    cases = [
        (ThresholdPolicy("max_softmax"), np.array([0.6, 0.5, 0.4, 0.0])),
        (ThresholdPolicy("score_margin"), np.array([0.5, 0.3, 0.2, 0.0])),
        (ThresholdPolicy("entropy"), np.array([0.5, 0.4, 0.3, 0.0])),
        (PatiencePolicy(), np.array([1.0, 1.0, 1.0, 1.0])),
        (gate, np.median(gate.scores(view), axis=0)),
    ]
    for policy, th in cases:
        fast = policy.decider(th, num_exits=e)
        exact = policy.decider(th, num_exits=e)
        exact._one_row_path = False  # this instance only: every call on the array path
        for k in range(n):
            fast.reset(1)
            exact.reset(1)
            for i in range(e):
                got = fast.decide(i, logits[k, i][None, :], ONE)
                want = exact.decide(i, logits[k, i][None, :], ONE)
                assert got.tolist() == want.tolist(), (policy.label, k, i)


def test_batch_one_masks_are_shared_and_read_only():
    decider = ThresholdPolicy("max_softmax").decider(np.array([0.5, 0.0]))
    decider.reset(1)
    confident = np.array([[9.0, 0.0, 0.0]], dtype=np.float32)
    unsure = np.zeros((1, 3), dtype=np.float32)
    leave, stay = decider.decide(0, confident, ONE), decider.decide(0, unsure, ONE)
    assert leave.tolist() == [True] and stay.tolist() == [False]
    assert decider.decide(0, confident, ONE) is leave  # nothing allocated per decision
    with pytest.raises(ValueError, match="read-only"):
        leave[0] = False


def test_batch_one_bad_calls_get_the_array_path_errors():
    decider = ThresholdPolicy("max_softmax").decider(np.array([0.5, 0.5, 0.0]))
    decider.reset(1)
    row = np.zeros((1, 4), dtype=np.float32)
    bad = row.copy()
    bad[0, 2] = -np.inf
    with pytest.raises(NonFiniteLogitsError, match="exit 1, class 2"):
        decider.decide(1, bad, ONE)
    with pytest.raises(PolicyError, match="exit_index 3 out of range"):
        decider.decide(3, row, ONE)
    with pytest.raises(PolicyError, match=r"active row indices must lie in \[0, 1\)"):
        decider.decide(0, row, np.array([1]))


def test_a_decider_without_a_batch_one_path_uses_the_array_path():
    class EvenRows(ExitDecider):
        def _fire(self, exit_index, logits, active):
            return active % 2 == 0

    decider = EvenRows(num_exits=2)
    assert not decider._one_row_path
    decider.reset(2)
    assert decider.decide(0, np.zeros((1, 3)), np.array([1])).tolist() == [False]
    assert decider.decide(0, np.zeros((1, 3)), np.array([0])).tolist() == [True]

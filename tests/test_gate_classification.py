"""Gate-Classification thresholds: per-exit thresholds defined on val from a precision target.

Held against a plain per-sample reference of the definition (the lowest threshold at which an
exit's val precision reaches the target, placed midway below the lowest val confidence it lets
through), a small example computed by hand, the sweep's monotonicity, out-of-fold scoring on val,
a calibration on val reported on test, and bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from eebench.evaluation import CostVector, ExitRecord, exit_indices
from eebench.evaluation.calibration import calibrate_accuracy_drop
from eebench.policies import (
    GateClassificationPolicy,
    LogitsView,
    NotFittedError,
    PolicyError,
    create_policy,
)
from eebench.policies.gate import cross_fitting_folds
from eebench.registry import UnknownNameError


def graded_record(n: int, seed: int, exits: int = 4, classes: int = 10) -> LogitsView:
    """Later exits are more often right; a sample's difficulty lowers every exit's margin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    difficulty = rng.uniform(0.0, 1.0, n)
    logits = rng.normal(0.0, 1.0, (n, exits, classes))
    for i in range(exits):
        logits[np.arange(n), i, y] += 1.5 * (i + 1) * (1.2 - difficulty)
    return LogitsView(logits.astype(np.float32), y)


@pytest.fixture(scope="module")
def graded() -> tuple[LogitsView, LogitsView]:
    return graded_record(300, seed=0), graded_record(300, seed=1)


# ----------------------------------------------------------------- a plain per-sample reference
def max_softmax_row(logits: np.ndarray) -> float:
    values = [float(v) for v in logits]
    top = max(values)
    return 1.0 / sum(math.exp(v - top) for v in values)


def argmax_row(logits: np.ndarray) -> int:
    values = [float(v) for v in logits]
    return values.index(max(values))


def reference_threshold(conf: list[float], correct: list[bool], target: float) -> float:
    """The definition, one candidate at a time: the lowest distinct val confidence whose samples
    at or above it are right at least ``target`` of the time; the threshold sits midway below it
    (-inf for the lowest: every sample passes); inf when no candidate reaches the target."""
    distinct = sorted(set(conf))
    for k, v in enumerate(distinct):
        through = [c for c, _ in zip(conf, correct) if c >= v]
        right = [ok for c, ok in zip(conf, correct) if c >= v and ok]
        if len(right) / len(through) >= target:
            return -math.inf if k == 0 else distinct[k - 1] + (v - distinct[k - 1]) / 2
    return math.inf


def reference_exits(val: LogitsView, test: LogitsView, targets: list[float]) -> list[int]:
    """Exit of every test sample for one precision target per exit."""
    n_val, exits, _ = val.logits.shape
    thresholds = []
    for i in range(exits):
        conf = [max_softmax_row(val.logits[n, i]) for n in range(n_val)]
        correct = [argmax_row(val.logits[n, i]) == int(val.labels[n]) for n in range(n_val)]
        thresholds.append(reference_threshold(conf, correct, targets[i]))
    out = []
    for n in range(test.logits.shape[0]):
        leave = exits - 1
        for i in range(exits - 1):
            if max_softmax_row(test.logits[n, i]) >= thresholds[i]:
                leave = i
                break
        out.append(leave)
    return out


@pytest.mark.parametrize(
    "targets",
    [
        [0.0] * 4,
        [0.5] * 4,
        [0.8] * 4,
        [0.9] * 4,
        [0.97] * 4,
        [1.0] * 4,
        [math.inf] * 4,
        [0.95, 0.85, 0.7, 0.0],  # one target per exit
        [1.0, 0.6, 0.99, 0.5],
    ],
)
def test_vectorised_exits_equal_a_per_sample_reference(graded, targets):
    val, test = graded
    policy = create_policy("gate-classification").fit(val)
    got = exit_indices(policy.scores(test), np.array([targets]))[0]
    assert got.tolist() == reference_exits(val, test, targets)


def test_targets_spread_the_samples(graded):
    val, test = graded
    policy = create_policy("gate-classification").fit(val)
    exits = exit_indices(policy.scores(test), np.array([0.9]))[0]
    assert len(set(exits.tolist())) > 2, "a 0.9 target should use several exits"


# ----------------------------------------------------------------- by hand
def two_class_record(conf: list[float], correct: list[bool]) -> LogitsView:
    """One early exit with these max-softmax confidences (2 classes, class 0 predicted) and a final
    exit; the label is 0 where the early exit is right."""
    z = np.log(np.asarray(conf) / (1.0 - np.asarray(conf)))
    logits = np.zeros((len(conf), 2, 2))
    logits[:, 0, 0] = z
    logits[:, 1, 0] = 5.0
    labels = np.where(correct, 0, 1)
    return LogitsView(logits, labels)


def test_thresholds_and_scores_computed_by_hand():
    # precision of conf >= 0.55: 3/5, >= 0.6: 3/4, >= 0.7: 2/3, >= 0.8: 2/2, >= 0.9: 1/1
    val = two_class_record([0.55, 0.6, 0.7, 0.8, 0.9], [False, True, False, True, True])
    policy = create_policy("gate-classification").fit(val)
    thresholds = [policy.thresholds_for(p)[0] for p in (0.5, 0.6, 0.7, 0.75, 0.8, 1.0, 1.01)]
    # 0.5, 0.6: every val sample passes; 0.7, 0.75: from 0.6 up (edge midway to 0.55);
    # 0.8 and 1.0: from 0.8 up (edge midway to 0.7); above 1: never
    assert thresholds == pytest.approx([-np.inf, -np.inf, 0.575, 0.575, 0.75, 0.75, np.inf])
    test = two_class_record([0.5, 0.57, 0.58, 0.74, 0.76, 0.95], [True] * 6)
    # the score is the best precision of any threshold at or below the confidence
    assert policy.scores(test)[:, 0] == pytest.approx([0.6, 0.6, 0.75, 0.75, 1.0, 1.0])
    exits = exit_indices(policy.scores(test), np.array([0.7, 0.8]))
    assert exits.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]


def test_each_exit_meets_the_target_on_val_with_the_lowest_threshold(graded):
    val, _ = graded
    policy = create_policy("gate-classification").fit(val)
    conf = np.exp(val.log_probs).max(axis=-1)
    correct = val.predictions == val.labels[:, None]
    for target in (0.6, 0.8, 0.9, 0.95):
        thresholds = policy.thresholds_for(target)
        for i in range(val.logits.shape[1]):
            through = conf[:, i] >= thresholds[i]
            if np.isinf(thresholds[i]) and thresholds[i] > 0:
                continue
            assert correct[through, i].mean() >= target
            # the next lower distinct confidence's set misses the target
            below = conf[~through, i]
            if below.size:
                lower = conf[:, i] >= below.max()
                assert correct[lower, i].mean() < target


def test_a_higher_target_never_leaves_earlier(graded):
    val, test = graded
    policy = create_policy("gate-classification").fit(val)
    targets = np.linspace(0.0, 1.0, 41)
    exits = exit_indices(policy.scores(test), targets)
    assert np.all(np.diff(exits, axis=0) >= 0)
    assert exits[0].tolist() == [0] * test.logits.shape[0]  # target 0: everyone at exit 0


def test_batch_one_decisions_equal_the_vectorised_ones(graded):
    """The per-sample executor's path (one row of Python floats, deferring near an edge) decides
    as the scores do, also for rows whose confidence sits on a fitted edge."""
    val, test = graded
    policy = create_policy("gate-classification").fit(val)
    edges = policy._tables[0][0]
    on_edge = np.zeros((3, 4, 10), dtype=np.float64)
    for r, edge in enumerate(edges[1:4]):  # 10 classes: max softmax e^z / (e^z + 9) = edge
        on_edge[r, :, 0] = np.log(9.0 * edge / (1.0 - edge))
    logits = np.concatenate([test.logits.astype(np.float64), on_edge])
    rows = LogitsView(logits)
    scores = policy.scores(rows)
    for target in (0.5, 0.8, 0.9, 0.99):
        decider = policy.decider(target, num_exits=4)
        for n in range(logits.shape[0]):
            decider.reset(1)
            for i in range(3):
                got = decider.decide(i, logits[n : n + 1, i], np.array([0]))
                assert bool(got[0]) == bool(scores[n, i] >= target), (target, n, i)


# ----------------------------------------------------------------- fitted on val only
def test_val_is_scored_out_of_fold(graded):
    """Each val row's calibration score comes from thresholds defined without that row's fold."""
    val, test = graded
    policy = create_policy("gate-classification", folds=3, seed=1).fit(val)
    view = policy.for_calibration(val)
    oof = view.scores(val)
    fold = cross_fitting_folds(val.logits.shape[0], 3, 1)
    for f in range(3):
        held = fold == f
        part = create_policy("gate-classification").fit(
            LogitsView(val.logits[~held], val.labels[~held])
        )
        np.testing.assert_array_equal(
            oof[held], part.scores(LogitsView(val.logits[held], val.labels[held]))
        )
    assert not np.array_equal(oof, policy.scores(val)), "in-sample and out-of-fold coincide"
    # on test, and in every online decision, the thresholds defined on all of val
    np.testing.assert_array_equal(view.scores(test), policy.scores(test))
    assert view.for_calibration(test) is policy


def test_shuffled_test_labels_change_nothing(graded):
    val, test = graded
    policy = create_policy("gate-classification").fit(val)
    shuffled = LogitsView(test.logits, np.random.default_rng(0).permutation(test.labels))
    np.testing.assert_array_equal(policy.scores(shuffled), policy.scores(test))


def test_a_target_calibrated_on_val_is_reported_on_test(graded):
    val_view, test_view = graded

    def record(view: LogitsView, split: str) -> ExitRecord:
        n = view.logits.shape[0]
        return ExitRecord(
            logits=view.logits,
            labels=view.labels,
            sample_ids=np.array([f"{split}{k}" for k in range(n)]),
            model_key="m",
            split_fingerprint=split,
            split=split,
        )

    val, test = record(val_view, "val"), record(test_view, "test")
    policy = create_policy("gate-classification").fit(val)
    costs = [CostVector([1.0, 2.0, 3.0, 4.0], unit="MACs", source="analytic")]
    c = calibrate_accuracy_drop(val, test, policy, 0.01, costs)
    assert c.val["accuracy"] >= c.target["final_accuracy_val"] - 0.01 - 1e-12
    assert c.val["expected_macs"] < 4.0  # some samples leave early
    # the test row is the deployed policy (thresholds from all of val) at the chosen target
    chosen = np.asarray(c.thresholds)
    exits = exit_indices(policy.scores(test), chosen[None, :])[0]
    correct = test.predictions[np.arange(test.num_samples), exits] == test.labels
    assert c.test["accuracy"] == pytest.approx(correct.mean())


# ----------------------------------------------------------------- bad input
def test_bad_options_and_unfitted_use_are_refused(graded):
    val, test = graded
    with pytest.raises(UnknownNameError, match="max_softmx"):
        create_policy("gate-classification", confidence="max_softmx")
    with pytest.raises(PolicyError, match="folds"):
        create_policy("gate-classification", folds=1)
    with pytest.raises(PolicyError, match="seed"):
        create_policy("gate-classification", seed=-1)
    policy = create_policy("gate-classification")
    assert isinstance(policy, GateClassificationPolicy) and not policy.fitted
    with pytest.raises(NotFittedError, match=r"fit\(val_record\)"):
        policy.scores(test)
    with pytest.raises(NotFittedError):
        policy.decider(0.9, num_exits=4)
    with pytest.raises(PolicyError, match="no labels"):
        policy.fit(LogitsView(val.logits))
    policy.fit(val)
    with pytest.raises(PolicyError, match="fitted for 4 exits.*3"):
        policy.scores(LogitsView(test.logits[:, :3]))
    with pytest.raises(PolicyError, match="needs thresholds"):
        policy.decider(None, num_exits=4)

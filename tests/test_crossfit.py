"""Cross-fitting shared by every policy fitted on val: folds, out-of-fold scores, the view."""

from __future__ import annotations

import numpy as np
import pytest

from eebench.policies import POLICIES, LogitsView, PolicyError, create_policy
from eebench.policies.crossfit import (
    CrossFittedView,
    CrossFittingPolicy,
    check_cross_fitting,
    cross_fitting_folds,
    out_of_fold,
)

CROSS_FITTING = sorted(
    name for name in POLICIES.names() if issubclass(POLICIES.get(name), CrossFittingPolicy)
)


def _record(n: int, seed: int) -> LogitsView:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    signal = np.linspace(0.5, 3.0, 3)[None, :, None] * np.eye(5)[labels][:, None, :]
    return LogitsView((rng.normal(size=(n, 3, 5)) + signal).astype(np.float32), labels)


def test_out_of_fold_scores_every_row_once_by_a_fit_on_the_other_folds_only() -> None:
    n, folds, seed = 23, 4, 5
    calls: list[np.ndarray] = []

    def fit_and_score(held: np.ndarray) -> np.ndarray:
        calls.append(held.copy())
        trained_on = ~held
        # column 0: how many of the held rows were in the training rows (must be 0);
        # column 1: the number of training rows
        return np.column_stack(
            [
                np.zeros(held.sum()) + (held & trained_on).sum(),
                np.full(held.sum(), trained_on.sum()),
            ]
        )

    scores = out_of_fold((n, 2), folds, seed, fit_and_score)
    assert len(calls) == folds
    np.testing.assert_array_equal(np.sum(calls, axis=0), np.ones(n))  # each row held once
    np.testing.assert_array_equal(scores[:, 0], 0.0)
    fold = cross_fitting_folds(n, folds, seed)
    sizes = np.bincount(fold)
    np.testing.assert_array_equal(scores[:, 1], n - sizes[fold])


def test_cross_fitting_settings_are_checked_with_the_policys_name() -> None:
    assert check_cross_fitting("p", np.int64(3), 0) == (3, 0)
    with pytest.raises(PolicyError, match=r"^p: folds .* must be an integer >= 2, got 1"):
        check_cross_fitting("p", 1, 0)
    with pytest.raises(PolicyError, match=r"^p: folds .* got True"):
        check_cross_fitting("p", True, 0)
    with pytest.raises(PolicyError, match=r"^p: seed must be an integer >= 0, got -1"):
        check_cross_fitting("p", 2, -1)


@pytest.mark.parametrize("name", CROSS_FITTING)
def test_view_scores_out_of_fold_on_the_fitted_record_and_deploys_the_full_fit(name: str) -> None:
    val, test = _record(60, 0), _record(40, 1)
    policy = create_policy(name, folds=3, seed=2).fit(val)
    view = policy.for_calibration(val)
    assert isinstance(view, CrossFittedView)
    assert (view.name, view.label, view.params()) == (policy.name, policy.label, policy.params())
    np.testing.assert_array_equal(view.scores(val), policy.out_of_fold_scores(val))
    same_rows = LogitsView(val.logits.copy(), val.labels)
    np.testing.assert_array_equal(view.scores(same_rows), view.scores(val))
    np.testing.assert_array_equal(view.scores(test), policy.scores(test))
    assert view.for_calibration(val) is view and view.for_calibration(test) is policy
    theta = float(np.median(policy.scores(test)[:, 0]))
    deployed = policy.decider(theta, num_exits=3)
    online = view.decider(theta, num_exits=3)
    assert type(online) is type(deployed)
    for d in (deployed, online):
        d.reset(test.logits.shape[0])
    rows = np.arange(test.logits.shape[0])
    np.testing.assert_array_equal(
        online.decide(0, test.logits[:, 0], rows), deployed.decide(0, test.logits[:, 0], rows)
    )


def test_a_refit_forgets_the_earlier_record() -> None:
    val, other = _record(60, 0), _record(60, 3)
    policy = create_policy("learned-gate", folds=3).fit(val)
    policy.fit(other)
    assert policy.for_calibration(val) is policy
    assert isinstance(policy.for_calibration(other), CrossFittedView)

"""Adaptive early exit learned bottom-up as weighted binary classification (Bolukbasi et al. 2017).

T. Bolukbasi, J. Wang, O. Dekel, V. Saligrama, *Adaptive Neural Networks for Efficient
Inference*, ICML 2017. The early-exit policy decides at each exit whether to stop with that
exit's prediction or to go on; its global objective (expected loss plus ``lambda`` x expected
cost) is reduced to one weighted binary classification per exit, solved from the last decision
back to the first: at exit ``i`` a sample should stop when the loss of stopping there is no more
than the loss it incurs by continuing under the policies already learned for the later exits plus
the cost of continuing, and it is weighted by how much the choice matters (the absolute
difference of the two).

In eebench (reward = ``-loss``, see :mod:`eebench.policies.tradeoff`): the loss is the 0-1 loss,
the cost the run's cumulative per-exit cost over the plain network's, the classifier at each exit
a weighted L2 logistic regression (Newton's method) on the exit's confidence features (max softmax, score margin,
entropy confidence). Differences from the paper: the paper's policies may read the network's
intermediate features and it searches a family of classifiers; here they read the exit's softmax
only. The *network-selection* variant of the paper (a cascade whose first member may also jump
straight to the last one) is this same policy run on an eebench cascade without the jump: the
true early-exit executor runs the members in order, so a skip edge cannot be executed.
"""

from __future__ import annotations

import numpy as np

from eebench.policies.registry import register_policy
from eebench.policies.tradeoff import LinearTradeoffPolicy, rewards

_CONSTANT_RULE = 1.0
"""Intercept of a rule that has only one answer to give (its sign is the answer)."""


def bottom_up_targets(
    stop_reward: np.ndarray, downstream_reward: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Label (stop when stopping loses no reward) and weight ``|difference|`` of each sample."""
    diff = stop_reward - downstream_reward
    return diff >= 0.0, np.abs(diff)


def weighted_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, regularization: float, iterations: int = 50
) -> tuple[float, np.ndarray]:
    """Intercept and coefficients of a weighted L2 logistic regression by Newton's method.

    Minimises ``0.5 ||coef||^2 + C sum_n w_n logloss_n`` (sklearn's objective, ``C`` =
    ``regularization``, intercept unpenalised) with the weights scaled to mean 1 over the samples
    that carry weight. A problem with one class (or no weight) gets the constant rule of that class.
    """
    present = w > 0
    if not present.any():
        return _CONSTANT_RULE, np.zeros(x.shape[1])  # stopping loses nothing anywhere
    ys = y[present].astype(np.float64)
    if ys.all() or not ys.any():
        return (_CONSTANT_RULE if ys.all() else -_CONSTANT_RULE), np.zeros(x.shape[1])
    ws = w[present] * (int(present.sum()) / w[present].sum()) * regularization
    a = np.concatenate([np.ones((ys.shape[0], 1)), x[present]], axis=1)
    penalty = np.ones(a.shape[1])
    penalty[0] = 0.0
    beta = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a @ beta)))
        grad = a.T @ (ws * (p - ys)) + penalty * beta
        hess = (a * (ws * p * (1.0 - p))[:, None]).T @ a + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), beta[1:]


@register_policy("bolukbasi-early-exit")
class BolukbasiEarlyExitPolicy(LinearTradeoffPolicy):
    """Bolukbasi et al. 2017: per exit a weighted logistic stop rule, learned bottom-up."""

    def __init__(
        self,
        cost: str = "macs",
        cost_weights: list[float] | None = None,
        regularization: float = 1.0,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cost=cost, cost_weights=cost_weights, folds=folds, seed=seed)
        if not regularization > 0:
            from eebench.policies.base import PolicyError

            raise PolicyError(
                f"{self.name}: regularization (sklearn's C) must be > 0, got {regularization!r}"
            )
        self.regularization = float(regularization)

    def params(self) -> dict:
        return {**super().params(), "regularization": self.regularization}

    def _fit_state(self, feats: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict:
        state = self._empty_state(feats)
        e = feats.shape[1]
        for k, theta in enumerate(self.thetas):
            r = rewards(correct, cost, float(theta))
            downstream = r[:, e - 1].copy()
            for i in range(e - 2, -1, -1):
                y, w = bottom_up_targets(r[:, i], downstream)
                x = (feats[:, i, :] - state["mean"][i]) / state["scale"][i]
                b, coef = weighted_logistic(x, y, w, self.regularization)
                state["intercept"][i, k], state["coef"][i, k] = b, coef
                stop = self._grid_fire(state, i, feats[:, i, :])[:, k]
                downstream = np.where(stop, r[:, i], downstream)
        return state

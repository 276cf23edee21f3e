"""Deciding how to decide: actor, pragmatic critic and optimistic critic (McGill & Perona 2017).

M. McGill, P. Perona, *Deciding How to Decide: Dynamic Routing in Artificial Neural Networks*,
ICML 2017. A dynamically routed network chooses, at each decision point, where a sample goes next;
on a chain of exits the choice is "stop here" or "go on". The paper trains the routing three ways:

* **actor learning**: a stochastic routing policy trained by the policy gradient of the expected
  reward (accuracy minus the weighted cost of the computation);
* **pragmatic critic learning**: a critic regresses the value of each action *under the current
  routing policy*, and the policy routes greedily on the critic;
* **optimistic critic learning**: the critic regresses the value of each action assuming that every
  later routing decision is the best one for the sample (its hindsight optimum), and the policy
  routes greedily on it.

In eebench (reward and the ``theta`` sweep: :mod:`eebench.policies.tradeoff`) the exits are
trained and frozen, the decisions read the exit's confidence features, and:

* the actor is a logistic stop probability per exit; on a recorded validation set the expected
  reward of the stochastic policy is an exact sum over the exits, so it is maximised with its exact
  gradient (L-BFGS) instead of the sampled REINFORCE estimate, and deployed as its mode
  (stop when the probability is at least 1/2);
* the critics are linear least-squares regressions (ridge): ``Q(stop)`` of the reward of stopping
  and ``Q(go on)`` of the downstream return, fitted from the last decision back to the first,
  which for a chain of stop-or-go decisions is the fixed point of the paper's alternation between
  critic fitting and greedy routing.

The paper also trains the network's layers jointly with the routing; eebench's networks are trained
before the policy is learned.
"""

from __future__ import annotations

import numpy as np

from eebench.policies.base import PolicyError
from eebench.policies.registry import register_policy
from eebench.policies.tradeoff import LinearTradeoffPolicy, rewards, ridge


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def expected_reward_and_gradient(z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected reward ``(N,)`` of the stochastic stop policy and its gradient ``(N, E-1)`` with
    respect to the stop logits ``z`` ``(N, E-1)``, given rewards ``r`` ``(N, E)``.

    ``G_i = p_i r_i + (1 - p_i) G_{i+1}`` (``G_{E-1} = r_{E-1}``) is the return from exit ``i``;
    the sample reaches exit ``i`` with probability ``S_i = prod_{j<i} (1 - p_j)``, so
    ``dG_0 / dz_i = S_i p_i (1 - p_i) (r_i - G_{i+1})``.
    """
    n, e = r.shape
    p = _sigmoid(z)
    g = np.empty((n, e))
    g[:, e - 1] = r[:, e - 1]
    for i in range(e - 2, -1, -1):
        g[:, i] = p[:, i] * r[:, i] + (1.0 - p[:, i]) * g[:, i + 1]
    reach = np.ones((n, e - 1))
    for i in range(1, e - 1):
        reach[:, i] = reach[:, i - 1] * (1.0 - p[:, i - 1])
    grad = reach * p * (1.0 - p) * (r[:, :-1] - g[:, 1:])
    return g[:, 0], grad


def fit_actor(
    x: np.ndarray, r: np.ndarray, l2: float, start: np.ndarray | None = None
) -> np.ndarray:
    """Parameters ``(E-1, F+1)`` (intercept first) of per-exit logistic stop policies that
    maximise the mean expected reward on standardised features ``x`` ``(N, E, F)`` minus
    ``l2/2`` x the squared weights (intercepts unpenalised)."""
    from scipy.optimize import minimize

    n, e, f = x.shape
    design = np.concatenate([np.ones((n, e - 1, 1)), x[:, :-1, :]], axis=2)  # (N, E-1, F+1)
    penalty = np.ones(f + 1)
    penalty[0] = 0.0

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = flat.reshape(e - 1, f + 1)
        z = np.einsum("nif,if->ni", design, params)
        value, dz = expected_reward_and_gradient(z, r)
        grad = np.einsum("ni,nif->if", dz, design) / n - l2 * params * penalty
        loss = -value.mean() + 0.5 * l2 * float((params**2 * penalty).sum())
        return loss, -grad.ravel()

    x0 = np.zeros((e - 1) * (f + 1)) if start is None else start.ravel()
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x.reshape(e - 1, f + 1)


class _ActorTradeoffPolicy(LinearTradeoffPolicy):
    """Logistic stop policies trained on the exact expected reward, one per grid ``theta``."""

    def __init__(
        self,
        cost: str = "macs",
        cost_weights: list[float] | None = None,
        l2: float = 1e-3,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cost=cost, cost_weights=cost_weights, folds=folds, seed=seed)
        if not (l2 >= 0 and np.isfinite(l2)):
            raise PolicyError(f"{self.name}: l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)

    def params(self) -> dict:
        return {**super().params(), "l2": self.l2}

    def _fit_state(self, feats: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict:
        state = self._empty_state(feats)
        e = feats.shape[1]
        if e < 2:
            return state
        x = np.zeros_like(feats)
        for i in range(e - 1):
            x[:, i, :] = (feats[:, i, :] - state["mean"][i]) / state["scale"][i]
        # every grid policy starts from p = 1/2 everywhere: a neighbour's saturated solution would
        # start where the gradient vanishes
        for k in range(self.thetas.shape[0]):
            params = fit_actor(x, rewards(correct, cost, float(self.thetas[k])), self.l2)
            state["intercept"][:, k] = params[:, 0]
            state["coef"][:, k, :] = params[:, 1:]
        return state


@register_policy("routing-actor")
class RoutingActorPolicy(_ActorTradeoffPolicy):
    """McGill & Perona 2017, actor learning: logistic stop policies on the exact expected reward."""


class _CriticTradeoffPolicy(LinearTradeoffPolicy):
    """Greedy routing on linear critics ``Q(stop)`` and ``Q(go on)`` per exit."""

    optimistic: bool = False

    def __init__(
        self,
        cost: str = "macs",
        cost_weights: list[float] | None = None,
        ridge: float = 1e-3,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cost=cost, cost_weights=cost_weights, folds=folds, seed=seed)
        if not (ridge >= 0 and np.isfinite(ridge)):
            raise PolicyError(f"{self.name}: ridge must be a finite number >= 0, got {ridge!r}")
        self.ridge = float(ridge)

    def params(self) -> dict:
        return {**super().params(), "ridge": self.ridge}

    def _fit_state(self, feats: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict:
        state = self._empty_state(feats)
        n, e, _ = feats.shape
        alpha = self.ridge * n
        for k, theta in enumerate(self.thetas):
            r = rewards(correct, cost, float(theta))
            downstream = r[:, e - 1].copy()
            best_after = r[:, e - 1].copy()
            for i in range(e - 2, -1, -1):
                x = (feats[:, i, :] - state["mean"][i]) / state["scale"][i]
                b_stop, w_stop = ridge(x, r[:, i], alpha)
                target = best_after if self.optimistic else downstream
                b_go, w_go = ridge(x, target, alpha)
                state["intercept"][i, k] = b_stop - b_go
                state["coef"][i, k] = w_stop - w_go
                stop = self._grid_fire(state, i, feats[:, i, :])[:, k]
                downstream = np.where(stop, r[:, i], downstream)
                best_after = np.maximum(best_after, r[:, i])
        return state


@register_policy("routing-pragmatic-critic")
class PragmaticCriticPolicy(_CriticTradeoffPolicy):
    """McGill & Perona 2017, pragmatic critic: Q(go on) is the return under the learned routing."""

    optimistic = False


@register_policy("routing-optimistic-critic")
class OptimisticCriticPolicy(_CriticTradeoffPolicy):
    """McGill & Perona 2017, optimistic critic: Q(go on) is the best later exit's reward."""

    optimistic = True

"""Exiting as a Markov decision process over the branches (EPNet, Dai et al. 2020).

X. Dai, X. Kong, T. Guo, *EPNet: Learning to Exit with Flexible Multi-Branch Network*, CIKM 2020.
A sample moving through the branches of a multi-branch network is an MDP: at each exit the state
is what that exit says about the sample, the actions are "exit here" and "go on", exiting ends the
episode with the exit's accuracy, going on costs the next stage's computation. The exit policy is
the MDP's optimal policy for the reward "accuracy minus weighted cost".

In eebench (reward and the ``theta`` sweep: :mod:`eebench.policies.tradeoff`) the state at exit
``i`` is the bin of its max softmax among at most ``bins`` bins, cut in gaps of the validation
record near its quantiles; the
MDP's per-state accuracy and bin-to-bin transitions are estimated from the validation record (with
add-one-half smoothing; a state never seen goes to the next exit's overall bin distribution) and
the optimal policy is solved exactly by backward induction (a finite-horizon MDP). Differences from
the paper: EPNet learns its policy with reinforcement learning over a richer state and designs the
branch structure too; here the branches are the model's exits as trained, and the state is one
discretised confidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eebench.policies.base import PolicyError
from eebench.policies.registry import register_policy
from eebench.policies.tradeoff import TradeoffPolicy, grid_scores

_SMOOTH = 0.5


def confidence_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges near the quantiles ``1/bins .. (bins-1)/bins`` of ``values``.

    Each edge sits in the middle of the widest gap between consecutive sorted values within half
    a bin's worth of ranks of its quantile: a state boundary in a gap of the data, not between two
    near-equal confidences, which a backend's rounding could otherwise swap across it."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.shape[0]
    if n < 2 or bins < 2:
        return np.zeros(0)
    gaps = v[1:] - v[:-1]  # gaps[j]: between ranks j and j + 1
    half = max(n // (2 * bins), 0)
    edges = []
    for q in range(1, bins):
        centre = min(max(round(q * n / bins) - 1, 0), n - 2)
        lo, hi = max(centre - half, 0), min(centre + half, n - 2)
        j = lo + int(np.argmax(gaps[lo : hi + 1]))
        if gaps[j] > 0:
            edges.append(0.5 * (v[j] + v[j + 1]))
    return np.unique(np.asarray(edges, dtype=np.float64))


def bin_of(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """State index of each value: how many edges are <= it."""
    return np.searchsorted(edges, values, side="right")


def solve_stopping_mdp(
    accuracy: list[np.ndarray], transitions: list[np.ndarray], cost: np.ndarray, theta: float
) -> list[np.ndarray]:
    """Optimal stop decisions per exit and state of the finite-horizon MDP.

    ``accuracy[i]`` ``(S_i,)``: probability of being right when stopping at exit ``i`` in each
    state; ``transitions[i]`` ``(S_i, S_{i+1})``: state distribution at exit ``i+1`` given the
    state at ``i``; ``cost`` ``(E,)`` the normalised cumulative cost. Stop where the reward of
    stopping is at least the expected value of going on (ties stop: cheaper)."""
    e = len(accuracy)
    value = theta * accuracy[e - 1] - (1.0 - theta) * cost[e - 1]
    stop: list[np.ndarray] = [np.zeros(0, dtype=bool)] * (e - 1)
    for i in range(e - 2, -1, -1):
        now = theta * accuracy[i] - (1.0 - theta) * cost[i]
        later = transitions[i] @ value
        stop[i] = now >= later
        value = np.where(stop[i], now, later)
    return stop


@register_policy("epnet")
class EPNetPolicy(TradeoffPolicy):
    """EPNet (Dai et al. 2020): the optimal policy of a stop-or-go MDP over confidence states."""

    features = ("max_softmax",)

    def __init__(
        self,
        cost: str = "macs",
        cost_weights: list[float] | None = None,
        bins: int = 10,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cost=cost, cost_weights=cost_weights, folds=folds, seed=seed)
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise PolicyError(f"{self.name}: bins must be an integer >= 1, got {bins!r}")
        self.bins = int(bins)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "bins": self.bins}

    def _fit_state(self, feats: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict:
        n, e, _ = feats.shape
        edges = [confidence_bins(feats[:, i, 0], self.bins) for i in range(e)]
        states = [bin_of(edges[i], feats[:, i, 0]) for i in range(e)]
        sizes = [edges[i].shape[0] + 1 for i in range(e)]
        accuracy = []
        for i in range(e):
            hits = np.bincount(states[i], weights=correct[:, i].astype(float), minlength=sizes[i])
            seen = np.bincount(states[i], minlength=sizes[i])
            accuracy.append((hits + _SMOOTH) / (seen + 2 * _SMOOTH))
        transitions = []
        for i in range(e - 1):
            counts = np.zeros((sizes[i], sizes[i + 1]))
            np.add.at(counts, (states[i], states[i + 1]), 1.0)
            marginal = np.bincount(states[i + 1], minlength=sizes[i + 1]) / n
            rows = counts.sum(axis=1, keepdims=True)
            transitions.append(
                np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), marginal[None, :])
            )
        k = self.thetas.shape[0]
        decisions = [np.zeros((sizes[i], k), dtype=bool) for i in range(e - 1)]
        for j, theta in enumerate(self.thetas):
            stop = solve_stopping_mdp(accuracy, transitions, cost, float(theta))
            for i in range(e - 1):
                decisions[i][:, j] = stop[i]
        return {"edges": edges, "decisions": decisions}

    def _grid_fire(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        return state["decisions"][exit_index][bin_of(state["edges"][exit_index], x[:, 0])]

    def _exit_scores(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        return grid_scores(self._grid_fire(state, exit_index, x), self.thetas)

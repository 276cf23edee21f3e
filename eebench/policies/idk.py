"""IDK cascades (Wang et al., "IDK Cascades: Fast Deep Learning by Learning not to Overthink", 2018).

A cascade runs independent members from small to large. Each member either answers or says
"I don't know" (IDK) and hands the sample to the next one; the last member always answers.
Member ``i`` answers when its confidence reaches its own threshold, ``conf_i(x) >= tau_i``, so
the online decision is the threshold policy's. What makes an IDK cascade is how the thresholds
are chosen: on the validation split, to minimise the expected cost of the cascade plus a
weighted error term,

    J(tau) = E[cost(x; tau)] / cost_all + error_weight * P[wrong(x; tau)],

(``cost_all``: what running every member costs, so that ``error_weight`` is unit-free: with
``error_weight = 10`` one point of accuracy, 0.01, is worth 10 % of the whole cascade's cost),
or to meet an accuracy target at the least expected cost (:func:`idk_thresholds_for_accuracy`).

The search is coordinate descent over the members' thresholds, starting from "every member but
the last says IDK". Each step is exact: with the other thresholds fixed, ``J`` as a function of
one member's threshold only changes where it crosses a validation score, and all those values
are scored at once from one sort and one cumulative sum. It stops when no single member's
threshold can lower ``J``. With two members that is the global optimum on val; with more it is
a point no one threshold can improve.

The policy only applies to cascades (the ``cascade`` family): on a network with intermediate
classifiers the exits share their computation and "handing on" is not a separate model call.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from eebench.policies.base import PolicyError
from eebench.policies.registry import register_policy
from eebench.policies.threshold import ThresholdPolicy

_MAX_ROUNDS = 100
_TOL = 1e-12


def _exits(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(N,)`` the member each sample is answered by under per-member ``thresholds``."""
    n, e = scores.shape
    fire = scores[:, :-1] >= thresholds[None, :-1]
    return np.where(fire.any(axis=1), fire.argmax(axis=1), e - 1) if e > 1 else np.zeros(n, int)


def idk_objective(
    scores: np.ndarray,
    correct: np.ndarray,
    cumulative_cost: np.ndarray,
    thresholds: np.ndarray,
    error_weight: float,
) -> float:
    """``J(tau)`` on a record: mean normalised cost plus ``error_weight`` x error rate."""
    exits = _exits(scores, thresholds)
    rows = np.arange(scores.shape[0])
    cost = np.asarray(cumulative_cost, dtype=np.float64)
    loss = cost[exits] / cost[-1] + error_weight * ~correct[rows, exits]
    return float(loss.mean())


def _check(scores: np.ndarray, correct: np.ndarray, cumulative_cost: np.ndarray) -> None:
    if scores.ndim != 2 or correct.shape != scores.shape:
        raise PolicyError(
            f"IDK search: scores and correctness must both be (samples, members), got "
            f"{scores.shape} and {correct.shape}"
        )
    if scores.shape[0] == 0:
        raise PolicyError("IDK search: the validation record has no samples")
    cost = np.asarray(cumulative_cost, dtype=np.float64)
    if cost.shape != (scores.shape[1],) or not cost[-1] > 0:
        raise PolicyError(
            f"IDK search: need one cumulative cost per member with a positive last entry, got {cost}"
        )


def idk_thresholds(
    scores: np.ndarray,
    correct: np.ndarray,
    cumulative_cost: np.ndarray,
    error_weight: float,
) -> np.ndarray:
    """Per-member thresholds minimising :func:`idk_objective` on val (coordinate descent, exact steps).

    ``scores`` ``(N, E)``: each member's confidence; ``correct`` ``(N, E)`` bool: whether each
    member's answer is right; ``cumulative_cost`` ``(E,)``: what a sample answered by member
    ``i`` has paid (members ``0 .. i``). Returns ``(E,)`` thresholds: a score value of that
    member on val, or ``inf`` (the member always says IDK); the last entry is ``-inf``.
    Ties in ``J`` keep the higher threshold (fewer early answers).
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    _check(scores, correct, cumulative_cost)
    if not (error_weight >= 0 and math.isfinite(error_weight)):
        raise PolicyError(f"IDK search: error_weight must be finite and >= 0, got {error_weight!r}")
    n, e = scores.shape
    cost = np.asarray(cumulative_cost, dtype=np.float64) / float(cumulative_cost[-1])
    loss = cost[None, :] + error_weight * ~correct  # (N, E): loss if answered by member i
    thresholds = np.full(e, np.inf)
    thresholds[-1] = -np.inf
    if e == 1:
        return thresholds
    best = float(loss[:, -1].mean())
    rows = np.arange(n)
    for _ in range(_MAX_ROUNDS):
        improved = False
        for i in range(e - 1):
            # with the other thresholds fixed: who reaches member i, and their loss if it says IDK
            before = scores[:, :i] >= thresholds[None, :i]
            reach = ~before.any(axis=1)
            later = thresholds.copy()
            later[: i + 1] = np.inf
            loss_on = loss[rows, _exits(scores, later)]
            # n x J with member i always saying IDK
            base = float(np.where(reach, loss_on, loss[rows, _exits(scores, thresholds)]).sum())
            # answering at member i every reaching sample with score >= tau: sorted descending
            s = scores[reach, i]
            if s.size == 0:  # nobody reaches member i: its threshold changes nothing
                continue
            delta = loss[reach, i] - loss_on[reach]
            order = np.argsort(-s, kind="stable")
            s_sorted = s[order]
            gain = np.cumsum(delta[order])
            # a threshold at a score lets every sample at or above it answer: ends of tie groups
            ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
            values = np.concatenate([[base], base + gain[ends]]) / n
            candidates = np.concatenate([[np.inf], s_sorted[ends]])
            k = int(np.argmin(values))  # first minimum: the highest threshold among equals
            if values[k] < best - _TOL:
                best = float(values[k])
                thresholds[i] = candidates[k]
                improved = True
        if not improved:
            break
    return thresholds


def idk_thresholds_for_accuracy(
    scores: np.ndarray,
    correct: np.ndarray,
    cumulative_cost: np.ndarray,
    target_accuracy: float,
    iterations: int = 40,
) -> np.ndarray:
    """The cheapest thresholds found whose val accuracy reaches ``target_accuracy``.

    Minimising :func:`idk_objective` with a larger ``error_weight`` trades cost for accuracy;
    the weight is bisected (on a log scale between 1e-6 and 1e6) and, of every solution met on
    the way that reaches the target, the one with the lowest expected cost is returned (ties:
    the more accurate). Raises :class:`PolicyError` when even the most accurate solution misses
    the target.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    _check(scores, correct, cumulative_cost)
    cost = np.asarray(cumulative_cost, dtype=np.float64)
    rows = np.arange(scores.shape[0])

    def solve(weight: float) -> tuple[np.ndarray, float, float]:
        th = idk_thresholds(scores, correct, cost, weight)
        exits = _exits(scores, th)
        return th, float(correct[rows, exits].mean()), float(cost[exits].mean())

    found: list[tuple[float, float, np.ndarray]] = []
    lo, hi = math.log(1e-6), math.log(1e6)
    th, acc, paid = solve(math.exp(hi))
    if acc < target_accuracy - _TOL:
        raise PolicyError(
            f"IDK search: no thresholds reach val accuracy {target_accuracy:.4f}; the most "
            f"accurate reach {acc:.4f}"
        )
    found.append((paid, -acc, th))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        th, acc, paid = solve(math.exp(mid))
        if acc >= target_accuracy - _TOL:
            found.append((paid, -acc, th))
            hi = mid
        else:
            lo = mid
    paid, _, th = min(found, key=lambda f: (f[0], f[1]))
    return th


@register_policy("idk-cascade")
class IDKCascadePolicy(ThresholdPolicy):
    """IDK cascade (Wang et al. 2018): thresholds chosen on val for cost + error_weight x error.

    A member answers when its confidence reaches its threshold and otherwise says "I don't
    know", handing the sample to the next member; the last member always answers.
    """

    threshold_meaning = (
        "minimum confidence for a cascade member to answer rather than say IDK (one per member)"
    )
    applies_to_families: ClassVar[tuple[str, ...]] = ("cascade",)
    """Model families the policy is defined for; the suite check refuses any other."""

    def __init__(self, confidence: str = "max_softmax", error_weight: float = 1.0) -> None:
        super().__init__(confidence)
        if isinstance(error_weight, bool) or not isinstance(error_weight, (int, float)):
            raise PolicyError(
                f"policy 'idk-cascade': error_weight must be a number, got {error_weight!r}"
            )
        if not (error_weight >= 0 and math.isfinite(error_weight)):
            raise PolicyError(
                f"policy 'idk-cascade': error_weight must be finite and >= 0 (how much one unit "
                f"of error rate weighs against the whole cascade's cost), got {error_weight!r}"
            )
        self.error_weight = float(error_weight)

    def params(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "error_weight": self.error_weight}

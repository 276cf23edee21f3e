"""Choosing thresholds on the validation record and reporting them on the test record.

Three questions a user asks, each answered on val and applied unchanged to
test (both rows are kept, so the gap between them is visible):

* :func:`calibrate_accuracy_drop`: the lowest expected cost whose val
  accuracy stays within ``delta`` of the final exit's;
* :func:`calibrate_budget`: the best val accuracy within an average-cost
  budget ``B``; :func:`calibrate_budgeted_batch` answers the same question the
  way MSDNet does (a geometric exit distribution ``p_i ∝ q^i`` realised by
  per-exit thresholds, ``q`` searched until the expected cost meets ``B``);
* :func:`calibrate_exit_distribution`: per-exit thresholds that realise a
  target exit distribution.

Shared-threshold searches look at every threshold where a decision changes
on val (``Policy.candidate_thresholds``), so the optimum on val is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from eebench.errors import EEBenchError
from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.operating_points import OperatingPoints, operating_points
from eebench.evaluation.record import ExitRecord
from eebench.policies.base import Policy, PolicyError
from eebench.policies.idk import (
    IDKCascadePolicy,
    idk_objective,
    idk_thresholds,
    idk_thresholds_for_accuracy,
)
from eebench.policies.targets import (
    ROUNDINGS,
    check_distribution,
    geometric_exit_distribution,
    msdnet_exit_distribution,
    thresholds_for_exit_distribution,
)

_EPS = 1e-12


class CalibrationError(EEBenchError, ValueError):
    """No threshold setting meets the target on the validation record (the message says what can)."""


@dataclass(frozen=True)
class Calibration:
    """Thresholds chosen on val (``thresholds``, one per exit) with the val and test operating points."""

    method: str
    policy: str
    confidence: str
    thresholds: np.ndarray
    target: dict[str, Any]
    val: pd.Series
    test: pd.Series
    details: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Two rows (val, test) of the operating-point table plus ``calibration``, ``target_*`` and
        ``details`` columns (e.g. ``q`` of the budgeted batch search)."""
        frame = pd.DataFrame([self.val, self.test]).reset_index(drop=True)
        frame.insert(0, "calibration", self.method)
        for key, value in self.target.items():
            frame[f"target_{key}"] = [value] * len(frame)
        for key, value in self.details.items():
            frame[key] = [value] * len(frame)
        return frame


def _check_pair(val: ExitRecord, test: ExitRecord, policy: Policy) -> Policy:
    """Check that val and test belong together; returns the policy as it scores val for choosing
    thresholds (a learned gate fitted on val: out-of-fold scores, see ``Policy.for_calibration``)."""
    if not policy.uses_thresholds:
        raise PolicyError(
            f"policy '{policy.name}' is a baseline without thresholds; there is nothing to calibrate"
        )
    if val.num_exits != test.num_exits or val.num_classes != test.num_classes:
        raise CalibrationError(
            f"val record has {val.num_exits} exits x {val.num_classes} classes but test has "
            f"{test.num_exits} x {test.num_classes}: they must come from the same model"
        )
    if val.model_key != test.model_key:
        raise CalibrationError(
            f"val record is of model '{val.model_key[:12]}' but test of '{test.model_key[:12]}': "
            "calibrate on the validation record of the same checkpoint"
        )
    return policy.for_calibration(val)


def _refuse_grid_only(policy: Policy, method: str) -> None:
    """Rank-based targets choose arbitrary per-exit thresholds; a policy whose thresholds are a
    discrete grid (patience counts) cannot take them."""
    if getattr(policy, "calibrates_on_grid", False):
        raise CalibrationError(
            f"policy '{policy.name}' takes its thresholds from a grid of whole values; {method} "
            "calibration sets each exit's threshold by ranking samples, which it cannot follow. "
            "Use accuracy-drop or budget calibration with thresholds=<the grid>"
        )


def _cost_name(costs: tuple[CostVector, ...], cost: str) -> str:
    if cost not in [c.name for c in costs]:
        raise CalibrationError(
            f"no cost vector named '{cost}' to calibrate on; costs given: {[c.name for c in costs] or 'none'}"
        )
    return cost


def _finish(
    method: str,
    policy: Policy,
    val_points: OperatingPoints,
    index: int,
    test: ExitRecord,
    costs: tuple[CostVector, ...],
    target: dict[str, Any],
    model: str | None,
    details: dict[str, Any] | None = None,
) -> Calibration:
    per_exit = val_points.thresholds[index]
    test_th = per_exit[0:1] if val_points.shared else per_exit[None, :]
    test_points = operating_points(test, policy, test_th, costs, model=model)
    return Calibration(
        method=method,
        policy=policy.name,
        confidence=policy.confidence_label,
        thresholds=per_exit.copy(),
        target=target,
        val=val_points.to_frame([index]).iloc[0],
        test=test_points.to_frame().iloc[0],
        details=details or {},
    )


def _shared_points(
    val: ExitRecord,
    policy: Policy,
    thresholds: np.ndarray | None,
    costs: tuple[CostVector, ...],
    model: str | None,
) -> OperatingPoints:
    policy.check_record(val)
    if thresholds is None:
        thresholds = policy.candidate_thresholds(policy.scores(val))
    return operating_points(
        val, policy, np.asarray(thresholds, dtype=np.float64), costs, model=model
    )


def calibrate_accuracy_drop(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    delta: float,
    costs: Sequence[CostVector],
    *,
    cost: str = "macs",
    thresholds: np.ndarray | None = None,
    model: str | None = None,
) -> Calibration:
    """Lowest expected ``cost`` on val whose accuracy is at least the final exit's minus ``delta``.

    Ties in cost go to the higher accuracy. ``thresholds`` (shared) restricts
    the search; by default every threshold where a val decision changes.
    """
    policy = _check_pair(val, test, policy)
    if not (delta >= 0 and math.isfinite(delta)):
        raise CalibrationError(
            f"delta must be a finite accuracy drop >= 0 (e.g. 0.01), got {delta!r}"
        )
    costs = check_costs(costs, val.num_exits)
    name = _cost_name(costs, cost)
    pts = _shared_points(val, policy, thresholds, costs, model)
    floor = pts.final_accuracy - delta
    feasible = np.flatnonzero(pts.accuracy >= floor - _EPS)
    if feasible.size == 0:
        raise CalibrationError(
            f"no threshold keeps val accuracy within {delta} of the final exit's ({pts.final_accuracy:.4f}); "
            f"best reached {pts.accuracy.max():.4f}. Include a threshold that never exits early (inf)"
        )
    expected = pts.expected(name)[feasible]
    order = np.lexsort((-pts.accuracy[feasible], expected))
    index = int(feasible[order[0]])
    return _finish(
        "accuracy-drop",
        policy,
        pts,
        index,
        test,
        costs,
        {"delta": float(delta), "final_accuracy_val": pts.final_accuracy},
        model,
    )


def calibrate_budget(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    budget: float,
    costs: Sequence[CostVector],
    *,
    cost: str = "macs",
    thresholds: np.ndarray | None = None,
    model: str | None = None,
) -> Calibration:
    """Best val accuracy among shared thresholds whose expected ``cost`` on val is within ``budget``."""
    policy = _check_pair(val, test, policy)
    costs = check_costs(costs, val.num_exits)
    name = _cost_name(costs, cost)
    pts = _shared_points(val, policy, thresholds, costs, model)
    expected = pts.expected(name)
    feasible = np.flatnonzero(expected <= budget * (1 + _EPS) + _EPS)
    if feasible.size == 0:
        raise CalibrationError(
            f"budget {budget} {pts.cost(name).unit} is below every operating point on val "
            f"(cheapest: {expected.min():.6g}); raise the budget"
        )
    order = np.lexsort((expected[feasible], -pts.accuracy[feasible]))
    index = int(feasible[order[0]])
    return _finish(
        "budget", policy, pts, index, test, costs, {"budget": float(budget), "cost": name}, model
    )


def calibrate_exit_distribution(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    target: Sequence[float] | np.ndarray,
    costs: Sequence[CostVector] = (),
    *,
    rounding: str = "cumulative",
    model: str | None = None,
) -> Calibration:
    """Per-exit thresholds that make the val exit distribution match ``target`` (ties may overshoot).

    ``rounding``: how the target becomes sample counts, ``cumulative`` (eebench) or ``msdnet``
    (MSDNet's public code); see :func:`~eebench.policies.thresholds_for_exit_distributions`.
    """
    policy = _check_pair(val, test, policy)
    _refuse_grid_only(policy, "exit-distribution")
    costs = check_costs(costs, val.num_exits)
    p = check_distribution(target, val.num_exits)
    policy.check_record(val)
    th = thresholds_for_exit_distribution(policy.scores(val), p, rounding)
    pts = operating_points(val, policy, th[None, :], costs, model=model)
    return _finish(
        "exit-distribution",
        policy,
        pts,
        0,
        test,
        costs,
        {"exit_distribution": tuple(float(v) for v in p)},
        model,
        details={"rounding": rounding},
    )


def calibrate_budgeted_batch(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    budget: float,
    costs: Sequence[CostVector],
    *,
    cost: str = "macs",
    q_range: tuple[float, float] = (1e-4, 1e4),
    iterations: int = 60,
    rounding: str = "cumulative",
    model: str | None = None,
) -> Calibration:
    """MSDNet's budgeted batch classification: exit distribution ``p_i ∝ q^i`` with the largest ``q``
    (the most samples reaching late exits) whose realised expected ``cost`` on val is within ``budget``.

    ``q`` is found by bisection on ``log q`` within ``q_range``; for each
    ``q`` the per-exit thresholds come from
    :func:`~eebench.policies.thresholds_for_exit_distribution` on val.

    ``rounding="msdnet"`` chooses the thresholds for each ``q`` exactly as MSDNet's public code
    does: its float32 distribution (:func:`~eebench.policies.msdnet_exit_distribution`),
    ``floor(n * p_k)`` samples per exit, leftovers to the final exit, an exit that cannot reach
    its count closed. The default ``cumulative`` rounds the cumulative counts instead. To draw
    MSDNet's whole curve (its 40 ``q``) in one call, use
    :func:`~eebench.evaluation.budgeted_batch_sweep`.
    """
    policy = _check_pair(val, test, policy)
    _refuse_grid_only(policy, "budgeted-batch")
    costs = check_costs(costs, val.num_exits)
    name = _cost_name(costs, cost)
    policy.check_record(val)
    scores = policy.scores(val)
    e = val.num_exits
    lo_q, hi_q = q_range
    if not (0 < lo_q < hi_q and math.isfinite(hi_q)):
        raise CalibrationError(f"q_range must be 0 < low < high < inf, got {q_range!r}")

    if rounding not in ROUNDINGS:
        raise CalibrationError(
            f"unknown rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}"
        )
    distribution_of = (
        msdnet_exit_distribution if rounding == "msdnet" else geometric_exit_distribution
    )

    def realise(log_q: float) -> tuple[OperatingPoints, float]:
        th = thresholds_for_exit_distribution(scores, distribution_of(math.exp(log_q), e), rounding)
        pts = operating_points(val, policy, th[None, :], costs, model=model)
        return pts, float(pts.expected(name)[0])

    lo, hi = math.log(lo_q), math.log(hi_q)
    best, best_cost = realise(lo)
    if best_cost > budget * (1 + _EPS) + _EPS:
        raise CalibrationError(
            f"budget {budget} {costs[[c.name for c in costs].index(name)].unit} is below the cheapest "
            f"geometric exit distribution on val ({best_cost:.6g}, q={lo_q}); raise the budget"
        )
    best_log_q = lo
    top, top_cost = realise(hi)
    if top_cost <= budget * (1 + _EPS) + _EPS:
        best, best_log_q = top, hi
    else:
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            pts, c = realise(mid)
            if c <= budget * (1 + _EPS) + _EPS:
                lo, best, best_log_q = mid, pts, mid
            else:
                hi = mid
    q = math.exp(best_log_q)
    distribution = distribution_of(q, e)
    return _finish(
        "budgeted-batch",
        policy,
        best,
        0,
        test,
        costs,
        {"budget": float(budget), "cost": name},
        model,
        details={
            "q": q,
            "target_exit_distribution": tuple(float(v) for v in distribution),
            "rounding": rounding,
        },
    )


def calibration_table(calibrations: Sequence[Calibration]) -> pd.DataFrame:
    """Val and test rows of several calibrations in one tidy table."""
    frames = [c.to_frame() for c in calibrations]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def calibrate_idk(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    costs: Sequence[CostVector],
    *,
    cost: str = "macs",
    accuracy_within: float | None = None,
    model: str | None = None,
) -> Calibration:
    """IDK cascade thresholds, one per member, chosen on val as Wang et al. choose them.

    By default they minimise the policy's objective, expected ``cost`` over the cost of running
    every member plus ``error_weight`` x error rate (method ``idk-objective``). With
    ``accuracy_within`` (a drop ``delta``) they are the cheapest found whose val accuracy is
    within ``delta`` of the last member's (method ``idk-accuracy``). See
    :mod:`eebench.policies.idk` for the search.
    """
    policy = _check_pair(val, test, policy)
    if not isinstance(policy, IDKCascadePolicy):
        raise CalibrationError(
            f"IDK calibration needs the 'idk-cascade' policy, got '{policy.name}'; calibrate "
            "other policies with calibrate_accuracy_drop or calibrate_budget"
        )
    costs = check_costs(costs, val.num_exits)
    name = _cost_name(costs, cost)
    policy.check_record(val)
    cumulative = costs[[c.name for c in costs].index(name)].values
    scores = policy.scores(val)
    correct = policy.predictions(val) == val.labels[:, None]
    final_accuracy = float(correct[:, -1].mean())
    if accuracy_within is None:
        method = "idk-objective"
        target: dict[str, Any] = {"error_weight": policy.error_weight, "cost": name}
        th = idk_thresholds(scores, correct, cumulative, policy.error_weight)
    else:
        if not (accuracy_within >= 0 and math.isfinite(accuracy_within)):
            raise CalibrationError(
                f"accuracy_within must be a finite accuracy drop >= 0 (e.g. 0.01), got "
                f"{accuracy_within!r}"
            )
        method = "idk-accuracy"
        target = {
            "delta": float(accuracy_within),
            "final_accuracy_val": final_accuracy,
            "cost": name,
        }
        try:
            th = idk_thresholds_for_accuracy(
                scores, correct, cumulative, final_accuracy - accuracy_within
            )
        except PolicyError as err:
            raise CalibrationError(str(err)) from None
    pts = operating_points(val, policy, th[None, :], costs, model=model)
    objective = idk_objective(scores, correct, cumulative, th, policy.error_weight)
    return _finish(
        method, policy, pts, 0, test, costs, target, model, details={"objective_val": objective}
    )

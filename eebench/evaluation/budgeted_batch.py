"""MSDNet's budgeted batch classification swept over every exit-probability prior in one call.

MSDNet (Huang et al. 2018) draws its budgeted-batch curve from 40 geometric exit distributions
``p_k ∝ q^k`` (``q = p / 20`` for ``p = 1 .. 40``). For each ``q`` it sets per-exit thresholds
on the validation split so that each exit takes its share of the samples, then reports accuracy
and expected cost of those thresholds on the test split. :func:`budgeted_batch_sweep` does the
same for all ``q`` at once: one threshold search for every target distribution
(:func:`~eebench.policies.targets.thresholds_for_exit_distributions`) and one vectorised
evaluation of all ``(Q, E)`` threshold rows on each split, with no loop over ``q`` or samples.

``rounding="msdnet"`` (the default here) turns a distribution into sample counts exactly as
MSDNet's public code does (``floor(n * p_k)`` in float32, leftovers to the final exit, an exit
that cannot reach its count closed), with the distributions themselves rounded in float32 as
there (:func:`~eebench.policies.targets.msdnet_exit_distribution`), so the published curves
can be reproduced number for number from the same exit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.operating_points import OperatingPoints, operating_points
from eebench.evaluation.record import ExitRecord
from eebench.policies.base import Policy, PolicyError
from eebench.policies.targets import (
    MSDNET_Q_VALUES,
    ROUNDINGS,
    geometric_exit_distribution,
    msdnet_exit_distribution,
    thresholds_for_exit_distributions,
)


@dataclass(frozen=True)
class BudgetedBatchSweep:
    """Every ``q`` of a budgeted-batch sweep: its target exit distribution and per-exit thresholds
    (chosen on val), with the val and test operating points of those thresholds (row ``k`` of
    each belongs to ``q[k]``)."""

    q: np.ndarray  # (Q,)
    distributions: np.ndarray  # (Q, E) target exit distributions
    thresholds: np.ndarray  # (Q, E) chosen on val; the final column is -inf
    rounding: str
    val: OperatingPoints
    test: OperatingPoints

    def to_frame(self) -> pd.DataFrame:
        """Val rows then test rows of the operating-point table, with ``q`` and ``rounding``."""
        frames = []
        for points in (self.val, self.test):
            frame = points.to_frame()
            frame.insert(0, "q", self.q)
            frame.insert(1, "rounding", self.rounding)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def budgeted_batch_distributions(
    q_values: Sequence[float] | np.ndarray, num_exits: int, rounding: str = "msdnet"
) -> np.ndarray:
    """``(Q, E)`` geometric exit distributions: MSDNet's float32 ones for ``rounding="msdnet"``,
    eebench's float64 :func:`~eebench.policies.geometric_exit_distribution` otherwise."""
    if rounding not in ROUNDINGS:
        raise PolicyError(f"unknown rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
    make = msdnet_exit_distribution if rounding == "msdnet" else geometric_exit_distribution
    rows = [make(float(q), num_exits) for q in q_values]
    return np.stack(rows) if rows else np.zeros((0, num_exits))


def budgeted_batch_sweep(
    val: ExitRecord,
    test: ExitRecord,
    policy: Policy,
    costs: Sequence[CostVector] = (),
    *,
    q_values: Sequence[float] | np.ndarray = MSDNET_Q_VALUES,
    rounding: str = "msdnet",
    model: str | None = None,
) -> BudgetedBatchSweep:
    """Thresholds for every ``q`` chosen on ``val`` and evaluated on ``val`` and ``test``, in one call.

    ``q_values`` defaults to MSDNet's 40 priors; ``rounding`` is ``msdnet`` (its public code) or
    ``cumulative`` (eebench's own, as in :func:`~eebench.evaluation.calibrate_budgeted_batch`).
    """
    if not policy.uses_thresholds:
        raise PolicyError(
            f"policy '{policy.name}' is a baseline without thresholds; it has no budgeted-batch curve"
        )
    if val.num_exits != test.num_exits:
        raise PolicyError(
            f"val record has {val.num_exits} exits but test has {test.num_exits}: they must come "
            "from the same model"
        )
    q = np.asarray(q_values, dtype=np.float64).reshape(-1)
    if q.size == 0:
        raise PolicyError("budgeted-batch sweep: give at least one q (default: MSDNet's 40)")
    costs = check_costs(costs, val.num_exits)
    policy.check_record(val)
    distributions = budgeted_batch_distributions(q, val.num_exits, rounding)
    thresholds = thresholds_for_exit_distributions(policy.scores(val), distributions, rounding)
    return BudgetedBatchSweep(
        q=q,
        distributions=distributions,
        thresholds=thresholds,
        rounding=rounding,
        val=operating_points(val, policy, thresholds, costs, model=model),
        test=operating_points(test, policy, thresholds, costs, model=model),
    )

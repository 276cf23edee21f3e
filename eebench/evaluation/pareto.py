"""Pareto fronts over operating points and anytime prediction.

The Pareto front keeps the operating points that no other point beats on both
cost and accuracy; pass the stacked tables of every policy and every model to
compare designs. Anytime prediction is each exit's own accuracy at its
cumulative cost: what a model offers if it can be interrupted after any exit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.errors import ConfigError
from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.record import ExitRecord


def pareto_front(
    points: pd.DataFrame, cost: str = "expected_macs", accuracy: str = "accuracy"
) -> pd.DataFrame:
    """Rows not dominated in (lower ``cost``, higher ``accuracy``), sorted by cost.

    A row is dominated when another costs no more and is at least as
    accurate, one of them strictly; of identical points the first is kept.
    Rows with NaN in either column are ignored.
    """
    for col in (cost, accuracy):
        if col not in points.columns:
            raise ConfigError(
                f"pareto front: no column '{col}'; columns are {list(points.columns)}"
            )
    c = points[cost].to_numpy(dtype=np.float64)
    a = points[accuracy].to_numpy(dtype=np.float64)
    valid = np.flatnonzero(~(np.isnan(c) | np.isnan(a)))
    order = valid[np.lexsort((-a[valid], c[valid]))]
    acc = a[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]]) if acc.size else acc
    keep = order[acc > best_before]
    return points.iloc[keep].reset_index(drop=True)


def anytime(
    record: ExitRecord, costs: Sequence[CostVector] = (), *, model: str | None = None
) -> pd.DataFrame:
    """One row per exit: its accuracy on its own and its cumulative cost (with unit and source)."""
    costs = check_costs(costs, record.num_exits)
    e = record.num_exits
    data: dict[str, object] = {
        "model": [model if model is not None else record.model_key[:12]] * e,
        "split": [record.split] * e,
        "exit": np.arange(e),
        "accuracy": record.exit_accuracy,
    }
    for c in costs:
        data[f"cumulative_{c.name}"] = c.values
        data[f"{c.name}_unit"] = [c.unit] * e
        data[f"{c.name}_source"] = [c.source] * e
    return pd.DataFrame(data)

"""Pareto fronts over operating points and anytime prediction.

The Pareto front keeps the operating points that no other point beats on both
cost and accuracy; pass the stacked tables of every policy and every model to
compare designs. Anytime prediction is each exit's own accuracy at its
cumulative cost: what a model offers if it can be interrupted after any exit.

Two rules keep a front honest when it is used to choose:

* baselines and bounds are never on it: ``oracle`` reads the labels (an upper
  bound no deployment reaches), ``aggregation`` and ``final-only`` are
  reference points, not early-exit designs (:func:`is_reference`);
* a front that recommends is found on the val split and shown with the test
  rows of the same operating points (:func:`front_chosen_on_val`): the test
  split is only ever reported, so relabelling test changes no choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.errors import ConfigError
from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.record import ExitRecord

REFERENCE_CALIBRATION = "baseline"
"""``calibration`` value of baseline and bound rows in a run's operating-point table."""

POINT_IDENTITY = (
    "run",
    "model",
    "family",
    "policy",
    "confidence",
    "options",
    "thresholds",
    "calibration",
    "cost_source",
)
"""Columns that name one operating point across splits (those present are used): the same model,
policy, confidence, calibration and thresholds evaluated on val and on test."""


def is_reference(points: pd.DataFrame) -> pd.Series:
    """Boolean mask of baseline and bound rows (``kind == "baseline"``, or ``calibration ==
    "baseline"`` in a run's table): oracle, aggregation, final-only. They are shown beside fronts,
    never on them, and never chosen."""
    mask = pd.Series(False, index=points.index)
    if "kind" in points.columns:
        mask |= points["kind"].astype(str) == "baseline"
    if "calibration" in points.columns:
        mask |= points["calibration"].astype(str) == REFERENCE_CALIBRATION
    return mask


def pareto_front(
    points: pd.DataFrame, cost: str = "expected_macs", accuracy: str = "accuracy"
) -> pd.DataFrame:
    """Rows not dominated in (lower ``cost``, higher ``accuracy``), sorted by cost.

    A row is dominated when another costs no more and is at least as
    accurate, one of them strictly; of identical points the first is kept.
    Rows with NaN in either column are ignored, and so are baselines and
    bounds (:func:`is_reference`): the oracle would otherwise set the front.
    """
    for col in (cost, accuracy):
        if col not in points.columns:
            raise ConfigError(
                f"pareto front: no column '{col}'; columns are {list(points.columns)}"
            )
    points = points[~is_reference(points)]
    c = points[cost].to_numpy(dtype=np.float64)
    a = points[accuracy].to_numpy(dtype=np.float64)
    valid = np.flatnonzero(~(np.isnan(c) | np.isnan(a)))
    order = valid[np.lexsort((-a[valid], c[valid]))]
    acc = a[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]]) if acc.size else acc
    keep = order[acc > best_before]
    return points.iloc[keep].reset_index(drop=True)


def identity_columns(points: pd.DataFrame) -> list[str]:
    """The :data:`POINT_IDENTITY` columns present in ``points``."""
    return [c for c in POINT_IDENTITY if c in points.columns]


def front_chosen_on_val(
    points: pd.DataFrame,
    cost: str = "expected_macs",
    accuracy: str = "accuracy",
    by: Sequence[str] = (),
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The Pareto front of the val rows, reported with the test rows of the same operating points.

    ``points`` holds both splits (a ``split`` column with ``val`` and
    ``test``). Per group of ``by`` (e.g. run and family), the front is found
    on val (baselines and bounds excluded, see :func:`pareto_front`); each
    front point is then looked up among the test rows by
    ``keys`` (default :func:`identity_columns`) and returned as that test row, in val-cost
    order, with its val coordinates beside it (``val_<cost>``,
    ``val_<accuracy>``). A front point without a test row (a partial run) is
    left out. Test values can only move the drawn points, never which points
    are on the front.
    """
    for col in ("split", cost, accuracy, *by):
        if col not in points.columns:
            raise ConfigError(
                f"front chosen on val: no column '{col}'; columns are {list(points.columns)}"
            )
    keys = [k for k in (identity_columns(points) if keys is None else keys) if k != "split"]
    missing = [k for k in keys if k not in points.columns]
    if missing:
        raise ConfigError(f"front chosen on val: no column {missing[0]!r} to match val and test")
    if not keys:
        raise ConfigError(
            "front chosen on val: no column names an operating point across splits "
            f"(expected some of {list(POINT_IDENTITY)})"
        )
    val = points[points["split"] == "val"]
    test = points[points["split"] == "test"].drop_duplicates(subset=keys)
    columns = [*points.columns, f"val_{cost}", f"val_{accuracy}"]
    groups = val.groupby(list(by), sort=False, dropna=False) if by else [((), val)]
    frames = []
    for _, grp in groups:
        front = pareto_front(grp, cost, accuracy)
        if front.empty:
            continue
        chosen = front[keys].assign(
            **{f"val_{cost}": front[cost].to_numpy(), f"val_{accuracy}": front[accuracy].to_numpy()}
        )
        frames.append(chosen.merge(test, on=keys, how="inner", sort=False))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


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

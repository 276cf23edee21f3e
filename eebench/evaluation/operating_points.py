"""Operating points of a policy on an exit record: accuracy, exit distribution, expected costs, overthinking.

One row per threshold setting (an operating point). Columns:

* ``model``, ``split``, ``policy``, ``kind`` (``policy`` or ``baseline``),
  ``confidence`` (what the scores are made of), ``threshold`` (the shared
  threshold, NaN for per-exit settings and baselines), ``thresholds`` (one
  per exit as a tuple, usable as-is by ``policy.decider``; empty for
  baselines);
* ``accuracy`` and ``exit_frac_<i>`` for every exit;
* for every cost vector ``c``: ``expected_<c>`` (mean cumulative cost at the
  exit taken; the ``final-only`` baseline pays the plain network's cost,
  ``c.plain``), ``<c>_unit``, ``<c>_source``, ``wasted_<c>`` (mean cost
  spent beyond the first exit that was already correct; 0 for samples no
  exit gets right) and ``wasted_frac_<c>`` (Shallow-Deep Networks' wasted
  computation: per sample that share of what it paid, averaged; see
  :mod:`eebench.evaluation.overthinking`);
* ``overthinking`` (Shallow-Deep Networks: share of samples some earlier exit
  classifies correctly while the final exit does not; a property of the
  record, the same on every row), ``lost_by_exiting_early`` (the final exit
  is right but the policy's answer is wrong) and ``rescued`` (the final exit
  is wrong but the policy's answer is right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from eebench.errors import DataError
from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.overthinking import (
    overthinking_rate,
    plain_paid,
    wasted_fraction_table,
    wasted_table,
)
from eebench.evaluation.record import ExitRecord
from eebench.evaluation.vectorised import as_threshold_array, exit_sums
from eebench.policies.base import Policy, PolicyError


@dataclass(frozen=True)
class OperatingPoints:
    """The arrays behind the operating-point table (for selection without building a DataFrame)."""

    model: str
    split: str
    policy: str
    kind: str
    confidence: str
    thresholds: np.ndarray  # (T, E) one per exit, or (T, 0) for baselines
    shared: bool
    num_samples: int
    exit_counts: np.ndarray  # (T, E)
    correct_counts: np.ndarray  # (T,)
    lost_early_counts: np.ndarray  # (T,) final exit right, policy's answer wrong
    rescued_counts: np.ndarray  # (T,)
    costs: tuple[CostVector, ...]
    wasted_totals: dict[str, np.ndarray]
    overthinking: float
    final_accuracy: float
    wasted_frac_totals: dict[str, np.ndarray]
    plain_network: bool = False  # the policy runs the plain network (final-only): pays c.plain

    def __len__(self) -> int:
        return int(self.exit_counts.shape[0])

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct_counts / self.num_samples

    @property
    def exit_fractions(self) -> np.ndarray:
        return self.exit_counts / self.num_samples

    def cost(self, name: str) -> CostVector:
        for c in self.costs:
            if c.name == name:
                return c
        raise PolicyError(
            f"no cost vector named '{name}'; have {[c.name for c in self.costs] or 'none'}"
        )

    def paid(self, name: str) -> np.ndarray:
        """What a sample leaving at each exit pays: the cumulative cost, or for a policy that runs
        the plain network (``final-only``) the plain network's cost at the final exit."""
        c = self.cost(name)
        return plain_paid(c) if self.plain_network else c.values

    def expected(self, name: str) -> np.ndarray:
        """Expected cost per sample for each operating point."""
        return self.exit_counts @ self.paid(name) / self.num_samples

    def wasted(self, name: str) -> np.ndarray:
        self.cost(name)
        return self.wasted_totals[name] / self.num_samples

    def wasted_fraction(self, name: str) -> np.ndarray:
        """Mean over samples of the share of their cost spent after a correct exit (SDN)."""
        self.cost(name)
        return self.wasted_frac_totals[name] / self.num_samples

    def to_frame(self, rows: Sequence[int] | np.ndarray | None = None) -> pd.DataFrame:
        """The tidy table, one row per operating point (all, or the ``rows`` given)."""
        idx = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        t = idx.shape[0]
        th = self.thresholds[idx]
        threshold = th[:, 0] if self.shared and th.shape[1] else np.full(t, np.nan)
        data: dict[str, object] = {
            "model": [self.model] * t,
            "split": [self.split] * t,
            "policy": [self.policy] * t,
            "kind": [self.kind] * t,
            "confidence": [self.confidence] * t,
            "threshold": threshold,
            "thresholds": list(map(tuple, th.tolist())),
            "accuracy": self.accuracy[idx],
        }
        fractions = self.exit_fractions[idx]
        for i in range(fractions.shape[1]):
            data[f"exit_frac_{i}"] = fractions[:, i]
        for c in self.costs:
            data[f"expected_{c.name}"] = self.expected(c.name)[idx]
            data[f"{c.name}_unit"] = [c.unit] * t
            data[f"{c.name}_source"] = [c.source] * t
        data["overthinking"] = np.full(t, self.overthinking)
        data["lost_by_exiting_early"] = self.lost_early_counts[idx] / self.num_samples
        data["rescued"] = self.rescued_counts[idx] / self.num_samples
        for c in self.costs:
            data[f"wasted_{c.name}"] = self.wasted(c.name)[idx]
            data[f"wasted_frac_{c.name}"] = self.wasted_fraction(c.name)[idx]
        return pd.DataFrame(data)


def operating_points(
    record: ExitRecord,
    policy: Policy,
    thresholds: float | np.ndarray | Sequence[float] | None = None,
    costs: Sequence[CostVector] = (),
    *,
    model: str | None = None,
) -> OperatingPoints:
    """Evaluate ``policy`` on ``record`` at every threshold setting, vectorised.

    ``thresholds``: ``(T,)`` shared thresholds, ``(T, E)`` per-exit
    thresholds, or ``None`` for policies without thresholds (baselines).
    ``costs``: cumulative per-exit cost vectors; each one adds expected and
    wasted cost columns labelled with its unit and source.
    """
    if record.num_samples == 0:
        raise DataError(
            f"exit record of split '{record.split}' has no samples; nothing to evaluate"
        )
    num_exits = record.num_exits
    costs = check_costs(costs, num_exits)
    policy.check_record(record)
    if policy.uses_thresholds:
        if thresholds is None:
            raise PolicyError(
                f"policy '{policy.name}' needs thresholds ({policy.threshold_meaning}); "
                "pass an array or use sweep() for its default grid"
            )
        th = as_threshold_array(thresholds, num_exits, policy.name)
        shared = th.ndim == 1
        internal = th
        per_exit = np.repeat(th[:, None], num_exits, axis=1) if shared else th
    else:
        if thresholds is not None:
            raise PolicyError(
                f"policy '{policy.name}' is a baseline without thresholds; got {thresholds!r}"
            )
        internal = policy.fixed_thresholds()
        shared = True
        per_exit = np.zeros((internal.shape[0], 0))

    scores = policy.scores(record)
    policy_correct = policy.predictions(record) == record.labels[:, None]
    raw = record.correct
    final_right = raw[:, -1][:, None]
    tables: dict[str, np.ndarray] = {
        "correct": policy_correct,
        "lost_early": final_right & ~policy_correct,
        "rescued": ~final_right & policy_correct,
    }
    plain = bool(getattr(policy, "runs_plain_network", False))
    for c in costs:
        paid = plain_paid(c) if plain else c.values
        tables[f"wasted:{c.name}"] = wasted_table(raw, c.values, paid)
        tables[f"wasted_frac:{c.name}"] = wasted_fraction_table(raw, c.values, paid)
    result = exit_sums(scores, internal, tables)
    return OperatingPoints(
        model=model if model is not None else record.model_key[:12],
        split=record.split,
        policy=policy.name,
        kind=policy.kind,
        confidence=policy.confidence_label,
        thresholds=per_exit,
        shared=shared,
        num_samples=record.num_samples,
        exit_counts=result.counts,
        correct_counts=result.sums["correct"],
        lost_early_counts=result.sums["lost_early"],
        rescued_counts=result.sums["rescued"],
        costs=costs,
        wasted_totals={c.name: result.sums[f"wasted:{c.name}"] for c in costs},
        overthinking=overthinking_rate(raw),
        final_accuracy=float(raw[:, -1].mean()),
        wasted_frac_totals={c.name: result.sums[f"wasted_frac:{c.name}"] for c in costs},
        plain_network=plain,
    )


def evaluate(
    record: ExitRecord,
    policy: Policy,
    thresholds: float | np.ndarray | Sequence[float] | None = None,
    costs: Sequence[CostVector] = (),
    *,
    model: str | None = None,
) -> pd.DataFrame:
    """The operating-point table of ``policy`` on ``record`` (see :func:`operating_points`)."""
    return operating_points(record, policy, thresholds, costs, model=model).to_frame()


def sweep(
    record: ExitRecord,
    policies: Sequence[Policy],
    costs: Sequence[CostVector] = (),
    *,
    num_thresholds: int = 101,
    model: str | None = None,
) -> pd.DataFrame:
    """Every policy over its default grid of shared thresholds (baselines: their one point), stacked."""
    frames = []
    for policy in policies:
        th = None
        if policy.uses_thresholds:
            policy.check_record(record)
            th = policy.default_thresholds(policy.scores(record), num_thresholds)
        frames.append(evaluate(record, policy, th, costs, model=model))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

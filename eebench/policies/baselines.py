"""Baselines: reference points for the policies, never an early-exit design of their own.

* ``oracle``: leaves at the first exit that classifies the sample correctly
  (the final exit when none does). It knows the label, so its accuracy is the
  upper bound any policy could reach on these exits.
* ``final-only``: no early exit: the plain network (every stage and only the
  final head; a cascade's last member alone, from the raw input). It pays the
  plain network's cost (``CostVector.plain``), not the cumulative cost of the
  final exit, so savings against it are not inflated by heads and members a
  network without exits would never run.
* ``aggregation``: every exit is computed and their softmax outputs are
  averaged (the "fake EENN"); it pays for every stage and every head, the
  cumulative cost of the final exit.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from eebench.policies.base import ExitDecider, ExitView, Policy, PolicyError, decider_thresholds
from eebench.policies.confidence import log_softmax64, predictions
from eebench.policies.registry import register_policy


class _NeverDecider(ExitDecider):
    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        return np.zeros(len(active), dtype=bool)


class OracleDecider(ExitDecider):
    """Leaves when the exit's prediction equals the row's label."""

    def __init__(self, labels: np.ndarray, num_exits: int | None) -> None:
        super().__init__(num_exits)
        self.labels = np.asarray(labels, dtype=np.int64)

    def _reset_state(self, batch_size: int) -> None:
        if batch_size > len(self.labels):
            raise PolicyError(
                f"oracle decider: batch of {batch_size} rows but only {len(self.labels)} labels given"
            )

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        return predictions(logits) == self.labels[active]


class AggregationDecider(ExitDecider):
    """Never leaves early; sums every exit's softmax per row and predicts the argmax of the sum."""

    def __init__(self, num_exits: int | None) -> None:
        super().__init__(num_exits)
        self._sum: np.ndarray | None = None

    def _reset_state(self, batch_size: int) -> None:
        self._sum = None
        self._rows = batch_size

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        p = np.exp(log_softmax64(logits))
        if self._sum is None:
            self._sum = np.zeros((self._rows, logits.shape[1]), dtype=np.float64)
        if exit_index == 0:
            self._sum[active] = p
        else:
            self._sum[active] = self._sum[active] + p
        return np.zeros(len(active), dtype=bool)

    def predict(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        if self._sum is None:
            raise PolicyError("aggregation decider: call decide() before predict() at each exit")
        return predictions(self._sum[np.asarray(active, dtype=np.int64)])


class _Baseline(Policy):
    kind = "baseline"
    uses_thresholds = False
    runs_plain_network: ClassVar[bool] = False
    """True when the baseline is the plain network: the evaluation charges it ``CostVector.plain``."""


@register_policy("oracle")
class OraclePolicy(_Baseline):
    """Baseline: leave at the first correct exit (knows the label; the accuracy upper bound)."""

    needs_labels = True

    def scores(self, record: ExitView) -> np.ndarray:
        if record.labels is None:
            raise PolicyError(
                "oracle: needs the labels of the record to find the first correct exit"
            )
        return (record.predictions == np.asarray(record.labels)[:, None]).astype(np.float64)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        _, num_exits = decider_thresholds(self, thresholds, num_exits)
        if labels is None:
            raise PolicyError(
                "oracle decider: pass labels=... (one per batch row); the oracle knows the answer"
            )
        return OracleDecider(labels, num_exits)


@register_policy("final-only")
class FinalOnlyPolicy(_Baseline):
    """Baseline: no early exit; the plain network (all stages + final head, a cascade's last
    member alone) answers every sample and is charged exactly that."""

    runs_plain_network = True

    def scores(self, record: ExitView) -> np.ndarray:
        return np.full(record.logits.shape[:2], -np.inf)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        _, num_exits = decider_thresholds(self, thresholds, num_exits)
        return _NeverDecider(num_exits)


@register_policy("aggregation")
class AggregationPolicy(_Baseline):
    """Baseline ("fake EENN"): compute every exit and average their softmax; costs the final exit."""

    def scores(self, record: ExitView) -> np.ndarray:
        return np.full(record.logits.shape[:2], -np.inf)

    def predictions(self, record: ExitView) -> np.ndarray:
        """At exit ``i``: argmax of the summed softmax of exits ``0..i`` (only the final one is used)."""
        summed = np.cumsum(np.exp(record.log_probs), axis=1)
        return predictions(summed).astype(np.int64)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        _, num_exits = decider_thresholds(self, thresholds, num_exits)
        return AggregationDecider(num_exits)

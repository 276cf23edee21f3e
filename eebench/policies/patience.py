"""Patience-based early exit (PABEE, Zhou et al. 2020).

A counter per sample counts how many consecutive exits have repeated the
previous exit's prediction; the sample leaves at exit ``i`` once the counter
reaches the patience ``k``, i.e. when the predictions of exits ``i-k .. i``
all agree. ``k = 0`` leaves at exit 0; a ``k`` of at least ``num_exits - 1``
never leaves early. The counter is the policy's score, so patience shares the
``score >= threshold`` machinery (shared or per-exit ``k``) with every policy.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from eebench.policies.base import (
    ExitDecider,
    ExitView,
    Policy,
    decider_thresholds,
    threshold_at,
    threshold_table,
)
from eebench.policies.confidence import predictions
from eebench.policies.registry import register_policy


def patience_counters(preds: np.ndarray) -> np.ndarray:
    """``(N, E)`` PABEE counters: consecutive repeats of the prediction up to each exit (0 at exit 0)."""
    counters = np.zeros(preds.shape, dtype=np.float64)
    for i in range(1, preds.shape[1]):
        same = preds[:, i] == preds[:, i - 1]
        counters[:, i] = np.where(same, counters[:, i - 1] + 1.0, 0.0)
    return counters


class PatienceDecider(ExitDecider):
    """Keeps each row's previous prediction and counter across exits."""

    def __init__(self, thresholds: np.ndarray | float, num_exits: int | None) -> None:
        super().__init__(num_exits)
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._prev = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.float64)

    def _reset_state(self, batch_size: int) -> None:
        if self._prev.shape[0] == batch_size:  # the same batch size again (every per-sample run)
            self._prev.fill(-1)
            self._count.fill(0.0)
            return
        self._prev = np.full(batch_size, -1, dtype=np.int64)
        self._count = np.zeros(batch_size, dtype=np.float64)

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        pred = predictions(logits)
        if exit_index == 0:
            count = np.zeros(len(active), dtype=np.float64)
        else:
            count = np.where(pred == self._prev[active], self._count[active] + 1.0, 0.0)
        self._prev[active] = pred
        self._count[active] = count
        return count >= threshold_at(self._theta, exit_index)

    def _fire_one(self, exit_index: int, row: int, values: list[float]) -> bool | None:
        """Batch 1 on Python floats: the first largest logit is numpy's argmax, and the counter
        is the same float64 arithmetic, so the decision is exactly :meth:`_fire`'s."""
        pred = values.index(max(values))
        if exit_index == 0:
            count = 0.0
        elif pred == self._prev[row]:
            count = float(self._count[row]) + 1.0
        else:
            count = 0.0
        self._prev[row] = pred
        self._count[row] = count
        return count >= threshold_at(self._theta, exit_index)


@register_policy("patience")
class PatiencePolicy(Policy):
    """Leave once the prediction has stayed the same for k consecutive exits (PABEE)."""

    threshold_meaning = (
        "patience k: exits i-k..i must agree (shared or per exit; 0 = leave at exit 0)"
    )

    @property
    def confidence_label(self) -> str:
        return "prediction-agreement"

    def scores(self, record: ExitView) -> np.ndarray:
        return patience_counters(record.predictions)

    calibrates_on_grid: ClassVar[bool] = True
    """Patience values are whole counts a suite lists (its grid): calibration picks among them,
    never a value in between, ``0`` or ``inf`` that the suite did not offer."""

    def default_thresholds(self, scores: np.ndarray, num: int = 101) -> np.ndarray:
        return np.arange(scores.shape[1], dtype=np.float64)

    def candidate_thresholds(self, scores: np.ndarray) -> np.ndarray:
        """Every patience ``k = 0 .. E-1`` (``E-1``: never leave early), as counts, not ``inf``."""
        return self.default_thresholds(scores)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        th, num_exits = decider_thresholds(self, thresholds, num_exits)
        return PatienceDecider(th, num_exits)  # type: ignore[arg-type]

"""Served answers against the exit record's offline decisions for the same samples.

"Record once, evaluate everywhere" holds under load too: whatever the strategy, batch or
arrival order, each served sample must leave at the exit, and with the class, that the
vectorised evaluation of the exit record gives for the same policy and thresholds (the plain
network: the final exit's class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def offline_decisions(
    policy: Any, record: Any, thresholds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(exits, predictions)`` per sample of ``record`` under ``policy`` at ``thresholds``;
    ``policy=None``: the plain network (every sample at the final exit, its class)."""
    from eebench.evaluation import exit_indices

    n, last = record.num_samples, record.num_exits - 1
    if policy is None:
        return np.full(n, last, dtype=np.int64), np.asarray(record.predictions[:, last])
    th = np.asarray(thresholds, dtype=float)
    exits = np.asarray(exit_indices(policy.scores(record), th[None, ...]))[0].astype(np.int64)
    preds = np.asarray(policy.predictions(record))[np.arange(n), exits].astype(np.int64)
    return exits, preds


@dataclass(frozen=True)
class AnswerCheck:
    """How the served answers compare with the offline decisions (over the samples served)."""

    served_samples: int
    exit_agreement: float
    answer_agreement: float

    @property
    def equal(self) -> bool:
        return (
            self.served_samples > 0 and self.exit_agreement == 1.0 and self.answer_agreement == 1.0
        )


def check_answers(
    served_exits: np.ndarray,
    served_predictions: np.ndarray,
    expected_exits: np.ndarray,
    expected_predictions: np.ndarray,
) -> AnswerCheck:
    """Agreement of served exits and classes with the expected ones (-1 = not served)."""
    asked = np.asarray(served_predictions) >= 0
    k = int(asked.sum())
    if k == 0:
        return AnswerCheck(0, float("nan"), float("nan"))
    return AnswerCheck(
        k,
        float((np.asarray(served_exits)[asked] == np.asarray(expected_exits)[asked]).mean()),
        float(
            (
                np.asarray(served_predictions)[asked] == np.asarray(expected_predictions)[asked]
            ).mean()
        ),
    )

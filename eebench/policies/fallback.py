"""What a sample answers when no exit's decision fires: Shallow-Deep Networks' fallback.

A threshold policy sends a sample that no early exit is confident enough about to the final
exit, and by default it answers with the final exit's class (``fallback: final``). Shallow-Deep
Networks (Kaya et al. 2019) answer instead with the class of the *most confident* exit among all
of them, the final one included (``fallback: most-confident``; the earliest exit wins a tie, as
``argmax`` does). The sample has still run every stage: it is counted at the final exit and pays
the final exit's cumulative cost; only its answer changes.

The vectorised view (:func:`most_confident_predictions`) and the online decider
(:class:`MostConfidentFallbackDecider`) compute the same float64 confidences, so the executor
and the evaluation give every sample the same answer.
"""

from __future__ import annotations

import numpy as np

from eebench.policies.base import ExitDecider, threshold_at, threshold_table
from eebench.policies.confidence import CONFIDENCE, log_softmax64, predictions

FALLBACKS = ("final", "most-confident")


def most_confident_predictions(scores: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """``(N, E)`` predictions whose final column is the class of each sample's most confident exit.

    ``scores`` are the confidences ``(N, E)``; the earliest exit wins a tie. The other columns
    (the answer of a sample leaving early) are unchanged.
    """
    out = np.array(preds, dtype=np.int64, copy=True)
    if out.shape[0]:
        best = np.asarray(scores).argmax(axis=1)
        out[:, -1] = out[np.arange(out.shape[0]), best]
    return out


class MostConfidentFallbackDecider(ExitDecider):
    """Leave when the exit's confidence reaches its threshold; a row that reaches the final exit
    answers with its most confident exit's class.

    Per row it keeps the highest confidence seen at the exits it passed and that exit's class.
    The executor asks :meth:`final_predictions` at the final exit (``overrides_final``); a
    caller that drives :meth:`decide` through the final exit gets the same from :meth:`predict`.
    """

    overrides_final = True

    def __init__(self, measure: str, thresholds: np.ndarray | float, num_exits: int | None) -> None:
        super().__init__(num_exits)
        self.measure = CONFIDENCE.get(measure)
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._best_conf = np.zeros(0, dtype=np.float64)
        self._best_pred = np.zeros(0, dtype=np.int64)

    def _reset_state(self, batch_size: int) -> None:
        self._best_conf = np.full(batch_size, -np.inf)
        self._best_pred = np.zeros(batch_size, dtype=np.int64)

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        conf = self.measure(log_softmax64(logits))
        if self.num_exits is None or exit_index < self.num_exits - 1:
            better = conf > self._best_conf[active]  # strictly: the earliest exit keeps a tie
            rows = active[better]
            self._best_conf[rows] = conf[better]
            self._best_pred[rows] = predictions(logits)[better]
        return conf >= threshold_at(self._theta, exit_index)

    def predict(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        if self.num_exits is not None and exit_index == self.num_exits - 1:
            return self.final_predictions(logits, active)
        return predictions(logits)

    def final_predictions(self, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The answer of each active row at the final exit: the class of its most confident exit."""
        logits = np.asarray(logits)
        active = np.asarray(active, dtype=np.int64)
        conf = self.measure(log_softmax64(logits))
        own = predictions(logits).astype(np.int64)
        return np.where(conf > self._best_conf[active], own, self._best_pred[active])

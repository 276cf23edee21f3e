"""Threshold policies: ``D_i(x) = conf_i(x) >= theta_i``; the final exit takes what is left.

One shared threshold or one per exit. The IDK cascade (:mod:`eebench.policies.idk`) makes
the same decision over the members of a cascade and chooses its thresholds its own way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eebench.policies.base import (
    ExitDecider,
    ExitView,
    Policy,
    PolicyError,
    decider_thresholds,
    threshold_at,
    threshold_table,
)
from eebench.policies.confidence import CONFIDENCE, log_softmax64
from eebench.policies.fallback import (
    FALLBACKS,
    MostConfidentFallbackDecider,
    most_confident_predictions,
)
from eebench.policies.registry import register_policy
from eebench.policies.row_confidence import ROW_TOLERANCE, row_kernel


class ConfidenceDecider(ExitDecider):
    """Leave when the exit's confidence reaches its threshold."""

    def __init__(self, measure: str, thresholds: np.ndarray | float, num_exits: int | None) -> None:
        super().__init__(num_exits)
        self.measure = CONFIDENCE.get(measure)
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._row = row_kernel(self.measure)

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        conf = self.measure(log_softmax64(logits))
        return conf >= threshold_at(self._theta, exit_index)

    def _fire_one(self, exit_index: int, row: int, values: list[float]) -> bool | None:
        """Batch 1 on Python floats; within ``ROW_TOLERANCE`` of the threshold :meth:`_fire`
        decides on the exact vectorised confidence (see :mod:`eebench.policies.row_confidence`)."""
        kernel = self._row
        conf = kernel(values) if kernel is not None else None
        if conf is None:
            return None
        theta = threshold_at(self._theta, exit_index)
        if abs(conf - theta) <= ROW_TOLERANCE:
            return None
        return conf >= theta


@register_policy("threshold")
class ThresholdPolicy(Policy):
    """Leave at the first exit whose confidence measure reaches its threshold.

    ``fallback`` is what a sample answers when no early exit fires: ``final`` (the final exit's
    class) or ``most-confident`` (Shallow-Deep Networks: the class of its most confident exit;
    see :mod:`eebench.policies.fallback`). Either way it ran every stage.
    """

    threshold_meaning = "minimum confidence to leave (shared or one per exit), in [0, 1]"

    def __init__(self, confidence: str = "max_softmax", fallback: str = "final") -> None:
        CONFIDENCE.get(confidence)  # unknown names fail here, with a did-you-mean
        if fallback not in FALLBACKS:
            raise PolicyError(
                f"policy '{self.name}': unknown fallback {fallback!r}; expected one of "
                f"{', '.join(FALLBACKS)} (what a sample answers when no exit fires)"
            )
        self.confidence = confidence
        self.fallback = fallback

    @property
    def confidence_label(self) -> str:
        if self.fallback == "final":
            return self.confidence
        return f"{self.confidence}+{self.fallback}"

    def params(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "fallback": self.fallback}

    def scores(self, record: ExitView) -> np.ndarray:
        kept = getattr(record, "confidence", None)  # an ExitRecord keeps each measure it computed
        if callable(kept):
            return kept(self.confidence)
        return CONFIDENCE.get(self.confidence)(record.log_probs)

    def predictions(self, record: ExitView) -> np.ndarray:
        if self.fallback == "final":
            return record.predictions
        return most_confident_predictions(self.scores(record), record.predictions)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        th, num_exits = decider_thresholds(self, thresholds, num_exits)
        if self.fallback == "most-confident":
            return MostConfidentFallbackDecider(self.confidence, th, num_exits)
        return ConfidenceDecider(self.confidence, th, num_exits)

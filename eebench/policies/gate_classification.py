"""Gate-Classification thresholds: per-exit thresholds defined automatically from a precision target.

The lecture's Gate-Classification networks model an exit's confidence as the
posterior probability of its predicted class (the max softmax) and leave as
soon as it is larger than a threshold *defined automatically* for that exit.
eebench defines it from the validation record: for a precision target ``p``,
exit ``i``'s threshold is the lowest one at which the exit's precision on val
reaches ``p``, where the precision of a threshold ``t`` is the fraction of the
val samples with confidence ``>= t`` that exit ``i`` classifies correctly (the
exit judged on its own, over every val sample). So each exit answers the
largest share of samples it can while its precision on val meets the target.

Only the val samples a threshold lets through matter, so thresholds are placed
on the *edges* between distinct val confidences ``v_0 < v_1 < ...``: edge
``e_0 = -inf`` lets every sample through, edge ``e_k`` (midway between
``v_(k-1)`` and ``v_k``) those with confidence ``>= v_k``. Exit ``i``'s
threshold for target ``p`` is the lowest edge whose precision reaches ``p``
(``inf``, never, if none does). Midway edges keep every threshold away from the
val confidences themselves, so a tiny change of a logit (another backend,
another batch size) does not flip a decision on a sample of val.

Sweeping the target like a threshold. The decision ``conf_i >= theta_i(p)``
holds exactly when some edge ``e_k <= conf_i`` has precision ``>= p``, i.e.
when the policy's score

    ``score_i(conf) = max { precision_i(e_k) : e_k <= conf }``

reaches ``p``. The score is a fitted, non-decreasing step function of the
confidence, so the target is the policy's threshold: the sweep, the
calibrations (a target accuracy, a budget) and the executor treat it exactly
as a confidence threshold (one shared target, or one per exit), and a higher
target never leaves earlier. Target 0 leaves every sample at exit 0.

Nothing is fitted on test: :meth:`GateClassificationPolicy.fit` reads the
validation record only. As for the learned gate, the val sweep and every
target chosen on val use out-of-fold scores
(:meth:`GateClassificationPolicy.for_calibration`): each val fold is scored
by thresholds defined on the other folds, so a target is never chosen on the
rows its thresholds were defined on. Test records and the executor use the
thresholds defined on all of val.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from eebench.policies.base import (
    ExitDecider,
    ExitView,
    PolicyError,
    threshold_at,
    threshold_table,
)
from eebench.policies.confidence import CONFIDENCE, log_softmax64
from eebench.policies.crossfit import CrossFittedView, CrossFittingPolicy, FoldFit
from eebench.policies.registry import register_policy
from eebench.policies.row_confidence import ROW_TOLERANCE, row_kernel


def precision_envelope(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted score of one exit from its val confidences ``(N,)`` and correctness ``(N,)``.

    Returns ``(edges, envelope)``: the threshold edges ascending (``-inf``, then
    midway between consecutive distinct confidences) and, at each, the best
    precision of any edge at or below it (the running maximum, from the lowest
    edge up, of the precision of the val samples the edge lets through).
    """
    conf = np.asarray(conf, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    values, inverse = np.unique(conf, return_inverse=True)
    count = np.bincount(inverse, minlength=values.size).astype(np.float64)
    hits = np.bincount(inverse, weights=right, minlength=values.size)
    # samples at or above each value: suffix sums over the ascending values
    count_ge = np.cumsum(count[::-1])[::-1]
    hits_ge = np.cumsum(hits[::-1])[::-1]
    precision = hits_ge / count_ge
    mid = values[:-1] + (values[1:] - values[:-1]) / 2.0
    # adjacent floats: the midpoint may round onto the lower value; the upper one is the edge then
    mid = np.where(mid > values[:-1], mid, values[1:])
    edges = np.concatenate([[-np.inf], mid])
    return edges, np.maximum.accumulate(precision)


def envelope_scores(edges: np.ndarray, envelope: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """``score(conf)``: the envelope at the largest edge ``<= conf``."""
    return envelope[np.searchsorted(edges, conf, side="right") - 1]


def exit_threshold(edges: np.ndarray, envelope: np.ndarray, target: float) -> float:
    """``theta_i(p)``: the lowest edge whose precision reaches ``target`` (``inf``: none does)."""
    reached = np.flatnonzero(envelope >= target)
    return float(edges[reached[0]]) if reached.size else float("inf")


@register_policy("gate-classification")
class GateClassificationPolicy(CrossFittingPolicy):
    """Gate-Classification: per-exit posterior thresholds defined on val by a precision target.

    A sample leaves once the posterior of its predicted class passes its exit's threshold.

    The threshold swept is a precision target ``p``: exit ``i`` fires above the
    lowest threshold at which its val precision reaches ``p`` (see the module
    docstring). ``confidence`` is the posterior measure (``max_softmax``, the
    lecture's; any registered measure works); ``folds`` and ``seed`` make the
    out-of-fold scores a calibration on val uses.
    """

    threshold_meaning = (
        "precision target p in [0, 1]: exit i fires at the lowest confidence whose precision on "
        "val reaches p (shared or one per exit; 0 leaves at exit 0)"
    )
    not_fitted_hint = (
        "its thresholds are defined on a validation record; call policy.fit(val_record) before "
        "evaluating or deciding"
    )

    def __init__(self, confidence: str = "max_softmax", folds: int = 5, seed: int = 0) -> None:
        CONFIDENCE.get(confidence)  # unknown names fail here, with a did-you-mean
        self._init_cross_fitting(f"policy '{self.name}'", folds, seed)
        self.confidence = confidence
        self._tables: list[tuple[np.ndarray, np.ndarray]] | None = None

    # ----------------------------------------------------------------- identity
    @property
    def confidence_label(self) -> str:
        return f"precision({self.confidence})"

    def params(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "folds": self.folds, "seed": self.seed}

    @property
    def fitted(self) -> bool:
        return self._tables is not None

    @property
    def num_exits(self) -> int | None:
        return None if self._tables is None else len(self._tables)

    # ----------------------------------------------------------------- fitting
    def _confidences(self, record: ExitView) -> np.ndarray:
        kept = getattr(record, "confidence", None)  # an ExitRecord keeps each measure it computed
        if callable(kept):
            return np.asarray(kept(self.confidence), dtype=np.float64)
        return CONFIDENCE.get(self.confidence)(record.log_probs)

    def _labelled(self, record: ExitView, what: str, least: int) -> tuple[np.ndarray, np.ndarray]:
        if record.labels is None:
            raise PolicyError(f"{self.name} {what}: the validation record has no labels")
        if record.logits.shape[0] < least:
            raise PolicyError(
                f"{self.name} {what}: needs at least {least} validation samples, got "
                f"{record.logits.shape[0]}"
            )
        correct = record.predictions == np.asarray(record.labels)[:, None]
        return self._confidences(record), correct

    @staticmethod
    def _tables_of(conf: np.ndarray, correct: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [precision_envelope(conf[:, i], correct[:, i]) for i in range(conf.shape[1])]

    @staticmethod
    def _scores_of(tables: list[tuple[np.ndarray, np.ndarray]], conf: np.ndarray) -> np.ndarray:
        return np.column_stack(
            [envelope_scores(v, env, conf[:, i]) for i, (v, env) in enumerate(tables)]
        )

    def fit(self, record: ExitView) -> GateClassificationPolicy:
        """Define every exit's thresholds (its precision envelope) on a labelled validation record."""
        conf, correct = self._labelled(record, "fit", least=1)
        self._tables = self._tables_of(conf, correct)
        self._fitted_record(record)
        return self

    def thresholds_for(self, target: float | np.ndarray) -> np.ndarray:
        """The confidence threshold of every exit for a precision target (one shared or one per
        exit): what the fitted policy deploys, as a vector of ``num_exits`` (``inf``: never)."""
        tables = self._require(None)
        p = np.broadcast_to(np.asarray(target, dtype=np.float64), (len(tables),))
        return np.array([exit_threshold(v, env, float(t)) for (v, env), t in zip(tables, p)])

    def _fold_fit(self, record: ExitView) -> FoldFit:
        """Per fold: the scores of thresholds defined on the other folds."""
        conf, correct = self._labelled(record, "cross-fitting", least=2)

        def fit_and_score(held: np.ndarray) -> np.ndarray:
            return self._scores_of(self._tables_of(conf[~held], correct[~held]), conf[held])

        return fit_and_score

    def _require(self, num_exits: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        self._check_exits(num_exits)
        return self._tables  # type: ignore[return-value]  # set whenever num_exits is

    # ----------------------------------------------------------------- vectorised and online
    def scores(self, record: ExitView) -> np.ndarray:
        tables = self._require(record.logits.shape[1])
        return self._scores_of(tables, self._confidences(record))

    def exit_score(self, exit_index: int, log_probs: np.ndarray) -> np.ndarray:
        """``(B,)`` score at one exit from its float64 log-softmax ``(B, C)`` (the decider's path)."""
        values, envelope = self._require(None)[exit_index]
        return envelope_scores(values, envelope, CONFIDENCE.get(self.confidence)(log_probs))

    def _decider(self, thresholds: np.ndarray | float, num_exits: int) -> ExitDecider:
        return GateClassificationDecider(self, thresholds, num_exits)


class GateClassificationDecider(ExitDecider):
    """Leave at exit ``i`` when the fitted score of the row's confidence reaches the target
    ``p_i``: the same float64 confidence and table look-up as the vectorised scores."""

    def __init__(
        self,
        policy: GateClassificationPolicy,
        thresholds: np.ndarray | float,
        num_exits: int | None,
    ) -> None:
        super().__init__(num_exits)
        self.policy = policy
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._row = row_kernel(CONFIDENCE.get(policy.confidence))
        tables = policy._require(None)
        self._edges = [edges.tolist() for edges, _ in tables]
        self._envelope = [envelope.tolist() for _, envelope in tables]

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        score = self.policy.exit_score(exit_index, log_softmax64(logits))
        return score >= threshold_at(self._theta, exit_index)

    def _fire_one(self, exit_index: int, row: int, values: list[float]) -> bool | None:
        """Batch 1 on Python floats: within ``ROW_TOLERANCE`` of an edge, :meth:`_fire` decides on
        the exact vectorised confidence (see :mod:`eebench.policies.row_confidence`)."""
        kernel = self._row
        conf = kernel(values) if kernel is not None else None
        if conf is None or exit_index >= len(self._edges):
            return None
        edges = self._edges[exit_index]
        k = bisect_right(edges, conf) - 1
        if conf - edges[k] <= ROW_TOLERANCE or (
            k + 1 < len(edges) and edges[k + 1] - conf <= ROW_TOLERANCE
        ):
            return None
        return self._envelope[exit_index][k] >= threshold_at(self._theta, exit_index)


CrossFittedGateClassification = CrossFittedView
"""Gate-classification's calibration view (:meth:`GateClassificationPolicy.for_calibration`)."""

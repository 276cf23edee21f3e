"""Cross-fitting: choosing thresholds on the very validation record a policy was fitted on.

A policy fitted on val (the learned gate, gate-classification's precision tables, the learned
trade-off policies) scores the rows it was fitted on optimistically: thresholds chosen on those
scores would grade the fit's own homework. So such a policy is a :class:`CrossFittingPolicy`: it
remembers which record it was fitted on (a digest of the logits), and
:meth:`~CrossFittingPolicy.for_calibration` on that record returns a :class:`CrossFittedView`
whose scores there are out of fold: the rows are dealt into ``folds`` deterministic folds (a
permutation seeded by ``seed``) and each fold is scored by a fit, by the same procedure, on the
other folds only. Every other record (test, a deployment), and every online decision, is
answered by the policy fitted on all of val: that one is deployed, saved and validated, and it
saw the most data. The calibration functions (``eebench.evaluation.calibration``) and the suite
runner ask for this view themselves.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from eebench.policies.base import (
    ExitDecider,
    ExitView,
    NotFittedError,
    Policy,
    PolicyError,
    decider_thresholds,
)

FoldFit = Callable[[np.ndarray], np.ndarray]
"""Given the boolean mask ``(N,)`` of one held-out fold, fit on the other rows and return the
scores ``(held rows, E)`` of the held-out ones."""


def logits_fingerprint(logits: np.ndarray) -> str:
    """A digest of a record's logits (shape, dtype and bytes): which rows a policy was fitted on."""
    a = np.ascontiguousarray(logits)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def cross_fitting_folds(num_samples: int, folds: int, seed: int) -> np.ndarray:
    """Fold of every row, ``(num_samples,)`` in ``[0, min(folds, num_samples))``: a seeded
    permutation dealt round-robin, so the folds differ in size by at most one and depend on
    nothing but the number of rows and the seed."""
    k = max(1, min(int(folds), int(num_samples)))
    order = np.random.default_rng(seed).permutation(num_samples)
    fold = np.empty(num_samples, dtype=np.int64)
    fold[order] = np.arange(num_samples) % k
    return fold


def out_of_fold(
    shape: tuple[int, int], folds: int, seed: int, fit_and_score: FoldFit
) -> np.ndarray:
    """``(N, E)`` float64 scores of ``shape``: the rows of each of the :func:`cross_fitting_folds`
    scored by ``fit_and_score`` (a fit on the other folds only)."""
    num_samples, num_exits = shape
    fold = cross_fitting_folds(num_samples, folds, seed)
    scores = np.zeros((num_samples, num_exits), dtype=np.float64)
    for f in range(int(fold.max()) + 1):
        held = fold == f
        scores[held] = fit_and_score(held)
    return scores


def check_cross_fitting(what: str, folds: Any, seed: Any) -> tuple[int, int]:
    """``(folds, seed)`` as ints, or a :class:`PolicyError` that starts with ``what`` (the
    policy's name as its messages give it)."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise PolicyError(
            f"{what}: folds (cross-fitting folds of the validation record) must be an integer "
            f">= 2, got {folds!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PolicyError(f"{what}: seed must be an integer >= 0, got {seed!r}")
    return int(folds), int(seed)


class CrossFittingPolicy(Policy):
    """A policy fitted on a labelled validation record whose thresholds are chosen there out of fold.

    Subclasses call :meth:`_init_cross_fitting` from ``__init__`` and :meth:`_fitted_record` from
    ``fit``, and implement :meth:`_fold_fit` (the per-fold fit and score of the same procedure
    as ``fit``) and :meth:`_decider` (the online decider of the fitted policy). A policy is
    usable on a record, and gives a decider, only once fitted and for the record's number of
    exits (:meth:`check_record`).
    """

    not_fitted_hint: ClassVar[str] = (
        "not fitted; call policy.fit(val_record) before evaluating or deciding"
    )
    """What the error of a policy used before its fit says after the policy's name."""

    folds: int
    seed: int
    _fitted_on: str | None  # logits fingerprint of the record fitted on
    _oof: tuple[str, np.ndarray] | None  # (fingerprint, out-of-fold scores)

    @property
    @abstractmethod
    def num_exits(self) -> int | None:
        """Exits the policy was fitted for (None before a fit)."""

    def _init_cross_fitting(self, what: str, folds: Any, seed: Any) -> None:
        """Validate and keep the cross-fitting settings; nothing fitted yet."""
        self.folds, self.seed = check_cross_fitting(what, folds, seed)
        self._fitted_on = None
        self._oof = None

    def _fitted_record(self, record: ExitView | None) -> None:
        """Remember the record just fitted on (None: parameters from elsewhere, rows unknown);
        forget the out-of-fold scores of an earlier fit."""
        self._fitted_on = None if record is None else logits_fingerprint(record.logits)
        self._oof = None

    def _check_exits(self, num_exits: int | None) -> None:
        """A :class:`NotFittedError` before a fit; a :class:`PolicyError` when ``num_exits`` (None:
        any) is not the number of exits fitted for."""
        fitted = self.num_exits
        if fitted is None:
            raise NotFittedError(f"{self.name}: {self.not_fitted_hint}")
        if num_exits is not None and num_exits != fitted:
            raise PolicyError(
                f"{self.name}: fitted for {fitted} exits but used on a model with {num_exits}; "
                "refit on a validation record of this model"
            )

    def check_record(self, record: ExitView) -> None:
        self._check_exits(record.logits.shape[1])

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        th, num_exits = decider_thresholds(self, thresholds, num_exits)
        self._check_exits(num_exits)
        return self._decider(th, num_exits if num_exits is not None else self.num_exits)  # type: ignore[arg-type]

    @abstractmethod
    def _decider(self, thresholds: np.ndarray | float, num_exits: int) -> ExitDecider:
        """The fitted policy's online decider (thresholds checked, exits matching the fit)."""

    @abstractmethod
    def _fold_fit(self, record: ExitView) -> FoldFit:
        """Check that ``record`` can be cross-fitted (labels, at least 2 rows) and return the
        function that fits on all rows but a held-out fold and scores that fold."""

    def out_of_fold_scores(self, record: ExitView) -> np.ndarray:
        """``(N, E)`` scores of the record the policy was fitted on, each row scored by a fit (by
        the same procedure) on the other ``folds - 1`` folds only.

        Folds come from a permutation of the row indices seeded by ``seed``: deterministic, and
        independent of the labels and the logits. Fewer rows than folds: one row per fold. The
        scores are computed once per fitted record.
        """
        fingerprint = logits_fingerprint(record.logits)
        if self._oof is not None and self._oof[0] == fingerprint:
            return self._oof[1].copy()
        scores = out_of_fold(
            tuple(record.logits.shape[:2]), self.folds, self.seed, self._fold_fit(record)
        )
        self._oof = (fingerprint, scores)
        return scores.copy()

    def for_calibration(self, record: ExitView) -> Policy:
        """On the record it was fitted on, a :class:`CrossFittedView` (every row scored out of
        fold); on any other record, itself."""
        self.check_record(record)
        if self._fitted_on is None or logits_fingerprint(record.logits) != self._fitted_on:
            return self
        return self._calibration_view(record, self.out_of_fold_scores(record))

    def _calibration_view(self, record: ExitView, oof: np.ndarray) -> CrossFittedView:
        return CrossFittedView(self, record, oof)


class CrossFittedView(Policy):
    """A fitted policy as thresholds are chosen on the record it was fitted on.

    On that record (recognised by its logits) every row gets its out-of-fold score; on any other
    record, and in every online decision, the policy fitted on the whole record answers. So a
    calibration on val picks thresholds from scores no fold fit saw the label of, and the same
    thresholds are then reported on test and run by the executor with the deployed policy. The
    vectorised scores of this view on the fitted record are, by design, not what the deployed
    policy's decider says on those rows; on every other record they are identical.
    """

    def __init__(self, policy: CrossFittingPolicy, record: ExitView, oof: np.ndarray) -> None:
        self.policy = policy
        self.name = policy.name  # type: ignore[misc]
        self.kind = policy.kind  # type: ignore[misc]
        self.threshold_meaning = policy.threshold_meaning  # type: ignore[misc]
        self.uses_thresholds = policy.uses_thresholds  # type: ignore[misc]
        self.needs_labels = policy.needs_labels  # type: ignore[misc]
        self._logits = record.logits
        self._fingerprint = logits_fingerprint(record.logits)
        self._oof = np.asarray(oof, dtype=np.float64)
        if self._oof.shape != tuple(record.logits.shape[:2]):
            raise PolicyError(
                f"cross-fitted {policy.name}: out-of-fold scores of shape {self._oof.shape} do "
                f"not match the record's (samples, exits) {tuple(record.logits.shape[:2])}"
            )

    @property
    def confidence_label(self) -> str:
        return self.policy.confidence_label

    def params(self) -> dict[str, Any]:
        return self.policy.params()

    @property
    def fitted(self) -> bool:
        return True

    @property
    def num_exits(self) -> int | None:
        return self.policy.num_exits

    def is_fitted_record(self, record: ExitView) -> bool:
        """Whether ``record`` holds the rows the policy was fitted on (same logits)."""
        logits = record.logits
        if logits is self._logits:
            return True
        return (
            logits.shape == self._logits.shape and logits_fingerprint(logits) == self._fingerprint
        )

    def scores(self, record: ExitView) -> np.ndarray:
        self.policy.check_record(record)
        if self.is_fitted_record(record):
            return self._oof.copy()
        return self.policy.scores(record)

    def check_record(self, record: ExitView) -> None:
        self.policy.check_record(record)

    def fit(self, record: ExitView) -> Policy:
        """Refit the underlying policy on ``record`` (returns the policy, not a view)."""
        return self.policy.fit(record)

    def for_calibration(self, record: ExitView) -> Policy:
        return self if self.is_fitted_record(record) else self.policy.for_calibration(record)

    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        """The deployed policy's decider (fitted on the whole record)."""
        return self.policy.decider(thresholds, num_exits=num_exits, labels=labels)

"""Learned gate: per exit a logistic regression that predicts "this exit's prediction is correct".

Each exit gets its own small classifier over the exit's confidence features
(max softmax, score margin, entropy confidence), fitted on the validation
record; the sample leaves when the predicted probability of being correct
reaches the threshold. The exit index enters through the per-exit fit (one
set of weights per exit). The fitted parameters are plain arrays
(:meth:`LearnedGatePolicy.state_dict`), applied by the same float64 arithmetic
in the vectorised scores and in the online decider, so both agree exactly.

Which samples train exit ``i``'s gate. A sample only matters to exit ``i``
if it gets there, and whether it does depends on thresholds that are chosen
after the fit. The gates are therefore fitted in exit order, and exit ``i``
weighs each sample by the probability that it reaches exit ``i`` when the
shared threshold is drawn uniformly from [0, 1] (the range the threshold sweep
covers): the sample leaves at the first exit ``j`` whose gate says
``p_j >= theta``, so it reaches exit ``i`` with probability
``1 - max_{j<i} p_j``, ``p_j`` from the gates already fitted. Exit 0 weighs
every sample 1; a sample an earlier gate is sure of hardly trains the later
ones. The weights are scaled to mean 1, so ``regularization`` means the same
at every exit.

Fitting and calibrating on disjoint data (cross-fitting). Thresholds chosen
on the rows that fitted the gate would grade the gate's own homework: its
in-sample probabilities are optimistic. :meth:`LearnedGatePolicy.for_calibration`
on the record the gate was fitted on returns a cross-fitted view
(:class:`~eebench.policies.crossfit.CrossFittedView`) whose scores on that
record are out of fold: the rows are split into ``folds`` deterministic folds
(a permutation seeded by ``seed``), and each fold is scored by a gate fitted,
by the same procedure, on the other folds only. Every
other record (test, a deployment) is scored by the gate fitted on all of val,
and so is every online decision: that gate is the one deployed, saved and
validated, it saw the most data, and it is one logistic regression per exit
whose scores the executor reproduces exactly (an average of the fold gates'
probabilities is not a logistic regression and would be a second model to
ship). The calibration functions (``eebench.evaluation.calibration``) and the
suite runner ask for this view themselves.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eebench.errors import ResultsError
from eebench.policies.base import (
    ExitDecider,
    ExitView,
    PolicyError,
    threshold_at,
    threshold_table,
)
from eebench.policies.confidence import CONFIDENCE, log_softmax64
from eebench.policies.crossfit import CrossFittedView, CrossFittingPolicy, FoldFit
from eebench.policies.crossfit import cross_fitting_folds as cross_fitting_folds  # re-exported
from eebench.policies.registry import register_policy
from eebench.policies.row_confidence import FROM_PARTS, ROW_TOLERANCE, row_softmax_parts

GATE_FEATURES = ("max_softmax", "score_margin", "entropy")
_RATE_CLIP = 1e-6


def gate_features(log_probs: np.ndarray, features: tuple[str, ...] = GATE_FEATURES) -> np.ndarray:
    """Confidence features over the last axis of log-probabilities: shape ``(..., len(features))``."""
    return np.stack([CONFIDENCE.get(f)(log_probs) for f in features], axis=-1)


def _gate_logit(
    feats: Sequence[np.ndarray],
    intercept: np.ndarray | float,
    coef: Sequence[np.ndarray | float],
    mean: Sequence[np.ndarray | float],
    scale: Sequence[np.ndarray | float],
) -> np.ndarray:
    """``b + sum_k w_k (f_k - mu_k) / s_k``, feature by feature: elementwise, so every batch
    shape rounds the same way. ``feats[k]`` is feature ``k`` over ``(...,)``; ``coef[k]``,
    ``mean[k]`` and ``scale[k]`` are its parameters (per-exit arrays that broadcast against
    ``(...,)`` for a record, plain floats for one exit in the decider: the same float64 values)."""
    z = np.asarray(intercept, dtype=np.float64)
    for f, w, mu, s in zip(feats, coef, mean, scale, strict=True):
        z = z + w * ((f - mu) / s)
    return z


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _training_data(
    record: ExitView, features: tuple[str, ...], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, E, K)`` and correctness ``(N, E)`` of a labelled record."""
    labels = record.labels
    if labels is None:
        raise PolicyError(f"learned-gate {what}: the validation record has no labels")
    if record.logits.shape[0] == 0:
        raise PolicyError(f"learned-gate {what}: the validation record has no samples")
    correct = record.predictions == np.asarray(labels)[:, None]
    return gate_features(record.log_probs, features), correct


def reach_weights(earlier: np.ndarray) -> np.ndarray:
    """Per sample, the probability of reaching the next exit under a shared threshold drawn
    uniformly from [0, 1], given the earlier gates' probabilities ``earlier`` ``(N, i)``:
    ``1 - max_{j<i} p_j`` (1 for exit 0)."""
    if earlier.shape[1] == 0:
        return np.ones(earlier.shape[0])
    return 1.0 - earlier.max(axis=1)


def _fit_exit_gates(feats: np.ndarray, correct: np.ndarray, regularization: float) -> dict:
    """Gate parameters for every exit, fitted in exit order on ``feats`` ``(N, E, K)`` and
    ``correct`` ``(N, E)``; exit ``i`` weighs each sample by :func:`reach_weights` of the gates
    before it (weights scaled to mean 1)."""
    from sklearn.linear_model import LogisticRegression

    n, num_exits, k = feats.shape
    coef = np.zeros((num_exits, k))
    intercept = np.zeros(num_exits)
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0)
    scale[scale < 1e-12] = 1.0
    probs = np.empty((n, num_exits))
    for e in range(num_exits):
        w = reach_weights(probs[:, :e])
        total = float(w.sum())
        w = w * (n / total) if total > 0 else np.ones(n)
        y = correct[:, e]
        present = w > 0
        rate = float((w * y).sum() / w.sum())
        if np.all(y[present]) or not np.any(y[present]):
            # one class only: the gate can only say how often this exit is right
            r = min(max(rate, _RATE_CLIP), 1.0 - _RATE_CLIP)
            intercept[e] = np.log(r / (1.0 - r))
        else:
            x = (feats[:, e, :] - mean[e]) / scale[e]
            clf = LogisticRegression(C=regularization, max_iter=1000)
            clf.fit(x, y, sample_weight=w)
            coef[e] = clf.coef_[0]
            intercept[e] = clf.intercept_[0]
        params = (intercept[e], coef[e], mean[e], scale[e])
        probs[:, e] = _sigmoid(
            _gate_logit([feats[:, e, j] for j in range(k)], params[0], *map(list, params[1:]))
        )
    return {"coef": coef, "intercept": intercept, "mean": mean, "scale": scale}


def _state_probabilities(state: dict[str, np.ndarray], feats: np.ndarray) -> np.ndarray:
    """``(N, E)`` probabilities of a gate state on stacked features ``(N, E, K)``: the same
    elementwise float64 arithmetic as :meth:`LearnedGatePolicy.scores`."""
    k = feats.shape[2]
    z = _gate_logit(
        [feats[..., j] for j in range(k)],
        state["intercept"],
        _columns(state["coef"]),
        _columns(state["mean"]),
        _columns(state["scale"]),
    )
    return _sigmoid(z)


class GateDecider(ExitDecider):
    """Leave when exit ``i``'s gate gives a probability of being correct >= ``theta_i``.

    The parameters are read once, as plain floats per exit, when the decider is made: refitting
    the policy afterwards does not change a decider already handed out.
    """

    def __init__(
        self, policy: LearnedGatePolicy, thresholds: np.ndarray | float, num_exits: int | None
    ) -> None:
        super().__init__(num_exits)
        self.policy = policy
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._measures = tuple(CONFIDENCE.get(f) for f in policy.features)
        self._params = _exit_parameters(policy._require_state())
        of_parts = tuple(FROM_PARTS.get(m) for m in self._measures)
        usable = None not in of_parts and all(sc != 0.0 for _, _, _, s in self._params for sc in s)
        self._of_parts = of_parts if usable else None
        # a feature off by d moves the gate's probability by at most 0.25 * sum_k |w_k / s_k| * d
        self._row_tol = [
            ROW_TOLERANCE * (1.0 + 0.25 * sum(abs(w / sc) for w, sc in zip(c, s, strict=True)))
            if usable
            else 0.0
            for _, c, _, s in self._params
        ]

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        log_probs = log_softmax64(logits)
        feats = [measure(log_probs) for measure in self._measures]
        p = _sigmoid(_gate_logit(feats, *self._params[exit_index]))
        return p >= threshold_at(self._theta, exit_index)

    def _fire_one(self, exit_index: int, row: int, values: list[float]) -> bool | None:
        """Batch 1 on Python floats; near the threshold (within the features' tolerance carried
        through the gate) :meth:`_fire` decides on the exact vectorised features."""
        if self._of_parts is None or len(values) < 2:
            return None
        parts = row_softmax_parts(values)
        b, coef, mean, scale = self._params[exit_index]
        z = b
        for of_parts, w, mu, sc in zip(self._of_parts, coef, mean, scale, strict=True):
            z += w * ((of_parts(*parts) - mu) / sc)
        p = 1.0 / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
        theta = threshold_at(self._theta, exit_index)
        if abs(p - theta) <= self._row_tol[exit_index]:
            return None
        return p >= theta


def _exit_parameters(
    state: dict[str, np.ndarray],
) -> list[tuple[float, tuple[float, ...], tuple[float, ...], tuple[float, ...]]]:
    """Per exit ``(intercept, coef, mean, scale)`` as Python floats (exact copies of the float64
    parameters), so one decision indexes no arrays."""
    return [
        (
            float(state["intercept"][e]),
            tuple(float(v) for v in state["coef"][e]),
            tuple(float(v) for v in state["mean"][e]),
            tuple(float(v) for v in state["scale"][e]),
        )
        for e in range(state["intercept"].shape[0])
    ]


def _columns(a: np.ndarray) -> list[np.ndarray]:
    """``(E, K)`` parameters as K per-exit vectors ``(E,)``."""
    return [a[:, k] for k in range(a.shape[1])]


@register_policy("learned-gate")
class LearnedGatePolicy(CrossFittingPolicy):
    """Per exit a logistic regression over confidence features, fitted on val to predict correctness."""

    threshold_meaning = "minimum predicted probability that the exit is correct, in [0, 1]"
    not_fitted_hint = (
        "not fitted; call policy.fit(val_record) (or load saved parameters) before evaluating or "
        "deciding"
    )

    def __init__(
        self,
        features: tuple[str, ...] | list[str] = GATE_FEATURES,
        regularization: float = 1.0,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        for f in features:
            CONFIDENCE.get(f)
        if not features:
            raise PolicyError("learned-gate: needs at least one confidence feature")
        if not regularization > 0:
            raise PolicyError(
                f"learned-gate: regularization (sklearn's C) must be > 0, got {regularization!r}"
            )
        self._init_cross_fitting("learned-gate", folds, seed)
        self.features = tuple(features)
        self.regularization = float(regularization)
        self._state: dict[str, np.ndarray] | None = None

    @property
    def confidence_label(self) -> str:
        return "gate(" + "+".join(self.features) + ")"

    def params(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "regularization": self.regularization,
            "folds": self.folds,
            "seed": self.seed,
        }

    @property
    def fitted(self) -> bool:
        return self._state is not None

    @property
    def num_exits(self) -> int | None:
        return None if self._state is None else int(self._state["intercept"].shape[0])

    # ----------------------------------------------------------------- fitting
    def fit(self, record: ExitView) -> LearnedGatePolicy:
        """Fit one gate per exit on a validation record (an :class:`ExitView` with labels).

        The fitted gate is the deployed one: :meth:`scores`, :meth:`decider`, :meth:`save` all use
        it. The record's fingerprint is kept, so :meth:`for_calibration` knows when thresholds are
        about to be chosen on the very rows the gate was fitted on.
        """
        feats, correct = _training_data(record, self.features, "fit")
        self._state = _fit_exit_gates(feats, correct, self.regularization)
        self._fitted_record(record)
        return self

    def _fold_fit(self, record: ExitView) -> FoldFit:
        """Per fold: the gate probabilities of a gate fitted on the other folds."""
        feats, correct = _training_data(record, self.features, "cross-fitting")
        n = feats.shape[0]
        if n < 2:
            raise PolicyError(
                f"learned-gate cross-fitting: needs at least 2 validation samples, got {n}"
            )

        def fit_and_score(held: np.ndarray) -> np.ndarray:
            state = _fit_exit_gates(feats[~held], correct[~held], self.regularization)
            return _state_probabilities(state, feats[held])

        return fit_and_score

    def _require_state(self, num_exits: int | None = None) -> dict[str, np.ndarray]:
        self._check_exits(num_exits)
        return self._state  # type: ignore[return-value]  # set whenever num_exits is

    # ----------------------------------------------------------------- parameters as arrays
    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted parameters as plain arrays: coef/mean/scale ``(E, K)``, intercept ``(E,)``."""
        return {k: v.copy() for k, v in self._require_state().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> LearnedGatePolicy:
        k = len(self.features)
        try:
            arrays = {
                name: np.asarray(state[name], dtype=np.float64)
                for name in ("coef", "intercept", "mean", "scale")
            }
        except KeyError as err:
            raise PolicyError(f"learned-gate parameters: missing array {err}") from None
        e = arrays["intercept"].shape[0] if arrays["intercept"].ndim == 1 else -1
        for name in ("coef", "mean", "scale"):
            if arrays[name].shape != (e, k):
                raise PolicyError(
                    f"learned-gate parameters: '{name}' must have shape (exits, {k} features), got {arrays[name].shape}"
                )
        self._state = arrays
        # parameters from elsewhere: which rows fitted them is unknown (load() restores it)
        self._fitted_record(None)
        return self

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the parameters (feature names, cross-fitting settings and the fingerprint of the
        record fitted on) to an ``.npz`` file, atomically."""
        path = Path(path)
        state = self._require_state()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    features=np.array(self.features),
                    regularization=self.regularization,
                    folds=self.folds,
                    seed=self.seed,
                    fitted_on=np.array(self._fitted_on or ""),
                    **state,
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LearnedGatePolicy:
        """A fitted gate from :meth:`save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ResultsError(f"{path}: no learned-gate parameters here") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise ResultsError(f"{path}: not a readable learned-gate file ({err})") from None
        if "features" not in arrays:
            raise ResultsError(f"{path}: not a learned-gate file (no 'features' array)")
        policy = cls(
            tuple(str(f) for f in arrays["features"]),
            float(arrays.get("regularization", 1.0)),
            folds=int(arrays.get("folds", 5)),
            seed=int(arrays.get("seed", 0)),
        )
        policy.load_state_dict(arrays)
        policy._fitted_on = str(arrays.get("fitted_on", "")) or None
        return policy

    # ----------------------------------------------------------------- vectorised and online
    def gate_probability(self, exit_index: int, logits: np.ndarray) -> np.ndarray:
        """Probability that exit ``exit_index`` is correct, for a ``(B, C)`` batch of its logits."""
        intercept, coef, mean, scale = _exit_parameters(self._require_state())[exit_index]
        log_probs = log_softmax64(logits)
        feats = [CONFIDENCE.get(f)(log_probs) for f in self.features]
        return _sigmoid(_gate_logit(feats, intercept, coef, mean, scale))

    def scores(self, record: ExitView) -> np.ndarray:
        s = self._require_state(record.logits.shape[1])
        feats = [CONFIDENCE.get(f)(record.log_probs) for f in self.features]  # K x (N, E)
        z = _gate_logit(
            feats, s["intercept"], _columns(s["coef"]), _columns(s["mean"]), _columns(s["scale"])
        )
        return _sigmoid(z)

    def _decider(self, thresholds: np.ndarray | float, num_exits: int) -> ExitDecider:
        return GateDecider(self, thresholds, num_exits)


CrossFittedGate = CrossFittedView
"""The learned gate's calibration view (:meth:`LearnedGatePolicy.for_calibration`)."""

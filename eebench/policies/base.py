"""What every exit policy provides: a vectorised view and an online decider that agree exactly.

A policy turns the logits of every exit into two ``(N, E)`` tables:

* ``scores``: the decision of exit ``i`` fires for a sample when
  ``scores[n, i] >= theta_i`` (confidence for threshold policies, the PABEE
  counter for patience, the gate's probability for a learned gate);
* ``predictions``: the class a sample gets if it leaves at exit ``i``.

The final exit always takes whatever is left. The vectorised evaluation
(``eebench.evaluation``) works on these tables only; the true early-exit
executor asks the :class:`ExitDecider` from :meth:`Policy.decider` exit by
exit on a shrinking batch. Both compute from the same float64 arithmetic, and
a test holds them together sample by sample.

Thresholds for a decider are ``None`` (policies without thresholds), a
scalar (one shared threshold) or a vector of one threshold per exit (length
``num_exits``; the final entry is ignored).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import numpy as np

from eebench.errors import EEBenchError
from eebench.policies.confidence import check_finite, log_softmax64, predictions
from eebench.policies.row_confidence import ROW_MAX_CLASSES

_FEW_ROWS = 32
"""Up to this many active rows, Python's min/max over a list beats two numpy reductions."""


def _constant_mask(value: bool) -> np.ndarray:
    mask = np.full(1, value, dtype=bool)
    mask.flags.writeable = False
    return mask


_LEAVE = _constant_mask(True)
_STAY = _constant_mask(False)
"""The two masks a batch-1 decision can return: shared and read-only, so a decision allocates
no array."""


class PolicyError(EEBenchError, ValueError):
    """A policy used in a way it does not support (wrong thresholds, wrong record shape, ...)."""


class NotFittedError(PolicyError):
    """A policy that has to be fitted (learned gate) was used before :meth:`Policy.fit`."""


class ExitView(Protocol):
    """What a policy reads from a record: ``eebench.evaluation.ExitRecord`` is one, :class:`LogitsView`
    wraps plain arrays. ``log_probs`` (float64) and ``predictions`` are computed once and reused."""

    @property
    def logits(self) -> np.ndarray: ...  # (N, E, C)

    @property
    def labels(self) -> np.ndarray: ...  # (N,)

    @property
    def log_probs(self) -> np.ndarray: ...  # (N, E, C) float64

    @property
    def predictions(self) -> np.ndarray: ...  # (N, E) int64


@dataclass(frozen=True, eq=False)
class LogitsView:
    """An :class:`ExitView` over plain arrays: logits ``(N, E, C)`` and optional labels ``(N,)``."""

    logits: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        logits = np.asarray(self.logits)
        if logits.ndim != 3:
            raise PolicyError(f"logits must be (samples, exits, classes), got shape {logits.shape}")
        check_finite(logits)
        object.__setattr__(self, "logits", logits)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != logits.shape[:1]:
                raise PolicyError(
                    f"labels must have shape ({logits.shape[0]},), got {labels.shape}"
                )
            object.__setattr__(self, "labels", labels.astype(np.int64))

    @cached_property
    def log_probs(self) -> np.ndarray:
        return log_softmax64(self.logits)

    @cached_property
    def predictions(self) -> np.ndarray:
        return predictions(self.logits).astype(np.int64)


class ExitDecider(ABC):
    """Online decisions for the true early-exit executor.

    Call :meth:`reset` with the batch size, then for each exit in order
    :meth:`decide` with the logits of the rows still active and their
    original row indices in the batch; rows whose mask is True leave at that
    exit with the class from :meth:`predict`. The final exit always leaves.
    """

    _one_row_path: ClassVar[bool] = False
    """Whether the subclass implements :meth:`_fire_one` (set per class, not per call)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._one_row_path = cls._fire_one is not ExitDecider._fire_one

    def __init__(self, num_exits: int | None) -> None:
        self.num_exits = num_exits
        self.batch_size = 0

    def reset(self, batch_size: int) -> None:
        """Start a new batch of ``batch_size`` rows (clears per-row state)."""
        if int(batch_size) < 0:
            raise PolicyError(f"batch_size must be >= 0, got {batch_size}")
        self.batch_size = int(batch_size)
        self._reset_state(self.batch_size)

    def _reset_state(self, batch_size: int) -> None:  # noqa: B027 - optional hook
        """Per-row state of stateful deciders (patience, aggregation)."""

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Boolean mask over the active rows: True = leave at ``exit_index``.

        One active row of at most ``ROW_MAX_CLASSES`` float logits (every call of a per-sample
        run) is decided by :meth:`_fire_one` on plain Python floats when the decider has it: no
        array is allocated and the mask returned is a shared read-only one. Everything else, and
        every call that needs an error message, takes the array path.
        """
        if (
            self._one_row_path
            and type(logits) is np.ndarray
            and logits.ndim == 2
            and logits.shape[0] == 1
            and logits.shape[1] <= ROW_MAX_CLASSES
            and logits.dtype.kind == "f"
            and type(active) is np.ndarray
            and active.shape == (1,)
        ):
            mask = self._decide_one(int(exit_index), logits, active)
            if mask is not None:
                return mask
        return self._decide_rows(int(exit_index), logits, active)

    def _decide_one(
        self, exit_index: int, logits: np.ndarray, active: np.ndarray
    ) -> np.ndarray | None:
        """The batch-1 path; None when the call is out of range, has non-finite logits or the
        decider defers, so that :meth:`_decide_rows` raises the error or decides exactly."""
        row = int(active[0])
        num_exits = self.num_exits
        if num_exits is not None and not 0 <= exit_index < num_exits:
            return None
        if not 0 <= row < self.batch_size:
            return None
        values = logits[0].tolist()
        if not math.isfinite(sum(values)):
            return None
        fire = self._fire_one(exit_index, row, values)
        if fire is None:
            return None
        if num_exits is not None and exit_index == num_exits - 1:
            return _LEAVE
        return _LEAVE if fire else _STAY

    def _decide_rows(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The array path: any number of rows, full validation."""
        logits, active = self._check(exit_index, logits, active)
        fire = self._fire(exit_index, logits, active)
        if self.num_exits is not None and exit_index == self.num_exits - 1:
            return np.ones(active.shape[0], dtype=bool)
        if type(fire) is not np.ndarray or fire.dtype != np.bool_:
            fire = np.asarray(fire, dtype=bool)
        return fire

    def predict(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The class of each active row if it leaves at ``exit_index`` (after :meth:`decide`)."""
        return predictions(logits)

    overrides_final: ClassVar[bool] = False
    """True when a row reaching the final exit does not answer with that exit's own class
    (Shallow-Deep Networks' most-confident fallback): the executor then asks
    :meth:`final_predictions`; otherwise it takes the final exit's argmax itself."""

    def final_predictions(self, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The class of each active row reaching the final exit (no decision is made there)."""
        return predictions(logits)

    @abstractmethod
    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The policy's decision for the active rows (before forcing the final exit)."""

    def _fire_one(self, exit_index: int, row: int, values: list[float]) -> bool | None:
        """Optional batch-1 hook: the decision for the one active row (original index ``row``)
        from its logits as Python floats (finite, at most ``ROW_MAX_CLASSES``).

        It must equal what :meth:`_fire` decides for that row, and update per-row state the
        same way. Returning None (before touching any state) hands the call to :meth:`_fire`.
        """
        return None

    def _check(
        self, exit_index: int, logits: np.ndarray, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate one call. The executor calls this once per exit evaluated, at batch 1 in
        per-sample mode, so it avoids conversions of arrays that are already right and numpy
        reductions over a handful of elements (each costs more than the arithmetic)."""
        if type(logits) is not np.ndarray:
            logits = np.asarray(logits)
        if type(active) is not np.ndarray or active.dtype != np.int64:
            active = np.asarray(active, dtype=np.int64)
        if logits.ndim != 2:
            raise PolicyError(
                f"decide: logits must be (active rows, classes), got shape {logits.shape}"
            )
        if active.ndim != 1 or active.shape[0] != logits.shape[0]:
            raise PolicyError(
                f"decide: 'active' must list one original row index per logits row "
                f"({logits.shape[0]}), got shape {active.shape}"
            )
        if self.num_exits is not None and not 0 <= exit_index < self.num_exits:
            raise PolicyError(
                f"decide: exit_index {exit_index} out of range for {self.num_exits} exits"
            )
        rows = active.shape[0]
        if rows:
            if rows <= _FEW_ROWS:
                listed = active.tolist()
                lo, hi = min(listed), max(listed)
            else:
                lo, hi = int(active.min()), int(active.max())
            if lo < 0 or hi >= self.batch_size:
                raise PolicyError(
                    f"decide: active row indices must lie in [0, {self.batch_size}) of the batch "
                    "given to reset(); call reset(batch_size) first"
                )
        # NaN and +-inf propagate through a sum: one reduction screens every logit (in float64,
        # where float32 logits cannot overflow), and only a non-finite sum pays for the full check
        if not math.isfinite(logits.sum(dtype=np.float64)):
            check_finite(logits, rows=active, exit_index=exit_index)
        return logits, active


class Policy(ABC):
    """An exit policy: vectorised scores and predictions plus a matching online decider.

    Subclasses set ``name`` (the registry name), ``kind`` (``policy`` or
    ``baseline``: baselines are reference points, never an early-exit
    design), ``threshold_meaning`` (what a threshold is, for listings) and
    ``uses_thresholds``.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "policy"
    threshold_meaning: ClassVar[str] = ""
    uses_thresholds: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False

    # ----------------------------------------------------------------- identity
    @property
    def confidence_label(self) -> str:
        """What the scores are made of (a confidence measure, ``patience``, ``gate``, ``-``)."""
        return "-"

    @property
    def label(self) -> str:
        """Name and parameters, e.g. ``threshold[entropy]``."""
        c = self.confidence_label
        return self.name if c == "-" else f"{self.name}[{c}]"

    def params(self) -> dict[str, Any]:
        """Constructor arguments (for manifests and listings)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- vectorised view
    @abstractmethod
    def scores(self, record: ExitView) -> np.ndarray:
        """``(N, E)`` float64: exit ``i`` fires for sample ``n`` when ``scores[n, i] >= theta_i``."""

    def predictions(self, record: ExitView) -> np.ndarray:
        """``(N, E)`` int64: the class a sample gets when it leaves at each exit."""
        return record.predictions

    def fixed_thresholds(self) -> np.ndarray:
        """The one shared threshold used by policies without thresholds (their only point)."""
        return np.array([0.5])

    def default_thresholds(self, scores: np.ndarray, num: int = 101) -> np.ndarray:
        """A grid of shared thresholds that spans the policy's range (``num`` points)."""
        return np.linspace(0.0, 1.0, num)

    def candidate_thresholds(self, scores: np.ndarray) -> np.ndarray:
        """Every shared threshold at which some decision changes, plus ``inf`` (no early exit).

        Decisions only change where a threshold crosses a score, so this set
        is exhaustive for calibration on a record.
        """
        if scores.shape[1] < 2:
            return np.array([np.inf])
        prefix = np.maximum.accumulate(scores[:, :-1], axis=1)
        values = np.unique(prefix[np.isfinite(prefix)])
        return np.concatenate([values, [np.inf]])

    def check_record(self, record: ExitView) -> None:  # noqa: B027 - optional hook
        """Raise :class:`PolicyError` if the policy cannot be used on these logits."""

    # ----------------------------------------------------------------- online view
    @abstractmethod
    def decider(
        self,
        thresholds: float | np.ndarray | None = None,
        *,
        num_exits: int | None = None,
        labels: np.ndarray | None = None,
    ) -> ExitDecider:
        """An online decider for the true early-exit executor with these thresholds.

        ``num_exits`` lets the decider force the final exit itself (inferred
        from a per-exit threshold vector); ``labels`` (per batch row) is only
        used by the oracle baseline.
        """

    def fit(self, record: ExitView) -> Policy:
        """Fit on a validation record (learned policies); others return themselves unchanged."""
        return self

    def for_calibration(self, record: ExitView) -> Policy:
        """The policy as thresholds are to be chosen on ``record`` (a validation record).

        A policy with nothing learned returns itself. A learned one fitted on ``record`` returns a
        view whose scores on it are out of fold (``eebench.policies.gate.CrossFittedGate``), so
        thresholds are never chosen on scores that the fit has already seen the labels of.
        """
        return self


def decider_thresholds(
    policy: Policy, thresholds: float | np.ndarray | None, num_exits: int | None
) -> tuple[np.ndarray | float | None, int | None]:
    """Validate decider thresholds: scalar (shared) or one per exit; returns (thresholds, num_exits)."""
    if not policy.uses_thresholds:
        if thresholds is not None:
            raise PolicyError(f"policy '{policy.name}' takes no thresholds, got {thresholds!r}")
        return None, num_exits
    if thresholds is None:
        raise PolicyError(
            f"policy '{policy.name}' needs thresholds ({policy.threshold_meaning}): "
            "pass one shared value or one per exit"
        )
    th = np.asarray(thresholds, dtype=np.float64)
    if np.isnan(th).any():
        raise PolicyError(f"policy '{policy.name}': thresholds must not be NaN, got {th.tolist()}")
    if th.ndim == 0:
        return float(th), num_exits
    if th.ndim != 1:
        raise PolicyError(
            f"policy '{policy.name}': decider thresholds must be a scalar or one per exit, got shape {th.shape}"
        )
    if num_exits is not None and th.shape[0] != num_exits:
        raise PolicyError(
            f"policy '{policy.name}': {th.shape[0]} thresholds given for {num_exits} exits "
            "(give one per exit; the final exit's value is ignored)"
        )
    return th, th.shape[0]


def threshold_table(thresholds: np.ndarray | float) -> tuple[float, ...] | float:
    """Decider thresholds (from :func:`decider_thresholds`) as plain floats, converted once so
    that each decision looks its threshold up without touching numpy."""
    if isinstance(thresholds, float):
        return thresholds
    return tuple(float(v) for v in np.asarray(thresholds, dtype=np.float64).reshape(-1))


def threshold_at(thresholds: np.ndarray | tuple[float, ...] | float, exit_index: int) -> float:
    """The threshold of one exit from a shared scalar or a per-exit vector (array or tuple)."""
    if isinstance(thresholds, float):
        return thresholds
    return float(thresholds[exit_index])

"""Shared machinery of the learned exit policies that trade accuracy for cost.

The learned policies of the literature (Bolukbasi et al. 2017, EPNet, McGill & Perona's actor and
critics, Guan et al. 2018) are each trained for one trade-off: a reward that pays for a correct
answer and charges for the computation spent. eebench writes that reward, for a sample leaving at
exit ``i``, as

    ``r_i = theta * [prediction_i is correct] - (1 - theta) * cost_i / plain cost``

where ``cost_i`` is the cumulative cost of exit ``i`` (analytic MACs by default, a measured or
estimated energy when the policy asks for it and the run has it) and ``theta`` in ``[0, 1]`` is
the weight on accuracy (the papers' cost weight is ``lambda = (1 - theta) / theta``).

Sweeping ``theta`` like a threshold. A policy is trained for every ``theta`` of a grid
(``cost_weights``: the ``lambda`` values, ``theta = 1 / (1 + lambda)``). Its score at exit ``i`` is
the largest grid ``theta`` whose trained policy leaves at ``i`` (0 when none does), and the sample
leaves at the first exit whose score reaches the threshold ``theta``. So the policy run at threshold
``theta`` leaves at exit ``i`` wherever the policy trained for ``theta`` does, and also wherever a
policy trained with *more* weight on accuracy does: the operating points are nested, expected cost
never rises as ``theta`` falls, and the sweep, the calibrations and the executor treat the learned
policy exactly like a confidence threshold. This monotone envelope is eebench's, not the papers'
(each paper deploys one trained policy per trade-off); on the grid points it changes a decision
only where the trained policies themselves are not nested, which :attr:`TradeoffPolicy.nesting`
reports after a fit.

Fitting and calibrating on disjoint data: as the learned gate (``eebench.policies.gate``), the
policy is fitted on the whole validation record, and :meth:`TradeoffPolicy.for_calibration` on that
record returns a view whose scores are out of fold (each fold scored by policies fitted on the
other folds), so thresholds are never chosen on rows the fit has seen the labels of. Test records
and every online decision use the policy fitted on all of val.

A policy only ever reads the logits of the exit it decides at, so the online decider is stateless
and computes exactly the float64 arithmetic of the vectorised scores.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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

DEFAULT_COST_WEIGHTS: tuple[float, ...] = (0.0, *np.round(np.logspace(-3, 1, 24), 8).tolist())
"""``lambda`` grid: 0 (accuracy only) and 24 values from 1e-3 to 10 plain-network costs per error."""

CONFIDENCE_FEATURES = ("max_softmax", "score_margin", "entropy")

DEPTH_COST_SOURCE = "exit depth (no cost vector given: exit i costs (i + 1) / exits)"


@dataclass(frozen=True)
class TradeoffCost:
    """The normalised cumulative cost per exit the reward charges, and where it comes from."""

    values: np.ndarray  # (E,) cumulative cost / plain network cost
    source: str  # e.g. "macs (analytic)", "energy_0 (measured:torch-cpu,...)"
    name: str  # the cost vector's name in the run ("macs", "energy_1")


def thetas_of(cost_weights: Sequence[float]) -> np.ndarray:
    """Accuracy weights ``theta = 1 / (1 + lambda)`` of a ``lambda`` grid, ascending."""
    lam = np.asarray(cost_weights, dtype=np.float64)
    return np.sort(1.0 / (1.0 + lam))


def rewards(correct: np.ndarray, cost: np.ndarray, theta: float) -> np.ndarray:
    """``(N, E)`` reward ``theta [correct] - (1 - theta) cost_i`` of leaving at each exit."""
    return theta * correct.astype(np.float64) - (1.0 - theta) * cost[None, :]


def grid_scores(fire: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """``(B,)`` score from ``(B, K)`` decisions of the ``K`` grid policies: the largest ``theta``
    whose policy leaves, 0 when none does."""
    return np.max(np.where(fire, thetas[None, :], 0.0), axis=1, initial=0.0)


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale`` column by column (elementwise: the same rounding at any batch size)."""
    return (x - mean) / scale


def linear_decisions(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray
) -> np.ndarray:
    """``(B, K)`` decisions ``b_k + sum_f w_kf (x_f - mu_f) / s_f >= 0`` of ``K`` linear rules on
    ``(B, F)`` features, summed feature by feature (elementwise, so the vectorised scores and the
    decider round identically)."""
    z = np.broadcast_to(intercept[None, :], (x.shape[0], intercept.shape[0])).copy()
    for f in range(x.shape[1]):
        z += ((x[:, f] - mean[f]) / scale[f])[:, None] * coef[None, :, f]
    return z >= 0.0


def fit_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of ``(N, F)`` features (a constant feature: 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """Least squares ``y ~ b + x w`` with an L2 penalty ``alpha ||w||^2`` (not on ``b``); returns
    ``(b, w)``. ``x`` is standardised, so one ``alpha`` means the same at every exit."""
    n, f = x.shape
    a = np.concatenate([np.ones((n, 1)), x], axis=1)
    gram = a.T @ a
    gram[1:, 1:] += alpha * np.eye(f)
    beta = np.linalg.solve(gram, a.T @ y)
    return float(beta[0]), beta[1:]


class TradeoffPolicy(CrossFittingPolicy):
    """Base of the learned accuracy-cost policies (see the module docstring).

    Subclasses implement :meth:`_fit_state` (the paper's training for every ``theta`` of the grid)
    and :meth:`_exit_scores` (the score of exit ``i`` from its features); :meth:`exit_features`
    says what the policy reads of an exit's softmax.
    """

    threshold_meaning = (
        "accuracy weight theta in [0, 1] of the reward theta [correct] - (1 - theta) cost / plain "
        "cost (lower: cheaper; 0 leaves at exit 0)"
    )
    default_cost: ClassVar[str] = "macs"
    features: ClassVar[tuple[str, ...]] = CONFIDENCE_FEATURES

    def __init__(
        self,
        cost: str | None = None,
        cost_weights: Sequence[float] | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        name = self.name or type(self).__name__
        self.cost = self.default_cost if cost is None else str(cost)
        if not re.fullmatch(r"(macs|energy|latency)(_\d+)?", self.cost):
            raise PolicyError(
                f"{name}: cost must name a run's cost vector: 'macs', 'energy' or 'latency' (the "
                f"first of that kind) or an exact name such as 'energy_0', got {cost!r}"
            )
        lam = DEFAULT_COST_WEIGHTS if cost_weights is None else tuple(cost_weights)
        try:
            lam_arr = np.asarray(lam, dtype=np.float64)
        except (TypeError, ValueError):
            raise PolicyError(f"{name}: cost_weights must be numbers, got {lam!r}") from None
        if lam_arr.ndim != 1 or lam_arr.size == 0 or not np.all(np.isfinite(lam_arr)):
            raise PolicyError(
                f"{name}: cost_weights must be a non-empty list of finite numbers >= 0 "
                f"(lambda: plain-network costs per error), got {lam!r}"
            )
        if np.any(lam_arr < 0):
            raise PolicyError(f"{name}: cost_weights must be >= 0, got {lam_arr.tolist()}")
        self._init_cross_fitting(name, folds, seed)
        self.cost_weights = tuple(float(v) for v in lam_arr)
        self.thetas = np.unique(thetas_of(lam_arr))
        self._cost: TradeoffCost | None = None
        self._state: dict[str, Any] | None = None
        self._num_exits: int | None = None
        self.nesting: dict[str, float] = {}

    # ----------------------------------------------------------------- identity
    @property
    def confidence_label(self) -> str:
        """``tradeoff(<cost charged>)``: the run's cost vector the reward charges once
        :meth:`use_costs` chose it (``energy_1``, or ``macs`` where an energy was asked for but
        the run had none), else the ``cost`` option."""
        return f"tradeoff({self.cost if self._cost is None else self._cost.name})"

    def params(self) -> dict[str, Any]:
        return {
            "cost": self.cost,
            "cost_weights": list(self.cost_weights),
            "folds": self.folds,
            "seed": self.seed,
        }

    @property
    def fitted(self) -> bool:
        return self._state is not None

    @property
    def num_exits(self) -> int | None:
        return self._num_exits

    @property
    def cost_source(self) -> str:
        """What the reward charges (the cost vector's name and source, or the exit-depth default)."""
        return DEPTH_COST_SOURCE if self._cost is None else self._cost.source

    # ----------------------------------------------------------------- costs
    def use_costs(self, vectors: Sequence[Any]) -> TradeoffPolicy:
        """Take the reward's cost from a run's cost vectors (``eebench.evaluation.CostVector``).

        ``cost`` names one exactly (``macs``, ``energy_0``) or by its stem (``energy``: the first
        energy vector, ``latency``: the first latency vector). A stem the run lacks falls back to
        the analytic MACs, and :attr:`cost_source` says so. Call before :meth:`fit`.
        """
        by_name = {v.name: v for v in vectors}
        chosen = by_name.get(self.cost)
        if chosen is None:
            chosen = next((v for v in vectors if v.name.startswith(self.cost + "_")), None)
        note = ""
        if chosen is None:
            chosen = by_name.get("macs")
            note = f"; no '{self.cost}' cost in this run"
        if chosen is None:
            raise PolicyError(
                f"{self.name}: no cost vector named '{self.cost}' (nor 'macs') among "
                f"{sorted(by_name) or 'none'}"
            )
        plain = float(chosen.plain) if chosen.plain else float(chosen.values[-1])
        if not plain > 0:
            raise PolicyError(f"{self.name}: cost vector '{chosen.name}' has a zero plain cost")
        self._cost = TradeoffCost(
            np.asarray(chosen.values, dtype=np.float64) / plain,
            f"{chosen.name} ({chosen.source}){note}",
            chosen.name,
        )
        return self

    def _normalised_cost(self, num_exits: int) -> np.ndarray:
        if self._cost is None:
            return np.arange(1, num_exits + 1, dtype=np.float64) / num_exits
        if self._cost.values.shape[0] != num_exits:
            raise PolicyError(
                f"{self.name}: its cost vector has {self._cost.values.shape[0]} exits but the "
                f"record has {num_exits}; give the costs of the same model"
            )
        return self._cost.values

    # ----------------------------------------------------------------- features
    def exit_features(self, log_probs: np.ndarray) -> np.ndarray:
        """``(..., F)`` features of an exit's float64 log-softmax ``(..., C)``: by default the
        confidence measures max softmax, score margin and entropy confidence."""
        return np.stack([CONFIDENCE.get(f)(log_probs) for f in self.features], axis=-1)

    # ----------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _fit_state(self, feats: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict:
        """Train every grid policy on ``feats`` ``(N, E, F)``, ``correct`` ``(N, E)`` and the
        normalised cumulative ``cost`` ``(E,)``; return what :meth:`_exit_scores` needs."""

    @abstractmethod
    def _exit_scores(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        """``(B,)`` score of a non-final exit from its ``(B, F)`` features."""

    def grid_decisions(self, exit_index: int, x: np.ndarray) -> np.ndarray:
        """``(B, K)``: whether each grid policy (``theta`` ascending, :attr:`thetas`) leaves at
        non-final exit ``exit_index`` given features ``(B, F)`` (for tests and diagnostics)."""
        return self._grid_fire(self._require_state(), exit_index, x)

    @abstractmethod
    def _grid_fire(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        """``(B, K)`` decisions of the grid policies (before the envelope)."""

    # ----------------------------------------------------------------- fitting
    def _training_data(
        self, record: ExitView, what: str, least: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        if record.labels is None:
            raise PolicyError(f"{self.name} {what}: the validation record has no labels")
        if record.logits.shape[0] < least:
            raise PolicyError(
                f"{self.name} {what}: needs at least {least} validation samples, got "
                f"{record.logits.shape[0]}"
            )
        correct = record.predictions == np.asarray(record.labels)[:, None]
        return self.exit_features(record.log_probs), correct

    def fit(self, record: ExitView) -> TradeoffPolicy:
        """Train every grid policy on a labelled validation record (the deployed policy)."""
        feats, correct = self._training_data(record, "fit")
        cost = self._normalised_cost(record.logits.shape[1])
        self._state = self._fit_state(feats, correct, cost)
        self._num_exits = int(record.logits.shape[1])
        self._fitted_record(record)
        self.nesting = self._nesting(feats)
        return self

    def _nesting(self, feats: np.ndarray) -> dict[str, float]:
        """How far the trained grid policies are from nested, on the fitted rows: the fraction of
        (sample, exit, grid point) decisions the envelope turns from stay into leave."""
        assert self._state is not None
        changed = total = 0
        for i in range(feats.shape[1] - 1):
            fire = self._grid_fire(self._state, i, feats[:, i, :])
            envelope = np.logical_or.accumulate(fire[:, ::-1], axis=1)[:, ::-1]
            changed += int((envelope & ~fire).sum())
            total += fire.size
        return {"envelope_changed_fraction": changed / total if total else 0.0}

    def _fold_fit(self, record: ExitView) -> FoldFit:
        """Per fold: the scores of the grid policies trained on the other folds."""
        feats, correct = self._training_data(record, "cross-fitting", least=2)
        cost = self._normalised_cost(record.logits.shape[1])

        def fit_and_score(held: np.ndarray) -> np.ndarray:
            state = self._fit_state(feats[~held], correct[~held], cost)
            return self._scores_from(state, feats[held])

        return fit_and_score

    def _calibration_view(self, record: ExitView, oof: np.ndarray) -> CrossFittedTradeoff:
        return CrossFittedTradeoff(self, record, oof)

    def _require_state(self, num_exits: int | None = None) -> dict:
        self._check_exits(num_exits)
        return self._state  # type: ignore[return-value]  # set whenever num_exits is

    # ----------------------------------------------------------------- vectorised and online
    def _scores_from(self, state: dict, feats: np.ndarray) -> np.ndarray:
        n, e, _ = feats.shape
        scores = np.zeros((n, e), dtype=np.float64)
        for i in range(e - 1):
            scores[:, i] = self._exit_scores(state, i, feats[:, i, :])
        return scores

    def scores(self, record: ExitView) -> np.ndarray:
        state = self._require_state(record.logits.shape[1])
        return self._scores_from(state, self.exit_features(record.log_probs))

    def _decider(self, thresholds: np.ndarray | float, num_exits: int) -> ExitDecider:
        return TradeoffDecider(self, thresholds, num_exits)


class TradeoffDecider(ExitDecider):
    """Leave at exit ``i`` when the policy's score there reaches ``theta_i``: the score is computed
    from the row's logits by the same float64 arithmetic as :meth:`TradeoffPolicy.scores`."""

    def __init__(
        self, policy: TradeoffPolicy, thresholds: np.ndarray | float, num_exits: int | None
    ) -> None:
        super().__init__(num_exits)
        self.policy = policy
        self.thresholds = thresholds
        self._theta = threshold_table(thresholds)
        self._state = policy._require_state()
        self._last = (policy.num_exits or 0) - 1

    def _fire(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        if exit_index >= self._last:  # the final exit takes whatever is left
            return np.ones(active.shape[0], dtype=bool)
        x = self.policy.exit_features(log_softmax64(logits))
        score = self.policy._exit_scores(self._state, exit_index, x)
        return score >= threshold_at(self._theta, exit_index)


class CrossFittedTradeoff(CrossFittedView):
    """A fitted :class:`TradeoffPolicy` as thresholds are chosen on the record it was fitted on
    (a :class:`~eebench.policies.crossfit.CrossFittedView`) that also says what its reward
    charges."""

    policy: TradeoffPolicy

    @property
    def cost_source(self) -> str:
        return self.policy.cost_source


class LinearTradeoffPolicy(TradeoffPolicy):
    """A trade-off policy whose grid policies are linear rules on standardised exit features:
    state ``mean``/``scale`` ``(E-1, F)``, ``coef`` ``(E-1, K, F)``, ``intercept`` ``(E-1, K)``."""

    def _grid_fire(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        return linear_decisions(
            x,
            state["mean"][exit_index],
            state["scale"][exit_index],
            state["coef"][exit_index],
            state["intercept"][exit_index],
        )

    def _exit_scores(self, state: dict, exit_index: int, x: np.ndarray) -> np.ndarray:
        return grid_scores(self._grid_fire(state, exit_index, x), self.thetas)

    def _empty_state(self, feats: np.ndarray) -> dict:
        n, e, f = feats.shape
        k = self.thetas.shape[0]
        mean = np.zeros((max(e - 1, 0), f))
        scale = np.ones((max(e - 1, 0), f))
        for i in range(e - 1):
            mean[i], scale[i] = fit_scale(feats[:, i, :])
        return {
            "mean": mean,
            "scale": scale,
            "coef": np.zeros((max(e - 1, 0), k, f)),
            "intercept": np.zeros((max(e - 1, 0), k)),
        }

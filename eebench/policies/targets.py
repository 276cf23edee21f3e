"""Per-exit thresholds that realise a target exit distribution (MSDNet's budgeted batch classification).

MSDNet (Huang et al. 2018) picks, for a budget, an exit distribution
``p_i ∝ q^i`` and sets each exit's threshold on the validation split so that
the fraction of samples leaving there matches ``p_i``: walking the exits in
order, the most confident of the samples still present leave until exit
``i``'s share is used up. ``q`` is then searched so that the expected cost
meets the budget (``eebench.evaluation.calibration``).
"""

from __future__ import annotations

import numpy as np

from eebench.policies.base import PolicyError


def geometric_exit_distribution(q: float, num_exits: int) -> np.ndarray:
    """``p_i = q^i / sum_j q^j`` for ``i < num_exits``; ``q < 1`` favours early exits, ``q > 1`` late ones."""
    if not (q > 0 and np.isfinite(q)):
        raise PolicyError(
            f"geometric exit distribution: q must be a positive finite number, got {q!r}"
        )
    if num_exits < 1:
        raise PolicyError(f"geometric exit distribution: num_exits must be >= 1, got {num_exits}")
    logw = np.arange(num_exits) * np.log(q)
    w = np.exp(logw - logw.max())
    return w / w.sum()


def check_distribution(target: np.ndarray | list[float], num_exits: int) -> np.ndarray:
    """A validated exit distribution: ``num_exits`` non-negative fractions summing to 1."""
    p = np.asarray(target, dtype=np.float64)
    if p.shape != (num_exits,):
        raise PolicyError(
            f"target exit distribution: expected {num_exits} fractions (one per exit), got shape {p.shape}"
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise PolicyError(
            f"target exit distribution: fractions must be finite and >= 0, got {p.tolist()}"
        )
    if abs(p.sum() - 1.0) > 1e-6:
        raise PolicyError(
            f"target exit distribution: fractions must sum to 1, got {p.sum()!r} ({p.tolist()})"
        )
    return p


def thresholds_for_exit_distribution(
    scores: np.ndarray, target: np.ndarray | list[float]
) -> np.ndarray:
    """Per-exit thresholds so that the share of samples leaving at each exit matches ``target``.

    ``scores`` is a policy's ``(N, E)`` score table on the validation record.
    Exit ``i`` gets the score of the ``n_i``-th most confident sample still
    present, with ``n_i`` from the rounded cumulative target (so rounding
    does not drift); ``inf`` when nobody should leave, ``-inf`` when everyone
    still present should. Samples tied with the cut-off score leave too, so
    ties can make an exit take more than its share. The final exit's entry is
    ``-inf`` (it takes what is left).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n, num_exits = scores.shape
    p = check_distribution(target, num_exits)
    thresholds = np.full(num_exits, -np.inf)
    wanted_by = np.rint(np.cumsum(p) * n).astype(np.int64)
    remaining = np.arange(n)
    left = 0
    for i in range(num_exits - 1):
        take = int(wanted_by[i]) - left
        if take <= 0 or remaining.size == 0:
            thresholds[i] = np.inf
        elif take >= remaining.size:
            thresholds[i] = -np.inf
        else:
            s = scores[remaining, i]
            thresholds[i] = np.sort(s)[::-1][take - 1]
        leaving = scores[remaining, i] >= thresholds[i]
        left += int(leaving.sum())
        remaining = remaining[~leaving]
    return thresholds

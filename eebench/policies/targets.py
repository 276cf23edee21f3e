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


ROUNDINGS = ("cumulative", "msdnet")
"""How a target exit distribution becomes a number of samples per exit (see
:func:`thresholds_for_exit_distributions`)."""

MSDNET_Q_VALUES: tuple[float, ...] = tuple(p / 20 for p in range(1, 41))
"""The 40 exit-probability priors ``q`` of MSDNet's budgeted batch classification (``q = p / 20``,
``p = 1 .. 40``): ``q < 1`` favours early exits, ``q > 1`` late ones."""


def msdnet_exit_distribution(q: float, num_exits: int) -> np.ndarray:
    """MSDNet's geometric exit distribution in float32, rounded exactly as its public code rounds it.

    ``p_k = q^(k+1) / sum_j q^(j+1)`` for ``k < num_exits``, evaluated in float32 torch
    arithmetic on a one-element ``q`` (``exp(log(q) * [1 .. E])``, then divided by its sum).
    numpy's float32 ``exp``/``log`` differ from torch's in the last bit for some ``q``, and one
    bit is enough to move ``floor(n * p_k)`` by a sample, so the published numbers are only
    reproduced with torch's own kernels.
    """
    import torch

    if not (q > 0 and np.isfinite(q)):
        raise PolicyError(
            f"MSDNet exit distribution: q must be a positive finite number, got {q!r}"
        )
    if num_exits < 1:
        raise PolicyError(f"MSDNet exit distribution: num_exits must be >= 1, got {num_exits}")
    q32 = torch.full((1,), float(q), dtype=torch.float32)
    probs = torch.exp(torch.log(q32) * torch.arange(1, num_exits + 1, dtype=torch.float32))
    probs /= probs.sum()
    return probs.numpy().copy()


def exit_counts_for_distributions(
    targets: np.ndarray, num_samples: int, rounding: str = "cumulative"
) -> np.ndarray:
    """``(Q, E)`` int64: how many of ``num_samples`` samples each target wants to leave at each exit.

    * ``cumulative`` (eebench's default): the cumulative target ``sum_{j <= i} p_j`` is rounded
      to the nearest sample, so rounding does not drift along the exits; counts sum to ``n``.
    * ``msdnet`` (MSDNet's public code): each exit wants ``floor(n * p_i)`` samples, the product
      taken in float32; what the floors leave over goes to the final exit.
    """
    p = np.asarray(targets)
    n = int(num_samples)
    if rounding == "cumulative":
        wanted_by = np.rint(np.cumsum(p.astype(np.float64), axis=1) * n).astype(np.int64)
        return np.diff(wanted_by, axis=1, prepend=0)
    if rounding == "msdnet":
        counts = np.floor(np.float32(n) * p.astype(np.float32)).astype(np.int64)
        counts[:, -1] = n - counts[:, :-1].sum(axis=1)
        return counts
    raise PolicyError(f"unknown rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}")


def thresholds_for_exit_distributions(
    scores: np.ndarray, targets: np.ndarray, rounding: str = "cumulative"
) -> np.ndarray:
    """``(Q, E)`` per-exit thresholds realising each of ``Q`` target exit distributions at once.

    Walking the exits in order, exit ``i`` gets the score of the ``c``-th most confident sample
    still present, where ``c`` is the exit's count from :func:`exit_counts_for_distributions`;
    everyone present at or above that score leaves (ties can make an exit take more than its
    share). An exit whose count is 0, or larger than the samples still present, gets ``inf``
    under ``msdnet`` rounding (nobody leaves there, as in MSDNet's code, whose leftovers reach
    the final exit); under ``cumulative`` rounding an exit that wants everyone still present
    gets ``-inf``. The final exit's entry is ``-inf`` (it takes what is left).

    Each exit sorts its scores once for all ``Q`` targets; which samples are still present is a
    ``(Q, N)`` mask, and the ``c``-th present sample in score order of every target is found by
    one cumulative count over the mask and one ``searchsorted``: no loop over targets or samples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n, num_exits = scores.shape
    p = np.asarray(targets)
    if p.ndim != 2:
        raise PolicyError(
            f"target exit distributions must be (targets, exits), got shape {p.shape}"
        )
    if p.shape[1] != num_exits:
        check_distribution(p[0] if p.shape[0] else p.reshape(-1), num_exits)  # raises: shape
    # every row at once; the first bad one is reported by check_distribution's own message
    bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)
    bad |= np.abs(p.astype(np.float64).sum(axis=1) - 1.0) > 1e-6
    if bad.any():
        check_distribution(p[int(np.argmax(bad))], num_exits)
    q = p.shape[0]
    counts = exit_counts_for_distributions(p, n, rounding)
    # cumulative: exit i takes what the rounded cumulative target still wants after the samples
    # that actually left before it (ties may have taken more than their share)
    wanted_by = np.cumsum(counts, axis=1)
    thresholds = np.full((q, num_exits), -np.inf)
    present = np.ones((q, n), dtype=bool)
    rows = np.arange(q)
    count_type = np.int32 if q * n < 2**31 else np.int64
    for i in range(num_exits - 1):
        # any order among tied scores gives the same threshold values: the faster unstable sort
        order = np.argsort(-scores[:, i])
        ranked = scores[order, i]
        # one running count over the (Q, N) presence rows laid end to end, in score order: it
        # never decreases, so the take-th present sample of every row is one searchsorted
        running = np.cumsum(np.take(present, order, axis=1), dtype=count_type).reshape(q, n)
        ends = running[:, -1] if n else np.zeros(q, dtype=count_type)
        before = np.concatenate([[0], ends[:-1]]).astype(np.int64)  # present in earlier rows
        remaining = ends - before
        take = counts[:, i] if rounding == "msdnet" else wanted_by[:, i] - (n - remaining)
        found = (take >= 1) & (take <= remaining)
        pos = np.searchsorted(running.ravel(), (before + take)[found], side="left")
        th = np.full(q, np.inf)
        th[found] = ranked[pos - rows[found] * n]
        if rounding == "cumulative":
            th[(take >= remaining) & (take >= 1) & (remaining > 0)] = -np.inf
        thresholds[rows, i] = th
        present &= scores[:, i][None, :] < th[:, None]
    return thresholds


def thresholds_for_exit_distribution(
    scores: np.ndarray, target: np.ndarray | list[float], rounding: str = "cumulative"
) -> np.ndarray:
    """Per-exit thresholds so that the share of samples leaving at each exit matches ``target``.

    ``scores`` is a policy's ``(N, E)`` score table on the validation record; one target of
    :func:`thresholds_for_exit_distributions` (see there for ``rounding`` and ties). The final
    exit's entry is ``-inf`` (it takes what is left).
    """
    scores = np.asarray(scores, dtype=np.float64)
    p = check_distribution(target, scores.shape[1])
    return thresholds_for_exit_distributions(scores, p[None, :], rounding)[0]

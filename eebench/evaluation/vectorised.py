"""Where each sample leaves, for many thresholds at once, without a loop over samples or thresholds.

A policy reduces a record to a score table ``S`` of shape ``(N, E)``: exit
``i`` fires for sample ``n`` when ``S[n, i] >= theta_i``, and the sample
leaves at the first exit that fires (the final exit takes what is left).
Every operating-point metric is a sum over samples of some per-(sample, exit)
table ``F`` taken at the exit each sample leaves from, so this module only
computes ``counts[t, i]`` (how many samples leave at exit ``i`` under
threshold row ``t``) and ``sum_n F[n, exit(t, n)]`` for each table.

Shared thresholds ``(T,)`` use the fact that a sample passes exit ``i`` on
exactly when the running maximum ``M[n, i] = max_{j <= i} S[n, j]`` is below
``theta``: with the thresholds sorted once, each sample passes exit ``i`` for
a suffix of them, found by one ``searchsorted``; a ``bincount`` of those start
positions, weighted by ``F[n, i + 1] - F[n, i]`` and summed cumulatively,
gives every table's sum at every threshold. The cost is
``O(E N log T + T log T)``, independent of ``T x N``. Per-exit thresholds ``(T, E)`` have no such order;
they are evaluated by broadcasting ``(T, N, E)`` decisions in chunks and
taking the first exit that fires with an ``argmax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eebench.policies.base import PolicyError

# elements of the (chunk, N, E) decision array evaluated at once on the per-exit path
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class ExitSums:
    """``counts[t, i]``: samples leaving at exit ``i`` under threshold row ``t``;
    ``sums[name][t]``: ``sum_n F[n, exit(t, n)]`` for each table given."""

    counts: np.ndarray
    sums: dict[str, np.ndarray]


def as_threshold_array(
    thresholds: float | np.ndarray | list, num_exits: int, policy: str = "policy"
) -> np.ndarray:
    """Thresholds as ``(T,)`` (one shared threshold per operating point) or ``(T, E)`` (one per exit).

    A scalar is one shared threshold. For ``(T, E)`` the final column is
    ignored: the final exit takes what is left.
    """
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim == 0:
        th = th[None]
    if th.ndim == 2 and th.shape[1] != num_exits:
        raise PolicyError(
            f"{policy}: per-exit thresholds must have shape (points, {num_exits}) for {num_exits} exits "
            f"(the final exit's value is ignored), got {th.shape}"
        )
    if th.ndim not in (1, 2):
        raise PolicyError(
            f"{policy}: thresholds must be a scalar, (points,) shared or (points, exits) per exit, got shape {th.shape}"
        )
    if np.isnan(th).any():
        raise PolicyError(f"{policy}: thresholds must not be NaN")
    return th


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise PolicyError(f"scores must be (samples, exits), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise PolicyError("a policy produced NaN scores; every score must be a number or -inf")
    return scores


def exit_indices(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(T, N)`` exit each sample leaves from, for shared ``(T,)`` or per-exit ``(T, E)`` thresholds.

    Materialises ``T x N`` integers: for per-sample outputs and checks. Use
    :func:`exit_sums` for operating-point metrics.
    """
    scores = _check_scores(scores)
    n, e = scores.shape
    th = as_threshold_array(thresholds, e)
    out = np.empty((th.shape[0], n), dtype=np.int64)
    for start, idx in _chunked_exits(scores, th):
        out[start : start + idx.shape[0]] = idx
    return out


def _chunked_exits(scores: np.ndarray, th: np.ndarray):
    """Yield ``(start, exits[chunk, N])`` over chunks of threshold rows."""
    n, e = scores.shape
    step = max(1, _CHUNK_ELEMENTS // max(n * max(e - 1, 1), 1))
    if e == 1:
        for start in range(0, th.shape[0], step):
            yield start, np.zeros((th[start : start + step].shape[0], n), dtype=np.int64)
        return
    if th.ndim == 1:
        prefix = np.maximum.accumulate(scores[:, :-1], axis=1)
        for start in range(0, th.shape[0], step):
            t = th[start : start + step]
            yield start, (prefix[None, :, :] < t[:, None, None]).sum(axis=2, dtype=np.int64)
    else:
        body = scores[:, :-1]
        for start in range(0, th.shape[0], step):
            t = th[start : start + step, :-1]
            fire = body[None, :, :] >= t[:, None, :]
            yield start, np.where(fire.any(axis=2), fire.argmax(axis=2), e - 1).astype(np.int64)


def exit_sums(
    scores: np.ndarray, thresholds: np.ndarray, tables: Mapping[str, np.ndarray]
) -> ExitSums:
    """Exit counts and table sums at each sample's exit, for every threshold row.

    ``tables`` maps names to ``(N, E)`` arrays (bool, int or float); integer
    and bool tables give exact integer sums.
    """
    scores = _check_scores(scores)
    n, e = scores.shape
    th = as_threshold_array(thresholds, e)
    tabs = {}
    for name, table in tables.items():
        table = np.asarray(table)
        if table.shape != (n, e):
            raise PolicyError(f"table '{name}' must have shape {(n, e)}, got {table.shape}")
        tabs[name] = table.astype(np.int64) if table.dtype == bool else table
    if th.ndim == 1:
        return _shared_sums(scores, th, tabs)
    return _per_exit_sums(scores, th, tabs)


def _shared_sums(scores: np.ndarray, th: np.ndarray, tables: dict[str, np.ndarray]) -> ExitSums:
    n, e = scores.shape
    t = th.shape[0]
    sums = {name: np.full(t, tab[:, 0].sum(), dtype=tab.dtype) for name, tab in tables.items()}
    counts = np.zeros((t, e), dtype=np.int64)
    if e == 1:
        counts[:, 0] = n
        return ExitSums(counts, sums)
    prefix = np.maximum.accumulate(scores[:, :-1], axis=1)
    order = np.argsort(th, kind="stable")
    # sample n passes exit i on for every threshold > prefix[n, i]: sorted thresholds from j[n, i] on
    j = np.searchsorted(th[order], prefix, side="right")
    # one bincount for all exits: exit i's start positions are offset into their own block of t + 1
    flat = (j + np.arange(e - 1) * (t + 1)).ravel()

    def per_threshold(weights: np.ndarray | None) -> np.ndarray:
        binned = np.bincount(flat, weights=weights, minlength=(e - 1) * (t + 1))
        running = np.cumsum(binned.reshape(e - 1, t + 1)[:, :t], axis=1)  # (E-1, T), sorted order
        out = np.empty((t, e - 1), dtype=running.dtype)
        out[order] = running.T
        return out

    beyond = per_threshold(None)  # (T, E-1): samples that pass exit i on (leave later)
    for name, tab in tables.items():
        steps = per_threshold((tab[:, 1:] - tab[:, :-1]).ravel().astype(np.float64))
        if tab.dtype.kind in "iu":
            steps = np.rint(steps).astype(np.int64)  # integer weights sum exactly in float64
        sums[name] = sums[name] + steps.sum(axis=1)
    counts[:, 0] = n - beyond[:, 0]
    counts[:, 1:-1] = beyond[:, :-1] - beyond[:, 1:]
    counts[:, -1] = beyond[:, -1]
    return ExitSums(counts, sums)


def _per_exit_sums(scores: np.ndarray, th: np.ndarray, tables: dict[str, np.ndarray]) -> ExitSums:
    n, e = scores.shape
    t = th.shape[0]
    counts = np.zeros((t, e), dtype=np.int64)
    sums = {name: np.zeros(t, dtype=tab.dtype) for name, tab in tables.items()}
    rows = np.arange(n)[None, :]
    for start, idx in _chunked_exits(scores, th):
        stop = start + idx.shape[0]
        for i in range(e):
            counts[start:stop, i] = (idx == i).sum(axis=1)
        for name, tab in tables.items():
            sums[name][start:stop] = tab[rows, idx].sum(axis=1)
    return ExitSums(counts, sums)

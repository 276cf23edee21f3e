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
        tabs[name] = table.view(np.uint8) if table.dtype == bool else table  # one byte a flag
    if th.ndim == 1:
        return _shared_sums(scores, th, tabs)
    return _per_exit_sums(scores, th, tabs)


def _running_max_by_exit(scores: np.ndarray) -> np.ndarray:
    """``(E-1, N)`` running maximum ``M[i, n] = max_{j <= i} S[n, j]`` over the non-final exits.

    Exit-major (one contiguous row per exit): each step is one ``np.maximum`` over a row, where
    ``np.maximum.accumulate`` along the short exit axis of an ``(N, E)`` array walks memory with
    a stride and costs several times more.
    """
    body = np.array(scores[:, :-1].T, dtype=np.float64, order="C")
    for i in range(1, body.shape[0]):
        np.maximum(body[i - 1], body[i], out=body[i])
    return body


# a bucket holding more thresholds than this sends the search back to np.searchsorted
_MAX_BUCKET = 8


def count_at_most(sorted_thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``#{t : sorted_thresholds[t] <= v}`` for every value (``np.searchsorted(..., side="right")``).

    The same integers as ``searchsorted``, found by arithmetic instead of a binary search per
    value: the finite threshold range is cut into equal buckets, each value's bucket is computed
    as ``floor((v - lo) * scale)`` (clipped), and only the few thresholds in that bucket are
    compared. The bucket map is monotone in ``v`` (IEEE subtraction and multiplication by a
    positive constant never reverse an order), and thresholds are bucketed by the very same
    arithmetic, so every threshold of an earlier bucket is ``<=`` the value and every threshold of
    a later one is ``>`` it: the result is exact, ties and infinities included. When the
    thresholds cluster so that a bucket holds more than a few of them, it falls back to
    ``np.searchsorted``.
    """
    th = np.asarray(sorted_thresholds, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    finite = th[np.isfinite(th)]
    t = th.shape[0]
    if t < 2 or finite.size < 2 or finite[-1] <= finite[0] or values.size < 4 * t:
        return np.searchsorted(th, values, side="right")
    lo = finite[0]
    for per_threshold in (1, 4):
        buckets = per_threshold * t
        scale = buckets / (finite[-1] - lo)

        def bucket(x: np.ndarray, scale: float = scale, buckets: int = buckets) -> np.ndarray:
            b = np.subtract(x, lo)
            b *= scale
            # +-inf and values outside the range: the first or last bucket
            np.clip(b, 0.0, float(buckets - 1), out=b)
            return b.astype(np.intp)

        start = np.searchsorted(bucket(th), np.arange(buckets + 1), side="left")
        occupancy = int(np.diff(start).max())
        if occupancy <= _MAX_BUCKET:
            break
    else:
        return np.searchsorted(th, values, side="right")
    # NaN after the last threshold: never <= a value, so the last bucket needs no length check
    padded = np.concatenate([th, np.full(occupancy, np.nan)])
    first = np.take(start, bucket(values))  # np.take: a plain gather, cheaper than indexing
    out = first + (np.take(padded, first) <= values)
    for k in range(1, occupancy):
        out += np.take(padded, first + k) <= values
    return out


def _sum_dtype(table: np.ndarray) -> type:
    """Integer (and flag) tables sum exactly in int64; anything else in float64."""
    return np.int64 if table.dtype.kind in "biu" else np.float64


def _shared_sums(scores: np.ndarray, th: np.ndarray, tables: dict[str, np.ndarray]) -> ExitSums:
    n, e = scores.shape
    t = th.shape[0]
    sums = {
        name: np.full(t, tab[:, 0].sum(dtype=_sum_dtype(tab)), dtype=_sum_dtype(tab))
        for name, tab in tables.items()
    }
    counts = np.zeros((t, e), dtype=np.int64)
    if e == 1:
        counts[:, 0] = n
        return ExitSums(counts, sums)
    in_order = t < 2 or bool(np.all(th[1:] >= th[:-1]))
    order = None if in_order else np.argsort(th, kind="stable")
    sorted_th = th if order is None else th[order]
    # sample n passes exit i on for every threshold > M[i, n]: sorted thresholds from j[i, n] on
    j = count_at_most(sorted_th, _running_max_by_exit(scores))  # (E-1, N)
    # one bincount for all exits: exit i's start positions are offset into their own block of t + 1
    j += (np.arange(e - 1) * (t + 1))[:, None]
    flat = j.ravel()

    def per_threshold(weights: np.ndarray | None) -> np.ndarray:
        binned = np.bincount(flat, weights=weights, minlength=(e - 1) * (t + 1))
        running = np.cumsum(binned.reshape(e - 1, t + 1)[:, :t], axis=1)  # (E-1, T), sorted order
        if order is None:
            return running.T
        out = np.empty((t, e - 1), dtype=running.dtype)
        out[order] = running.T
        return out

    beyond = per_threshold(None)  # (T, E-1): samples that pass exit i on (leave later)
    for name, tab in tables.items():
        by_exit = tab.T  # steps in the exit-major order of ``flat``
        step = np.subtract(by_exit[1:], by_exit[:-1], dtype=np.float64)
        steps = per_threshold(step.ravel())
        if tab.dtype.kind in "iu":
            steps = np.rint(steps).astype(np.int64)  # integer weights sum exactly in float64
        sums[name] = sums[name] + steps.sum(axis=1)
    counts[:, 0] = n - beyond[:, 0]
    counts[:, 1:-1] = beyond[:, :-1] - beyond[:, 1:]
    counts[:, -1] = beyond[:, -1]
    return ExitSums(counts, sums)


def _per_exit_sums(scores: np.ndarray, th: np.ndarray, tables: dict[str, np.ndarray]) -> ExitSums:
    """Per-exit thresholds, a chunk of threshold rows at a time, walking the exits once.

    ``alive[t, n]``: sample ``n`` has passed every exit so far under row ``t``. Its exit index is
    the number of exits it passed, so the walk is one comparison, one ``&=`` and one ``+=`` on
    ``(chunk, N)`` arrays per exit (no ``(chunk, N, E)`` array, no ``argmax`` over the short
    exit axis); counts come from how many stay alive at each exit, and each table's sum from one
    flat ``take`` of the value at every sample's exit.
    """
    n, e = scores.shape
    t = th.shape[0]
    counts = np.zeros((t, e), dtype=np.int64)
    sums = {name: np.zeros(t, dtype=_sum_dtype(tab)) for name, tab in tables.items()}
    by_exit = np.ascontiguousarray(scores.T)  # (E, N)
    flat_tables = {name: np.ascontiguousarray(tab.T).ravel() for name, tab in tables.items()}
    columns = np.arange(n)
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, t, step):
        rows = th[start : start + step]
        m = rows.shape[0]
        alive = np.ones((m, n), dtype=bool)
        below = np.empty((m, n), dtype=bool)
        idx = np.zeros((m, n), dtype=np.int64)
        passed = np.empty((m, e), dtype=np.int64)
        passed_before = n
        for i in range(e - 1):
            np.less(by_exit[i][None, :], rows[:, i][:, None], out=below)
            alive &= below
            idx += alive
            passed[:, i] = np.count_nonzero(alive, axis=1)
            counts[start : start + m, i] = passed_before - passed[:, i]
            passed_before = passed[:, i]
        counts[start : start + m, e - 1] = passed_before
        idx *= n
        idx += columns  # flat position of (exit taken, sample) in the exit-major tables
        for name, flat in flat_tables.items():
            sums[name][start : start + m] = np.take(flat, idx).sum(axis=1, dtype=sums[name].dtype)
    return ExitSums(counts, sums)

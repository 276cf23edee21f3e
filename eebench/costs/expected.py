"""Expected cost of an operating point from its exit distribution.

A sample that leaves at exit ``i`` paid the cumulative cost of exit ``i``
(all stages and heads up to it), so the expected cost per sample is
``sum_i p_i * cumulative_i``. The same arithmetic serves MACs, latency and
energy; it is vectorised over many operating points at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SUM_TOLERANCE = 1e-6


def expected_cost(
    exit_fractions: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
    cumulative: Sequence[float] | np.ndarray,
) -> float | np.ndarray:
    """``sum_i p_i * cumulative_i`` for one exit distribution (1-D) or one per row (2-D).

    Returns a float for a 1-D ``exit_fractions`` and an array with one value
    per row (operating point) for a 2-D one. Fractions must be finite,
    non-negative and sum to 1 (within 1e-6) in every row.
    """
    p = np.asarray(exit_fractions, dtype=np.float64)
    c = np.asarray(cumulative, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(
            f"expected_cost: cumulative must be a non-empty 1-D vector (one value per exit), got shape {c.shape}"
        )
    if not np.all(np.isfinite(c)):
        raise ValueError(f"expected_cost: cumulative costs must be finite, got {c.tolist()}")
    if p.ndim not in (1, 2) or p.shape[-1] != c.size:
        raise ValueError(
            f"expected_cost: exit_fractions must have shape ({c.size},) or (points, {c.size}) to match "
            f"{c.size} exits, got shape {p.shape}"
        )
    rows = np.atleast_2d(p)
    if not np.all(np.isfinite(rows)):
        bad = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise ValueError(
            f"expected_cost: exit fractions of row {bad} are not finite: {rows[bad].tolist()}"
        )
    if np.any(rows < 0):
        bad_row, bad_exit = (int(v) for v in np.argwhere(rows < 0)[0])
        raise ValueError(
            f"expected_cost: exit fractions must be non-negative, row {bad_row} has "
            f"{float(rows[bad_row, bad_exit]):.6g} at exit {bad_exit}"
        )
    sums = rows.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if np.any(off):
        bad = int(np.argmax(off))
        raise ValueError(
            f"expected_cost: exit fractions must sum to 1, row {bad} sums to {float(sums[bad]):.6g} "
            f"({rows[bad].tolist()})"
        )
    out = rows @ c
    return float(out[0]) if p.ndim == 1 else out

"""Confidence of one row of logits in plain Python floats: the executor's batch-1 decision path.

At batch 1 a numpy call costs more than its arithmetic (argument parsing, type
resolution, a fresh array), and right after a stage has run it costs several
times more again (the stage evicts numpy's code and data from the caches).
The per-exit decision of a per-sample early-exit run therefore computes the
confidence of its one row of logits with ``math.exp``/``math.log`` on a list
of floats: no array is allocated and no ufunc is dispatched.

These kernels compute the same quantities as the vectorised measures in
:mod:`eebench.policies.confidence`, but not with the same floating-point
operations (numpy's SIMD ``exp``/``log`` and pairwise summation round
differently from ``math`` and a running sum), so the two may differ in the
last bits: by at most ~1e-15 on confidences in [0, 1] for up to
:data:`ROW_MAX_CLASSES` classes. A decision is only taken on this path when
the confidence is farther than :data:`ROW_TOLERANCE` from the threshold;
closer than that, the decider recomputes the exact vectorised confidence, so
decisions stay identical to the vectorised evaluation's, ties included.

Each kernel returns ``None`` where it does not apply (fewer than two classes):
the caller then takes the vectorised path, which gives the same result or the
same error as for any batch.
"""

from __future__ import annotations

from collections.abc import Callable
from math import exp, log

import numpy as np

from eebench.policies.confidence import entropy_confidence, max_softmax, score_margin

RowConfidence = Callable[[list[float]], float | None]

ROW_TOLERANCE = 2.0**-30
"""Confidences this close to a threshold (~9.3e-10) are decided on the exact vectorised path.
The kernels here agree with the vectorised measures to ~1e-15 (tests/test_row_confidence.py
measures it), so the band is ~10^6 times wider than any disagreement it has to catch."""

ROW_MAX_CLASSES = 64
"""Above this many classes one numpy pass over the row is cheaper than a Python loop over it
(measured on an Xeon with numpy 2.4: the two break even between 64 and 100 classes)."""


def row_max_softmax(values: list[float]) -> float | None:
    """Largest softmax probability: ``1 / sum_j exp(x_j - max x)``."""
    if len(values) < 2:
        return None
    m = max(values)
    s = 0.0
    for v in values:
        s += exp(v - m)
    return 1.0 / s


def row_score_margin(values: list[float]) -> float | None:
    """Top-1 minus top-2 softmax probability: ``(1 - exp(x_(2) - x_(1))) / sum_j exp(x_j - x_(1))``."""
    if len(values) < 2:
        return None
    top = sorted(values)
    m = top[-1]
    s = 0.0
    for v in top:
        s += exp(v - m)
    return (1.0 - exp(top[-2] - m)) / s


def row_entropy(values: list[float]) -> float | None:
    """``1 - H / log C`` clipped to [0, 1], with ``H = log s - sum_j e_j z_j / s`` for
    ``z_j = x_j - max x``, ``e_j = exp(z_j)``, ``s = sum_j e_j`` (the softmax entropy)."""
    n = len(values)
    if n < 2:
        return None
    m = max(values)
    s = 0.0
    t = 0.0
    for v in values:
        z = v - m
        e = exp(z)
        s += e
        t += e * z
    h = log(s) - t / s
    return min(max(1.0 - h / log(n), 0.0), 1.0)


def row_softmax_parts(values: list[float]) -> tuple[float, float, float, int]:
    """One pass over a row (two or more classes) for several measures at once:
    ``(s, t, z2, C)`` with ``s = sum_j e_j``, ``t = sum_j e_j z_j``, ``z2 = x_(2) - x_(1)``
    (second largest minus largest logit), ``z_j = x_j - max x`` and ``e_j = exp(z_j)``."""
    top = sorted(values)
    m = top[-1]
    s = 0.0
    t = 0.0
    for v in top:
        z = v - m
        e = exp(z)
        s += e
        t += e * z
    return s, t, top[-2] - m, len(top)


def _max_softmax_of_parts(s: float, t: float, z2: float, n: int) -> float:
    return 1.0 / s


def _score_margin_of_parts(s: float, t: float, z2: float, n: int) -> float:
    return (1.0 - exp(z2)) / s


def _entropy_of_parts(s: float, t: float, z2: float, n: int) -> float:
    return min(max(1.0 - (log(s) - t / s) / log(n), 0.0), 1.0)


FROM_PARTS: dict[
    Callable[[np.ndarray], np.ndarray], Callable[[float, float, float, int], float]
] = {
    max_softmax: _max_softmax_of_parts,
    score_margin: _score_margin_of_parts,
    entropy_confidence: _entropy_of_parts,
}
"""Each built-in measure from :func:`row_softmax_parts` (for deciders that need several)."""

ROW_KERNELS: dict[Callable[[np.ndarray], np.ndarray], RowConfidence] = {
    max_softmax: row_max_softmax,
    score_margin: row_score_margin,
    entropy_confidence: row_entropy,
}
"""Row kernel of each built-in vectorised measure (keyed by the measure function itself, so a
measure registered by a user simply has none and is decided on the vectorised path)."""


def row_kernel(measure: Callable[[np.ndarray], np.ndarray]) -> RowConfidence | None:
    """The batch-1 kernel of a vectorised confidence measure, or None when it has none."""
    return ROW_KERNELS.get(measure)

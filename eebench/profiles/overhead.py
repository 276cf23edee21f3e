"""Per-operator overhead from chains of tiny operators: a straight-line fit, not a constant.

One call of a chain of ``k`` operators that do (almost) no work costs
``intercept + k x slope``: the slope is what each operator adds (the framework's
dispatch of a module call and its kernel), the intercept what calling the chain
costs once. Timing one tiny operator alone cannot separate the two; timing
chains of several lengths can, by ordinary least squares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChainFit:
    """``seconds = intercept_s + ops x slope_s`` over the chain lengths in ``ops``."""

    slope_s: float
    intercept_s: float
    r2: float
    ops: tuple[int, ...]


def fit_chain(points: Sequence[tuple[int, float]]) -> ChainFit:
    """Least-squares line through ``(ops, seconds)`` points of at least two chain lengths."""
    xs = [float(k) for k, _ in points]
    ys = [float(t) for _, t in points]
    if len(set(xs)) < 2:
        raise ValueError(
            f"a chain fit needs at least two different chain lengths, got {sorted(set(xs))}"
        )
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return ChainFit(slope, intercept, r2, tuple(sorted({int(k) for k, _ in points})))

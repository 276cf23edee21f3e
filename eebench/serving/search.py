"""The largest Server-scenario QPS that holds a latency bound.

A target QPS *holds* when LoadGen calls its Server run VALID: the percentile latency is within
the bound, LoadGen's early-stopping rule lets that percentile be claimed, and the minimum
duration and query count were met. The search probes the lower end, then the upper end, then
bisects geometrically (QPS spans orders of magnitude) ``steps`` times between the largest
rate that held and the smallest that did not. Every probe is a full LoadGen run and is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OFFLINE_HEADROOM = 2.0
"""The search's upper end is at most this many times the Offline throughput of the same
strategy (when Offline ran first): an arrival rate the server cannot even sustain with every
query queued at once cannot hold a latency bound; the headroom absorbs the noise of a short
Offline run on a shared machine."""


@dataclass
class QpsSearch:
    """The result: ``max_qps`` (NaN when even ``lo`` failed) and every probe ``(qps, run)``."""

    lo: float
    hi: float
    max_qps: float
    probes: list[tuple[float, Any]] = field(default_factory=list)

    @property
    def at_upper_end(self) -> bool:
        """True when ``hi`` itself held: the real maximum may be higher."""
        return self.max_qps == self.hi


def find_max_qps(
    run_at: Callable[[float], Any],
    holds: Callable[[Any], bool],
    lo: float,
    hi: float,
    steps: int,
) -> QpsSearch:
    """Search ``[lo, hi]`` with ``run_at(qps)`` (one Server run) and ``holds(run)``."""
    if not 0 < lo <= hi:
        raise ValueError(f"the QPS search needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    out = QpsSearch(lo, hi, float("nan"))

    def probe(qps: float) -> bool:
        run = run_at(qps)
        out.probes.append((qps, run))
        return bool(holds(run))

    if not probe(lo):
        return out
    good, bad = lo, hi
    if hi > lo and probe(hi):
        out.max_qps = hi
        return out
    for _ in range(max(0, steps)):
        mid = math.sqrt(good * bad)
        if probe(mid):
            good = mid
        else:
            bad = mid
    out.max_qps = good
    return out

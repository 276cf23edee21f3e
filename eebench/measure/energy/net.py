"""Net and gross energy per inference, with 95% confidence intervals, from measured windows.

A busy window ``w`` ran ``n_w`` inferences in ``t_w`` seconds and used
``E_w`` joules (the meter's total domain); an idle window ``j`` used ``E_j``
joules in ``t_j`` seconds with nothing running. Per inference:

* gross ``g_w = E_w / n_w`` — everything the device drew, idle power included;
* idle power ``P_j = E_j / t_j``, its mean ``P`` over the idle windows;
* net ``u_w = (E_w - P t_w) / n_w`` — what the work added on top of idling.

Each figure is the mean over its windows with a Student-t interval. The net
interval carries both sources of spread: the busy windows' (``var(u_w) / W``)
and the idle mean's, scaled by the seconds per inference
(``mean(t_w / n_w)^2 var(P_j) / J``), with Welch-Satterthwaite degrees of
freedom. Windows are long (many meter updates), so they are treated as
independent draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from eebench.measure.stats import DEFAULT_CONFIDENCE as CONFIDENCE
from eebench.measure.stats import Interval

T_METHOD = "student-t over windows"
NET_METHOD = "student-t over windows, idle spread added (Welch-Satterthwaite)"


@dataclass(frozen=True)
class Window:
    """One interval between two synchronised readings."""

    joules: float
    seconds: float
    inferences: int = 0


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` with a Student-t interval (NaN bounds for fewer than two values).

    A handful of long windows is too few for a bootstrap to reach its nominal coverage;
    the t interval is exact for normal window-to-window spread and close to it otherwise.
    """
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, confidence, 0, T_METHOD)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, confidence, n, T_METHOD)
    se = float(v.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Interval(mean, mean - half, mean + half, confidence, n, T_METHOD)


@dataclass(frozen=True)
class NetEnergy:
    """Gross and net joules per inference and idle watts, each with its interval."""

    gross_j: Interval
    net_j: Interval
    idle_w: Interval
    busy_w: float
    inferences: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def net_energy(
    busy: Sequence[Window], idle: Sequence[Window], confidence: float = CONFIDENCE
) -> NetEnergy:
    """Gross, net (idle subtracted) and idle figures from busy and idle windows."""
    if not busy or any(w.inferences <= 0 for w in busy):
        raise ValueError("every busy window needs at least one inference")
    if not idle or any(w.seconds <= 0 for w in idle):
        raise ValueError("the idle baseline needs at least one window of positive length")
    e = np.array([w.joules / w.inferences for w in busy])
    s = np.array([w.seconds / w.inferences for w in busy])
    p = np.array([w.joules / w.seconds for w in idle])
    gross = mean_interval(e, confidence)
    idle_w = mean_interval(p, confidence)
    u = e - idle_w.estimate * s
    net = float(u.mean())
    n_b, n_i = len(busy), len(idle)
    a = float(u.var(ddof=1)) / n_b if n_b > 1 else math.nan
    b = float(s.mean()) ** 2 * (float(p.var(ddof=1)) / n_i if n_i > 1 else 0.0)
    if not math.isfinite(a):
        net_iv = Interval(net, math.nan, math.nan, confidence, n_b, NET_METHOD)
    elif a + b == 0:
        net_iv = Interval(net, net, net, confidence, n_b, NET_METHOD)
    else:
        dof_terms = a**2 / (n_b - 1) + (b**2 / (n_i - 1) if n_i > 1 else 0.0)
        dof = (a + b) ** 2 / dof_terms
        half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(a + b)
        net_iv = Interval(net, net - half, net + half, confidence, n_b, NET_METHOD)
    total_j = sum(w.joules for w in busy)
    total_s = sum(w.seconds for w in busy)
    return NetEnergy(
        gross_j=gross,
        net_j=net_iv,
        idle_w=idle_w,
        busy_w=total_j / total_s if total_s > 0 else math.nan,
        inferences=sum(w.inferences for w in busy),
    )

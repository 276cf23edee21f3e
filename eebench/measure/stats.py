"""Statistics that say how sure they are: confidence intervals for timing and energy samples.

Three kinds of interval, each chosen for what it summarises:

* **Medians and percentiles**: the distribution-free order-statistic interval.
  The number of samples below the true ``q``-quantile is Binomial(n, q), so a
  pair of order statistics ``x_(l) <= x_(u)`` covers it with a probability that
  the binomial distribution gives exactly, whatever the shape of the latency
  distribution (skewed, heavy-tailed, bimodal). See :func:`quantile_ci`.
* **Means and ratios of small samples** (energy readings, measured/predicted
  ratios): scipy's BCa bootstrap (:func:`bootstrap_ci`).
* **Long timing series**: the circular block bootstrap (:func:`block_bootstrap`),
  which resamples whole blocks of consecutive samples so that the serial
  dependence inside a block survives the resampling. The block length comes
  from the data (Politis & White 2004, corrected by Patton, Politis & White
  2009: :func:`optimal_block_length`).

What the intervals assume. The order-statistic and plain bootstrap intervals
assume independent, identically distributed samples. Consecutive timing samples
are not: caches, frequency scaling, the scheduler and other tenants make them
positively autocorrelated, which makes an i.i.d. interval *too narrow* (it
behaves as if there were more independent information than there is). The
intervals on a single measurement are therefore a statement about the
measurement's own precision under that assumption, used to decide when to stop
measuring; decisions across runs (``eebench compare``) use the block bootstrap,
which keeps the dependence. Neither accounts for the machine changing between
two runs: that is what a minimum effect size is for.

Percentiles in the tail are only reported when the sample count supports them:
:func:`min_samples_for_percentile` derives MLPerf LoadGen's early-stopping
minimum from the binomial distribution (64 samples for p90, 662 for p99).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ArrayLike = Sequence[float] | np.ndarray

DEFAULT_CONFIDENCE = 0.95
"""Two-sided level of every interval unless a caller asks for another."""

PERCENTILE_CONFIDENCE = 0.99
"""One-sided level of the upper bound behind the percentile sample-count rule (LoadGen's)."""

PERCENTILE_DISCARD = 1
"""Samples above the bound the percentile rule tolerates (LoadGen discards the slowest one)."""

INSUFFICIENT = "insufficient samples"
"""What a percentile field says, in text, when the sample count does not support it."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval (``lo <= estimate <= hi``).

    ``lo``/``hi`` are NaN when ``n`` samples cannot bound the estimate at ``confidence``;
    ``method`` names how the interval was computed.
    """

    estimate: float
    lo: float
    hi: float
    confidence: float
    n: int
    method: str

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when undefined)."""
        return (self.hi - self.lo) / 2

    @property
    def rel_half_width(self) -> float:
        """Half-width relative to the estimate: 0.02 means ``estimate ± 2%``."""
        if not self.defined or self.estimate == 0:
            return math.nan
        return self.half_width / abs(self.estimate)

    def contains(self, value: float) -> bool:
        return self.defined and self.lo <= value <= self.hi


def _as_array(samples: ArrayLike) -> np.ndarray:
    a = np.asarray(samples, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("cannot compute a statistic of an empty sample")
    return a


def _check_level(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")


# ---------------------------------------------------------------------- order statistics
def quantile_ci_ranks(n: int, q: float, confidence: float = DEFAULT_CONFIDENCE) -> tuple[int, int]:
    """0-based ranks ``(l, u)`` of the order statistics bounding the ``q``-quantile of ``n``
    i.i.d. samples with coverage >= ``confidence``; ``(-1, -1)`` when no such pair exists.

    With ``B ~ Binomial(n, q)`` the number of samples below the true quantile,
    ``P(x_(l) <= xi_q < x_(u)) = P(l+1 <= B <= u)`` (1-based order statistics
    ``x_(l+1)``, ``x_(u+1)``). ``l`` is the largest rank with ``P(B <= l) <= alpha/2``
    and ``u`` the smallest with ``P(B <= u) >= 1 - alpha/2``: each tail holds at most
    ``alpha/2``, so the interval is conservative (exact coverage in :func:`quantile_ci_coverage`).
    """
    _check_level(confidence)
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    if n < 1:
        return -1, -1
    tail = (1 - confidence) / 2
    lo = int(sps.binom.ppf(tail, n, q))
    if sps.binom.cdf(lo, n, q) > tail:
        lo -= 1
    hi = int(sps.binom.ppf(1 - tail, n, q))
    if lo < 0 or hi >= n:
        return -1, -1
    return lo, hi


def quantile_ci_coverage(n: int, q: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The exact coverage of :func:`quantile_ci`'s interval for ``n`` continuous i.i.d. samples
    (NaN when no interval exists)."""
    lo, hi = quantile_ci_ranks(n, q, confidence)
    if lo < 0:
        return math.nan
    return float(sps.binom.cdf(hi, n, q) - sps.binom.cdf(lo, n, q))


def quantile_ci(samples: ArrayLike, q: float, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """The ``q``-quantile (numpy's linear interpolation) with its distribution-free
    order-statistic interval; ``lo``/``hi`` are NaN when too few samples bound it
    (e.g. fewer than 6 for a 95% interval of the median)."""
    a = _as_array(samples)
    n = a.size
    estimate = float(np.quantile(a, q))
    lo_rank, hi_rank = quantile_ci_ranks(n, q, confidence)
    if lo_rank < 0:
        return Interval(estimate, math.nan, math.nan, confidence, n, "order-statistic")
    part = np.partition(a, (lo_rank, hi_rank))
    return Interval(
        estimate,
        float(part[lo_rank]),
        float(part[hi_rank]),
        confidence,
        n,
        "order-statistic",
    )


def median_ci(samples: ArrayLike, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """The median with its distribution-free order-statistic interval (see :func:`quantile_ci`)."""
    return quantile_ci(samples, 0.5, confidence)


@functools.lru_cache(maxsize=256)
def min_samples_for_percentile(
    q: float,
    confidence: float = PERCENTILE_CONFIDENCE,
    discard: int = PERCENTILE_DISCARD,
) -> int:
    """The fewest samples whose order statistics bound the ``q``-quantile from above.

    MLPerf LoadGen's early-stopping rule: after discarding the ``discard`` slowest
    samples, the slowest remaining one must be an upper bound of the true
    ``q``-quantile with probability ``confidence``, i.e. at most ``discard`` of
    ``n`` samples may lie above it: ``P(Binomial(n, 1 - q) <= discard) <= 1 - confidence``.
    With LoadGen's defaults (99%, one discarded) this gives 64 for p90 and 662 for p99.
    """
    _check_level(confidence)
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    if discard < 0:
        raise ValueError(f"discard must be >= 0, got {discard!r}")
    p_over = 1.0 - q
    # the binomial tail shrinks monotonically in n: bracket, then bisect
    lo, hi = discard + 1, discard + 1
    while sps.binom.cdf(discard, hi, p_over) > 1 - confidence:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if sps.binom.cdf(discard, mid, p_over) <= 1 - confidence:
            hi = mid
        else:
            lo = mid + 1
    return int(lo)


def percentile_supported(n: int, q: float) -> bool:
    """True when ``n`` samples support reporting the ``q``-quantile (see
    :func:`min_samples_for_percentile`)."""
    return n >= min_samples_for_percentile(q)


# ---------------------------------------------------------------------- bootstrap (i.i.d.)
def bootstrap_ci(
    data: Sequence[ArrayLike],
    statistic: Callable[..., float | np.ndarray],
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """scipy's bootstrap interval of ``statistic(*data)`` (each sample resampled on its own).

    For means and ratios of a modest number of independent readings (energy per
    window, measured/predicted ratios per operating point). ``statistic`` must
    accept ``axis`` like numpy reductions. Falls back to the percentile method
    when BCa is degenerate (all resampled statistics equal).
    """
    _check_level(confidence)
    arrays = tuple(_as_array(d) for d in data)
    estimate = float(statistic(*arrays, axis=-1))
    n = min(a.size for a in arrays)
    if n < 2:
        return Interval(estimate, math.nan, math.nan, confidence, n, f"bootstrap-{method}")
    if all(np.ptp(a) == 0 for a in arrays):
        return Interval(estimate, estimate, estimate, confidence, n, "constant samples")
    res = sps.bootstrap(
        arrays,
        statistic,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method=method,
        random_state=np.random.default_rng(seed),
        vectorized=True,
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if (math.isnan(lo) or math.isnan(hi)) and method != "percentile":
        return bootstrap_ci(data, statistic, confidence, n_resamples, seed, "percentile")
    return Interval(estimate, lo, hi, confidence, n, f"bootstrap-{method}")


MAX_BLOCKS = 2000
"""Most blocks per resample in :func:`mean_ci` with a data-driven block length."""


def mean_ci(
    samples: ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
    block_length: int | None = 1,
) -> Interval:
    """The mean with a (block) bootstrap percentile interval.

    ``block_length=1`` is the ordinary i.i.d. bootstrap; ``None`` picks the block
    length from the data (:func:`optimal_block_length`), for serially dependent
    series, and at least ``n / MAX_BLOCKS`` so a resample has at most
    ``MAX_BLOCKS`` blocks (a longer block than needed keeps the interval valid,
    only a little less precise). The mean of a circular-block resample is the
    mean of its blocks' means, so each resample costs ``n / block_length``
    operations, not ``n``: cheap even for 100,000 timing samples.
    """
    _check_level(confidence)
    a = _as_array(samples)
    n = a.size
    estimate = float(a.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, confidence, n, "bootstrap")
    if block_length is None:
        b = max(optimal_block_length(a), math.ceil(n / MAX_BLOCKS))
    else:
        b = int(block_length)
    b = max(1, min(b, n))
    block_means = _circular_block_means(a, b)
    k = math.ceil(n / b)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // k)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        starts = rng.integers(0, n, size=(stop - start, k))
        boot[start:stop] = block_means[starts].mean(axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    method = "bootstrap" if b == 1 else f"circular-block-bootstrap(b={b})"
    return Interval(estimate, float(lo), float(hi), confidence, n, method)


def _circular_block_means(a: np.ndarray, b: int) -> np.ndarray:
    """Mean of the ``b`` consecutive samples starting at each index, wrapping around."""
    ext = np.concatenate([a, a[: b - 1]]) if b > 1 else a
    c = np.concatenate([[0.0], np.cumsum(ext)])
    return (c[b : b + a.size] - c[: a.size]) / b


# ---------------------------------------------------------------------- serial dependence
def autocorrelation(samples: ArrayLike, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags ``0..max_lag`` (biased estimator, via FFT)."""
    a = _as_array(samples)
    n = a.size
    x = a - a.mean()
    var = float(x @ x)
    max_lag = int(min(max_lag, n - 1))
    if var == 0:
        out = np.zeros(max_lag + 1)
        out[0] = 1.0
        return out
    size = 1 << int(2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    acov = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1]
    return acov / var


def optimal_block_length(samples: ArrayLike) -> int:
    """Block length for the circular block bootstrap, from the data.

    Politis & White (2004) with the correction of Patton, Politis & White
    (2009): the autocorrelations are cut where ``K_n = max(5, log10 n)``
    consecutive ones are insignificant (``|rho| < 2 sqrt(log10(n) / n)``), a
    flat-top lag window estimates the spectral quantities, and
    ``b = (2 G^2 / D)^(1/3) n^(1/3)`` with ``D = 4/3 g(0)^2``. Capped at
    ``min(3 sqrt(n), n / 3)``; at least 1. Independent samples give ``b`` near 1;
    a slow drift gives long blocks.
    """
    a = _as_array(samples)
    n = a.size
    if n < 8 or np.ptp(a) == 0:
        return 1
    k_n = max(5, int(math.log10(n)))
    m_max = int(math.ceil(math.sqrt(n))) + k_n
    b_max = max(1, int(math.ceil(min(3 * math.sqrt(n), n / 3))))
    rho = autocorrelation(a, m_max + k_n)
    crit = 2 * math.sqrt(math.log10(n) / n)
    insignificant = np.abs(rho[1:]) < crit  # lags 1..
    m_hat = None
    for m in range(0, len(insignificant) - k_n + 1):
        if insignificant[m : m + k_n].all():
            m_hat = m
            break
    m = m_max if m_hat is None else min(2 * max(m_hat, 1), m_max)
    m = min(m, len(rho) - 1)
    var = float(np.var(a))
    acov = rho[: m + 1] * var
    k = np.arange(1, m + 1)
    lam = np.where(k / m <= 0.5, 1.0, 2.0 * (1.0 - k / m))
    g = float(np.sum(2 * lam * k * acov[1:]))
    g0 = float(acov[0] + np.sum(2 * lam * acov[1:]))
    d_cb = 4.0 / 3.0 * g0**2
    if d_cb <= 0 or g == 0:
        return 1
    b = (2 * g**2 / d_cb) ** (1 / 3) * n ** (1 / 3)
    return int(max(1, min(math.ceil(b), b_max)))


# ---------------------------------------------------------------------- block bootstrap
def block_bootstrap(
    samples: ArrayLike,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_resamples: int = 500,
    block_length: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Circular block bootstrap replicates of ``statistic`` and the block length used.

    Each resample concatenates ``ceil(n / b)`` blocks of ``b`` consecutive samples
    starting at uniformly drawn positions (wrapping around the end), cut to ``n``.
    ``statistic`` takes a 2-D array (one resample per row) and reduces ``axis=1``.
    ``block_length=None`` picks it with :func:`optimal_block_length`.
    """
    a = _as_array(samples)
    n = a.size
    b = optimal_block_length(a) if block_length is None else int(block_length)
    b = max(1, min(b, n))
    k = math.ceil(n / b)
    rng = np.random.default_rng(seed)
    offsets = np.arange(b)
    out = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // (k * b))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        starts = rng.integers(0, n, size=(stop - start, k, 1))
        idx = ((starts + offsets) % n).reshape(stop - start, k * b)[:, :n]
        out[start:stop] = statistic(a[idx])
    return out, b


def _median_rows(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=1)


@dataclass(frozen=True)
class RatioInterval:
    """``median(b) / median(a)`` with a block-bootstrap interval at ``confidence``.

    The interval is the normal-approximation bootstrap interval on the log scale,
    ``exp(log r ± z * se)``, with ``se`` the standard deviation of the bootstrap
    replicates of ``log r``: tail quantiles of a simultaneous (Bonferroni-adjusted)
    level such as 99.9% would need tens of thousands of percentile replicates;
    a standard error is stable from a few hundred.
    """

    ratio: float
    lo: float
    hi: float
    confidence: float
    se_log: float
    block_a: int
    block_b: int
    n_a: int
    n_b: int

    def at(self, confidence: float) -> tuple[float, float]:
        """The interval at another level, from the same bootstrap standard error."""
        _check_level(confidence)
        z = float(sps.norm.ppf(1 - (1 - confidence) / 2))
        log_r = math.log(self.ratio)
        return math.exp(log_r - z * self.se_log), math.exp(log_r + z * self.se_log)


MAX_BOOTSTRAP_SAMPLES = 20_000
"""Longer series are thinned (every k-th sample) for the bootstrap of a median ratio.

The point estimate still uses every sample; the interval is that of the thinned
series, i.e. at most sqrt(k) times too wide (exactly that for independent
samples, less for strongly dependent ones): conservative, and it bounds the
cost of a comparison of runs with 100,000 samples per part."""


def median_ratio_ci(
    a: ArrayLike,
    b: ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = 500,
    seed: int = 0,
) -> RatioInterval:
    """Ratio of medians of two timing series with a circular-block-bootstrap interval.

    The two series are resampled independently (they come from different runs),
    each with its own data-driven block length, so serial dependence inside a
    run widens the interval instead of being mistaken for a difference.
    """
    _check_level(confidence)
    xa, xb = _as_array(a), _as_array(b)
    ma, mb = float(np.median(xa)), float(np.median(xb))
    if ma <= 0 or mb <= 0:
        raise ValueError(f"medians must be positive for a ratio, got {ma} and {mb}")
    ta = xa[:: math.ceil(xa.size / MAX_BOOTSTRAP_SAMPLES)]
    tb = xb[:: math.ceil(xb.size / MAX_BOOTSTRAP_SAMPLES)]
    ba, block_a = block_bootstrap(ta, _median_rows, n_resamples, None, seed)
    bb, block_b = block_bootstrap(tb, _median_rows, n_resamples, None, seed + 1)
    se = float(np.std(np.log(bb) - np.log(ba), ddof=1))
    r = RatioInterval(
        mb / ma, math.nan, math.nan, confidence, se, block_a, block_b, xa.size, xb.size
    )
    lo, hi = r.at(confidence)
    return RatioInterval(mb / ma, lo, hi, confidence, se, block_a, block_b, xa.size, xb.size)

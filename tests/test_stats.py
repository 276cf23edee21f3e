"""Confidence intervals and sample-count rules on known distributions, with seeded draws.

Coverage is checked by simulation: over many seeded trials the interval must
contain the true value about as often as its level says, within a binomial
tolerance (a correct 95% interval misses in ~5% of trials, not never).
"""

import math

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.stats import binom

from eebench.measure.stats import (
    block_bootstrap,
    bootstrap_ci,
    mean_ci,
    median_ci,
    median_ratio_ci,
    min_samples_for_percentile,
    optimal_block_length,
    percentile_supported,
    quantile_ci,
    quantile_ci_coverage,
    quantile_ci_ranks,
)

TRIALS = 1000


def binomial_band(p: float, trials: int, tail: float = 0.001) -> tuple[int, int]:
    """Hit counts a correct interval of coverage ``p`` gives with probability 1 - 2*tail."""
    return int(binom.ppf(tail, trials, p)), int(binom.ppf(1 - tail, trials, p))


def ar1(rng: np.random.Generator, n: int, phi: float, sigma: float = 1.0) -> np.ndarray:
    e = rng.normal(0.0, sigma, n)
    e[0] /= math.sqrt(1 - phi**2)  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], e)  # x[i] = phi * x[i-1] + e[i]


def test_median_interval_ranks_match_the_textbook_table():
    # n = 25: the 8th and 18th order statistics (1-based), coverage 95.67%
    assert quantile_ci_ranks(25, 0.5) == (7, 17)
    assert quantile_ci_coverage(25, 0.5) == pytest.approx(0.9567, abs=1e-4)
    # too few samples for any 95% interval: 0.5**5 * 2 = 6.25% > 5%
    assert quantile_ci_ranks(5, 0.5) == (-1, -1)
    assert quantile_ci_ranks(6, 0.5) == (0, 5)  # 2 * 0.5**6 = 3.1% <= 5%
    ci = median_ci([5.0, 1.0, 4.0, 2.0, 3.0])
    assert ci.estimate == 3.0 and not ci.defined and math.isnan(ci.rel_half_width)


def test_median_interval_covers_the_true_median_in_95_percent_of_trials():
    # lognormal latencies: true median exp(mu), whatever the skew
    rng = np.random.default_rng(20260101)
    n, mu, sigma = 51, math.log(2e5), 0.3
    hits = sum(median_ci(rng.lognormal(mu, sigma, n)).contains(math.exp(mu)) for _ in range(TRIALS))
    exact = quantile_ci_coverage(n, 0.5)  # 0.951 for n = 51
    assert 0.95 <= exact < 0.96
    lo, hi = binomial_band(exact, TRIALS)
    assert lo <= hits <= hi, f"{hits} of {TRIALS} intervals covered the true median"


def test_p90_interval_covers_the_true_p90_of_an_exponential():
    rng = np.random.default_rng(3)
    true_p90 = -math.log(0.1)  # exponential(1): P(X <= t) = 1 - e^-t
    hits = sum(
        quantile_ci(rng.exponential(1.0, 200), 0.9).contains(true_p90) for _ in range(TRIALS)
    )
    lo, hi = binomial_band(quantile_ci_coverage(200, 0.9), TRIALS)
    assert lo <= hits <= hi


def test_percentile_sample_count_rule_gives_loadgens_numbers():
    assert min_samples_for_percentile(0.90) == 64
    assert min_samples_for_percentile(0.99) == 662

    # by hand: n samples support p90 when at most one of them above the true p90 is a
    # 1% event, P(B <= 1) = 0.9**n + n * 0.1 * 0.9**(n - 1) with B ~ Binomial(n, 0.1)
    def tail(n: int, q: float) -> float:
        return q**n + n * (1 - q) * q ** (n - 1)

    assert tail(64, 0.9) <= 0.01 < tail(63, 0.9)
    assert tail(662, 0.99) <= 0.01 < tail(661, 0.99)
    assert not percentile_supported(63, 0.9) and percentile_supported(64, 0.9)
    with pytest.raises(ValueError, match="quantile"):
        min_samples_for_percentile(1.0)


def test_iid_bootstrap_of_the_mean_covers_about_95_percent():
    rng = np.random.default_rng(5)
    trials = 400
    hits = sum(mean_ci(rng.normal(10.0, 2.0, 100), seed=i).contains(10.0) for i in range(trials))
    # the percentile bootstrap undercovers a little at n = 100 (~94%)
    lo, hi = binomial_band(0.94, trials)
    assert lo <= hits <= hi


def test_block_bootstrap_keeps_coverage_under_autocorrelation_where_iid_fails():
    rng = np.random.default_rng(11)
    trials, n = 200, 2000
    block_hits = iid_hits = 0
    for i in range(trials):
        x = 100.0 + ar1(rng, n, phi=0.8)
        block_hits += mean_ci(x, seed=i, block_length=None).contains(100.0)
        iid_hits += mean_ci(x, seed=i, block_length=1).contains(100.0)
    # the i.i.d. interval is ~3x too narrow for phi = 0.8 (variance inflation (1+phi)/(1-phi) = 9)
    assert iid_hits < 0.6 * trials
    assert block_hits > 0.85 * trials


def test_block_length_follows_the_dependence():
    rng = np.random.default_rng(2)
    assert optimal_block_length(rng.normal(size=5000)) <= 3
    b_weak, b_strong = (optimal_block_length(ar1(rng, 5000, phi)) for phi in (0.5, 0.95))
    assert 2 <= b_weak < b_strong <= math.ceil(3 * math.sqrt(5000))
    assert optimal_block_length(np.ones(100)) == 1


def test_block_bootstrap_resamples_whole_blocks_of_the_series():
    x = np.arange(100, dtype=float)
    reps, b = block_bootstrap(x, lambda m: m[:, 1] - m[:, 0], n_resamples=50, block_length=10)
    assert b == 10
    # inside a block consecutive values differ by 1, or by -99 where a block wraps around
    assert set(np.unique(reps)) <= {1.0, -99.0}


def test_bootstrap_ci_of_a_ratio_of_means_uses_both_samples():
    rng = np.random.default_rng(8)
    a, b = rng.normal(10.0, 1.0, 40), rng.normal(13.0, 1.0, 40)
    ci = bootstrap_ci((b, a), lambda x, y, axis=-1: x.mean(axis) / y.mean(axis))
    assert ci.estimate == pytest.approx(b.mean() / a.mean())
    assert ci.lo < ci.estimate < ci.hi and ci.contains(1.3)
    assert not ci.contains(1.0)
    const = bootstrap_ci(([2.0, 2.0, 2.0],), np.mean)
    assert (const.lo, const.hi) == (2.0, 2.0)


def test_median_ratio_interval_under_autocorrelation():
    rng = np.random.default_rng(4)
    a = np.exp(0.05 * ar1(rng, 3000, 0.9) / math.sqrt(1 / (1 - 0.81)))
    b = 1.3 * np.exp(0.05 * ar1(rng, 3000, 0.9) / math.sqrt(1 / (1 - 0.81)))
    r = median_ratio_ci(a, b, confidence=0.99)
    assert r.lo < 1.3 < r.hi and r.lo > 1.1
    assert r.block_a > 3 and r.block_b > 3
    with pytest.raises(ValueError, match="positive"):
        median_ratio_ci([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])

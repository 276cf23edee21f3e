"""Predicted vs measured latency of a true early-exit run, compared like with like.

An operating point's expected latency is a mean over samples, so both sides
of the comparison are means of per-sample latencies, timed by the same clock
in the same loop:

* **measured**: the mean per-sample latency of the true early-exit runs (all
  repeats pooled; none is dropped or preferred), from the input on the device
  to the decision that lets the sample leave.
* **predicted**: the parts of that loop, each timed where it runs by the
  executor's ``parts`` mode on the same samples (stage ``i``; head ``i`` with its
  host copy; the decision at exit ``i``), weighted by the operating point's
  exit mix: ``sum_i r_i (S_i + H_i + D_i)`` with ``r_i`` the fraction of samples
  that reach exit ``i`` (from the vectorised evaluation of the record) and
  ``S_i``, ``H_i``, ``D_i`` the parts' mean times. The decision is a part like a
  stage: no decision is made at the final exit.

Intervals (95% by default): the two means get the circular block bootstrap of
:func:`eebench.measure.stats.mean_ci` with a data-driven block length
(consecutive samples share the machine's state). The predicted mean is the
mean of per-sample weighted sums ``T_k = sum_i r_i (S_ki + H_ki + D_ki)`` of the
parts run, so resampling the parts run's samples carries every part's spread
into its interval. The ratio measured / predicted gets scipy's BCa bootstrap
with each side resampled on its own (:func:`eebench.measure.stats.bootstrap_ci`).

Where the two means differ, the gap is split exactly into the parts: the true
runs time the same intervals per sample (``ExecutionResult.part_ns``), so the
measured mean is the sum of each part's mean contribution, like the
prediction; the part whose contribution differs most is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eebench.measure.stats import DEFAULT_CONFIDENCE, Interval, bootstrap_ci, mean_ci

PARTS = ("stage", "head", "decision")
"""The parts of the per-sample loop, in ``ExecutionResult.part_ns`` order (the head includes
the host copy of its logits; the stage includes the loop's own step)."""

TOLERANCE = 0.10
"""The goal: mean measured within ±10% of mean predicted."""


def _ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


@dataclass(frozen=True)
class LatencyValidation:
    """Mean measured vs mean predicted latency of one operating point (nanoseconds).

    ``measured_parts[i, p]`` / ``predicted_parts[i, p]`` are the mean per-sample time of part
    ``PARTS[p]`` at exit ``i`` (zero for samples that did not reach it); each sums to its mean.
    """

    measured: Interval
    predicted: Interval
    ratio: Interval
    measured_parts: np.ndarray
    predicted_parts: np.ndarray
    reach: np.ndarray
    clock: str

    @property
    def gap_ns(self) -> float:
        return self.measured.estimate - self.predicted.estimate

    @property
    def within_tolerance(self) -> bool:
        return abs(self.ratio.estimate - 1.0) <= TOLERANCE

    def dominant_part(self) -> tuple[int, int, float]:
        """``(exit, part, ns)``: the part whose mean contribution differs most between the two
        sides (``PARTS[part]`` at ``exit``) and by how much (measured minus predicted)."""
        diff = self.measured_parts - self.predicted_parts
        i, p = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
        return int(i), int(p), float(diff[i, p])

    def explanation(self) -> str:
        """Why the point misses the goal (empty when it meets it): the dominant part's share."""
        if self.within_tolerance:
            return ""
        i, p, d = self.dominant_part()
        share = d / self.gap_ns if self.gap_ns else float("nan")
        return (
            f"{PARTS[p]} {i} dominates the gap: {d / 1e6:+.4f} of {self.gap_ns / 1e6:+.4f} ms "
            f"({share:.0%}); per sample {self.measured_parts[i, p] / 1e6:.4f} ms measured vs "
            f"{self.predicted_parts[i, p] / 1e6:.4f} ms predicted"
        )

    def columns(self) -> dict[str, Any]:
        """The validation table's columns for this point (milliseconds; see results/README.md)."""
        i, p, d = self.dominant_part()
        ms = 1e6
        by_kind = {
            f"{side}_{kind}_ms": float(parts[:, k].sum()) / ms
            for side, parts in (
                ("measured", self.measured_parts),
                ("predicted", self.predicted_parts),
            )
            for k, kind in enumerate(PARTS)
        }
        return {
            "clock": self.clock,
            "measured_latency_ms": self.measured.estimate / ms,
            "measured_latency_ci_low_ms": self.measured.lo / ms,
            "measured_latency_ci_high_ms": self.measured.hi / ms,
            "measured_samples": self.measured.n,
            "predicted_latency_ms": self.predicted.estimate / ms,
            "predicted_latency_ci_low_ms": self.predicted.lo / ms,
            "predicted_latency_ci_high_ms": self.predicted.hi / ms,
            "predicted_samples": self.predicted.n,
            "ratio": self.ratio.estimate,
            "ratio_ci_low": self.ratio.lo,
            "ratio_ci_high": self.ratio.hi,
            "within_10pct": self.within_tolerance,
            **by_kind,
            "gap_ms": self.gap_ns / ms,
            "gap_part": f"{PARTS[p]} {i}",
            "gap_part_ms": d / ms,
            "gap_note": self.explanation(),
        }


def reach_fractions(exit_indices: np.ndarray, num_exits: int) -> np.ndarray:
    """``r_i``: the fraction of samples whose exit is ``i`` or later (they run stage ``i``)."""
    idx = np.asarray(exit_indices, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("reach_fractions: no samples")
    counts = np.bincount(idx, minlength=num_exits)[:num_exits]
    return counts[::-1].cumsum()[::-1] / idx.size


def validate_latency(
    measured_latency_ns: np.ndarray,
    measured_part_ns: np.ndarray,
    parts_part_ns: np.ndarray,
    expected_exits: np.ndarray,
    clock: str,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> LatencyValidation:
    """Compare the true runs (per-sample latencies and their ``(n, E, 3)`` part split) with the
    prediction from a parts run (``(m, E, 3)``, every part of every sample) and the operating
    point's expected exit per sample."""
    lat = np.asarray(measured_latency_ns, dtype=np.float64).ravel()
    mparts = np.asarray(measured_part_ns, dtype=np.float64)
    pparts = np.asarray(parts_part_ns, dtype=np.float64)
    if mparts.ndim != 3 or pparts.ndim != 3 or mparts.shape[1:] != pparts.shape[1:]:
        raise ValueError(
            f"part times must be (samples, exits, {len(PARTS)}) on both sides, got "
            f"{mparts.shape} and {pparts.shape}"
        )
    if mparts.shape[0] != lat.size:
        raise ValueError(f"{lat.size} measured latencies but {mparts.shape[0]} measured part rows")
    reach = reach_fractions(expected_exits, pparts.shape[1])
    per_sample = (pparts * reach[None, :, None]).sum(axis=(1, 2))
    measured = mean_ci(lat, confidence, seed=seed, block_length=None)
    predicted = mean_ci(per_sample, confidence, seed=seed, block_length=None)
    ratio = bootstrap_ci([lat, per_sample], _ratio_of_means, confidence, seed=seed)
    return LatencyValidation(
        measured=measured,
        predicted=predicted,
        ratio=ratio,
        measured_parts=mparts.mean(axis=0),
        predicted_parts=pparts.mean(axis=0) * reach[:, None],
        reach=reach,
        clock=clock,
    )

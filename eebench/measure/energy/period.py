"""How often a meter's reading changes, found by polling it.

An energy counter read twice within one update period returns the same value,
so energy over a window shorter than a few periods is mostly quantisation:
NVML and the Jetson rails update every ~10-100 ms, RAPL about every 1 ms. The
meter is polled as fast as it answers for ``probe_s``; each change of its raw
value is one update. A poller that loses the CPU (a loaded machine) misses
updates and sees some late, so each change carries the width of the interval it
happened in, and the period is the smallest upper bound that two consecutive
changes give (:func:`_period_from_changes`): tight when polling was sharp, too
long rather than too short when it was not. Fewer than two changes in the probe
leave the period unknown; it is then at least the probe itself, which is what
:func:`detect_update_period` reports (``resolved`` False), so a window sized
from it is long rather than too short.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from eebench.measure.energy.base import EnergyMeter
from eebench.measure.timing import DEFAULT_CLOCK, Clock


@dataclass(frozen=True)
class UpdatePeriod:
    """The detected update period of a meter and the evidence for it."""

    seconds: float
    changes: int
    polls: int
    probe_s: float
    resolved: bool
    how: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_update_period(
    meter: EnergyMeter,
    probe_s: float = 0.5,
    clock: Clock = DEFAULT_CLOCK,
    max_polls: int = 200_000,
) -> UpdatePeriod:
    """Poll ``meter.update_signal()`` for ``probe_s`` and count distinct readings.

    A meter that knows its period (``update_period_s``, e.g. 0 for a continuous
    estimate) is not polled.
    """
    if meter.update_period_s is not None:
        return UpdatePeriod(meter.update_period_s, 0, 0, 0.0, True, "known by construction")
    if probe_s <= 0:
        raise ValueError(f"probe_s must be > 0 seconds, got {probe_s}")
    start = clock()
    end = start + int(probe_s * 1e9)
    last = meter.update_signal()
    # a change seen at poll k happened after the value of poll k - 1 was read, which was
    # before the clock read of poll k - 1 and after that of poll k - 2: (t[k-2], t[k]]
    changes: list[tuple[int, int]] = []  # (time seen, width of the interval it lies in)
    polls = 1
    t2 = t1 = now = start  # clock reads of polls k - 2 and k - 1
    while now < end and polls < max_polls:
        value = meter.update_signal()
        now = clock()
        polls += 1
        if value != last:
            changes.append((now, now - t2))
            last = value
        t2, t1 = t1, now
    elapsed = (now - start) / 1e9
    period = _period_from_changes(changes)
    if period is not None:
        return UpdatePeriod(
            period,
            len(changes),
            polls,
            elapsed,
            True,
            f"{len(changes)} changes in {polls} polls over {elapsed:.3g} s",
        )
    return UpdatePeriod(
        max(elapsed, probe_s),
        len(changes),
        polls,
        elapsed,
        False,
        f"{len(changes)} change(s) in {polls} polls over {elapsed:.3g} s: the period is at "
        "least the probe",
    )


def _period_from_changes(changes: list[tuple[int, int]]) -> float | None:
    """Seconds per update from successive changes (time seen, uncertainty), or None.

    Between two consecutive changes seen at ``t_a`` and ``t_b`` lie at least one whole
    period and at most ``t_b - t_a + u_a`` seconds (change ``a`` may have happened up to
    ``u_a`` before it was seen). So every pair bounds the period from above, and the
    smallest bound is the estimate: exact to a few poll gaps when the poller kept the CPU
    between two updates, and never too short (windows sized from it are never too short)
    when it did not.
    """
    if len(changes) < 2:
        return None
    bounds = [b[0] - a[0] + a[1] for a, b in zip(changes[:-1], changes[1:], strict=True)]
    return min(bounds) / 1e9

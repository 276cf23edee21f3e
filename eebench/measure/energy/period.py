"""How often a meter's reading changes, found by polling it.

An energy counter read twice within one update period returns the same value,
so energy over a window shorter than a few periods is mostly quantisation:
NVML and the Jetson rails update every ~10-100 ms, RAPL about every 1 ms. The
meter is polled as fast as it answers for ``probe_s``; each change of its raw
value is one update, and the period is the time between the first and the last
change divided by the changes in between. Fewer than two changes in the probe
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
    change_times: list[int] = []
    polls = 1
    now = start
    while now < end and polls < max_polls:
        value = meter.update_signal()
        now = clock()
        polls += 1
        if value != last:
            change_times.append(now)
            last = value
    elapsed = (now - start) / 1e9
    if len(change_times) >= 2:
        period = (change_times[-1] - change_times[0]) / 1e9 / (len(change_times) - 1)
        return UpdatePeriod(
            period,
            len(change_times),
            polls,
            elapsed,
            True,
            f"{len(change_times)} changes in {polls} polls over {elapsed:.3g} s",
        )
    return UpdatePeriod(
        max(elapsed, probe_s),
        len(change_times),
        polls,
        elapsed,
        False,
        f"{len(change_times)} change(s) in {polls} polls over {elapsed:.3g} s: the period is at "
        "least the probe",
    )

"""Energy of many workloads on one device against one idle baseline.

An :class:`EnergySession` belongs to one meter and one prepared backend. On
:meth:`~EnergySession.start` it detects the meter's update period by polling
and measures the idle power over ``idle_windows`` windows. Each
:meth:`~EnergySession.measure` then runs the workload over ``windows``
windows of at least ``periods_per_window`` update periods (and
``min_window_s``), as many calls per window as that takes, so a 50 us stage on
a meter that updates every 100 ms is measured over ~20,000 calls per window,
not one. The device is synchronised (the backend's ``sync``) before every
reading, so a reading covers all work issued before it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from eebench.measure.energy.base import EnergyMeter, EnergyMeterUnavailable, synced_read
from eebench.measure.energy.net import NetEnergy, Window, net_energy
from eebench.measure.energy.period import UpdatePeriod, detect_update_period
from eebench.measure.timing import DEFAULT_CLOCK, Clock


@dataclass(frozen=True)
class WindowConfig:
    """How long the windows are and how many there are."""

    periods_per_window: int = 10
    min_window_s: float = 0.1
    windows: int = 5
    idle_windows: int = 5
    probe_s: float = 0.5
    sampling_interval_s: float = 0.005

    def __post_init__(self) -> None:
        if self.periods_per_window < 1:
            raise ValueError(f"periods_per_window must be >= 1, got {self.periods_per_window}")
        if self.windows < 2 or self.idle_windows < 2:
            raise ValueError("windows and idle_windows must be >= 2 (a confidence interval)")
        if self.min_window_s < 0 or self.probe_s <= 0:
            raise ValueError("min_window_s must be >= 0 and probe_s > 0 seconds")

    def window_s(self, period_s: float) -> float:
        """The window length for a meter that updates every ``period_s`` seconds."""
        return max(self.min_window_s, self.periods_per_window * period_s)


def calls_per_window(window_s: float, call_s: float) -> int:
    """Calls of ``call_s`` seconds each that fill ``window_s`` (at least one)."""
    if call_s <= 0 or not math.isfinite(call_s):
        raise ValueError(f"call_s must be a positive duration, got {call_s}")
    return max(1, math.ceil(window_s / call_s))


@dataclass(frozen=True)
class PartEnergy:
    """Energy per inference of one workload, with how it was measured."""

    meter: str
    source: str
    energy: NetEnergy
    update_period: UpdatePeriod
    window_s: float
    calls_per_window: int
    windows: int
    call_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["energy"] = self.energy.to_dict()
        d["update_period"] = self.update_period.to_dict()
        return d


class EnergySession:
    """One meter, one device synchronisation, one idle baseline, many workloads."""

    def __init__(
        self,
        meter: EnergyMeter,
        sync: Callable[[], None] | None = None,
        config: WindowConfig | None = None,
        clock: Clock = DEFAULT_CLOCK,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.meter = meter
        self.sync = sync
        self.config = config or WindowConfig()
        self.clock = clock
        self.sleep = sleep
        self.period: UpdatePeriod | None = None
        self.idle: list[Window] = []

    @property
    def source(self) -> str:
        total = self.meter.total_domain
        if total is None:
            return self.meter.name
        return self.meter.sources().get(total, f"{self.meter.name}:{total}")

    def start(self) -> EnergySession:
        """Detect the update period and measure the idle baseline."""
        ok, reason = self.meter.available()
        if not ok:
            raise EnergyMeterUnavailable(self.meter.name, reason)
        if self.meter.total_domain is None:
            raise EnergyMeterUnavailable(
                self.meter.name, "no total-device domain (e.g. a Jetson without an input rail)"
            )
        self.period = detect_update_period(self.meter, self.config.probe_s, self.clock)
        seconds = self.config.window_s(self.period.seconds)
        with self.meter.sampling(self.config.sampling_interval_s), self.meter.phase("idle"):
            self.idle = [self._idle_window(seconds) for _ in range(self.config.idle_windows)]
        return self

    def _idle_window(self, seconds: float) -> Window:
        a = synced_read(self.meter, self.sync)
        self.sleep(seconds)
        b = synced_read(self.meter, self.sync)
        return self._window(a, b, 0)

    def _window(self, a: Any, b: Any, inferences: int) -> Window:
        d = self.meter.energy_between(a, b)
        total = d.total_joules
        assert total is not None  # start() refuses a meter without a total domain
        return Window(total, d.seconds, inferences)

    def time_call(self, fn: Callable[[], object], calls: int = 3) -> float:
        """Median seconds of one synchronised call (after one untimed call)."""
        fn()
        if self.sync:
            self.sync()
        times = []
        for _ in range(calls):
            t0 = self.clock()
            fn()
            if self.sync:
                self.sync()
            times.append((self.clock() - t0) / 1e9)
        return sorted(times)[len(times) // 2]

    def measure(
        self,
        fn: Callable[[], object],
        inferences_per_call: int = 1,
        call_s: float | None = None,
    ) -> PartEnergy:
        """Energy per inference of ``fn`` over windows sized to the meter's update period.

        ``call_s`` is the duration of one call (e.g. the measured median latency); it is
        timed here when not given. A call faster than the clock counts as 1 ns.
        """
        if self.period is None:
            self.start()
        assert self.period is not None
        window_s = self.config.window_s(self.period.seconds)
        if call_s is None:
            call_s = self.time_call(fn)
        call_s = max(call_s, 1e-9)
        calls = calls_per_window(window_s, call_s)
        busy = []
        with self.meter.sampling(self.config.sampling_interval_s), self.meter.phase("active"):
            for _ in range(self.config.windows):
                a = synced_read(self.meter, self.sync)
                for _ in range(calls):
                    fn()
                b = synced_read(self.meter, self.sync)
                busy.append(self._window(a, b, calls * inferences_per_call))
        return PartEnergy(
            meter=self.meter.name,
            source=self.source,
            energy=net_energy(busy, self.idle),
            update_period=self.period,
            window_s=window_s,
            calls_per_window=calls,
            windows=self.config.windows,
            call_s=call_s,
        )

"""Estimated energy from a hardware profile's power figures, for devices without a meter.

Power is assumed to be ``idle_watts`` during an ``idle`` phase and
``active_watts`` while the workload runs (the default phase); energy is that
power times the time elapsed. Every number is labelled
``estimated:<profile>`` so it can never pass for a measurement.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eebench.measure.energy.base import EnergyMeter, EnergyReading, register_energy_meter
from eebench.measure.timing import DEFAULT_CLOCK, Clock

DOMAIN = "board"


@register_energy_meter("estimated")
class EstimatedEnergyMeter(EnergyMeter):
    """Power x time with the profile's idle and active power (watts)."""

    name = "estimated"
    devices = ("cpu", "cuda")
    update_period_s = 0.0  # power x time is continuous: any window resolves it

    def __init__(
        self,
        idle_watts: float | None = None,
        active_watts: float | None = None,
        profile: str = "unknown",
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        for field, value in (("idle_watts", idle_watts), ("active_watts", active_watts)):
            if value is not None and value < 0:
                raise ValueError(f"{field} must be >= 0 watts, got {value}")
        self.idle_watts = idle_watts
        self.active_watts = active_watts
        self.profile = profile
        self.clock = clock
        self._phase = "active"
        self._lock = threading.Lock()
        self._t: int | None = None
        self._joules = 0.0

    @property
    def total_domain(self) -> str:
        return DOMAIN

    def sources(self) -> dict[str, str]:
        return {DOMAIN: f"estimated:{self.profile}"}

    def available(self) -> tuple[bool, str]:
        if self.idle_watts is None or self.active_watts is None:
            return False, "needs idle and active power (watts) from a hardware profile"
        return True, ""

    def _advance(self) -> int:
        now = self.clock()
        if self._t is not None:
            watts = self.idle_watts if self._phase == "idle" else self.active_watts
            self._joules += float(watts or 0.0) * (now - self._t) / 1e9
        self._t = now
        return now

    def read(self) -> EnergyReading:
        with self._lock:
            now = self._advance()
            return EnergyReading(self.name, now, {DOMAIN: self._joules})

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in ("idle", "active"):
            raise ValueError(f"phase must be 'idle' or 'active', got '{name}'")
        with self._lock:
            self._advance()
            previous, self._phase = self._phase, name
        try:
            yield
        finally:
            with self._lock:
                self._advance()
                self._phase = previous

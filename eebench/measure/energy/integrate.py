"""Energy from instantaneous power: the trapezoid rule over successive readings.

Meters that report power rather than an energy counter (the Jetson INA3221
rails, NVML's power reading on GPUs without a total-energy counter) integrate
in software on every read; :func:`background_reads` keeps reading during a
measurement so the integral follows the load instead of joining two distant
points with a straight line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class PowerIntegrator:
    """Cumulative joules per domain from ``(time ns, watts per domain)`` readings."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._last: tuple[int, dict[str, float]] | None = None
        self._energy: dict[str, float] = {}

    def add(self, now_ns: int, power: dict[str, float]) -> dict[str, float]:
        """Advance the integral to ``now_ns`` with ``power`` (caller holds ``lock``)."""
        if self._last is not None:
            t0, p0 = self._last
            dt = (now_ns - t0) / 1e9
            for d, p in power.items():
                self._energy[d] = self._energy.get(d, 0.0) + 0.5 * (p + p0.get(d, p)) * dt
        else:
            self._energy = dict.fromkeys(power, 0.0)
        self._last = (now_ns, power)
        return dict(self._energy)


@contextmanager
def background_reads(read: Callable[[], object], interval_s: float, name: str) -> Iterator[None]:
    """Call ``read`` now and then every ``interval_s`` in a daemon thread during the body."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            read()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    read()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

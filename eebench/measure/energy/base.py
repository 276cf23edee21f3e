"""The energy-meter interface, its registry, and energy per inference with an idle baseline.

Every meter reads a *counter snapshot* (``read()``): cumulative joules per
domain. ``energy_between(a, b)`` turns two snapshots into joules per domain,
handling what the hardware needs (RAPL counters wrap around). Meters that only
report instantaneous power (the Jetson INA3221 rails) integrate it in software
on every read; ``sampling()`` keeps a background thread reading so the
integral follows the load. Each domain carries a source label
(``rapl:package-0``, ``nvml:gpu0``, ``ina3221:VDD_IN``, ``estimated:<profile>``)
and a meter names the domain that is its *total* (or none).

:func:`measure_energy` runs a workload many times between two snapshots,
divides by the number of inferences, and reports beside it the idle power
measured over an idle interval just before.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from eebench.errors import EEBenchError
from eebench.measure.timing import DEFAULT_CLOCK, Clock
from eebench.registry import Registry


class EnergyMeterUnavailable(EEBenchError):
    """A meter that cannot be read here; the message says why and how to fix it."""

    def __init__(self, meter: str, reason: str) -> None:
        self.meter = meter
        self.reason = reason
        super().__init__(f"energy meter '{meter}' is not available: {reason}")


@dataclass(frozen=True)
class EnergyReading:
    """A snapshot of cumulative energy counters (joules) per domain."""

    meter: str
    timestamp_ns: int
    joules: dict[str, float]


@dataclass(frozen=True)
class EnergyDelta:
    """Energy per domain between two readings, with each domain's source label."""

    meter: str
    joules: dict[str, float]
    seconds: float
    sources: dict[str, str]
    total_domain: str | None

    @property
    def total_joules(self) -> float | None:
        return self.joules.get(self.total_domain) if self.total_domain else None

    def watts(self) -> dict[str, float]:
        if self.seconds <= 0:
            return {d: float("nan") for d in self.joules}
        return {d: j / self.seconds for d, j in self.joules.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnergyMeter(ABC):
    """One source of energy numbers. Subclasses set ``name`` and register themselves."""

    name: ClassVar[str] = "abstract"
    devices: ClassVar[tuple[str, ...]] = ()
    """Device kinds (``cpu``, ``cuda``) whose work this meter sees; the meter choice refuses
    a meter for a backend whose device is not among them."""
    update_period_s: ClassVar[float | None] = None
    """The meter's update period when known by construction (0 for a continuous estimate);
    None means detect it by polling (:func:`eebench.measure.energy.period.detect_update_period`)."""

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when readable here, else (False, why and how to fix)."""

    @abstractmethod
    def read(self) -> EnergyReading:
        """A counter snapshot; raises EnergyMeterUnavailable when unreadable."""

    @abstractmethod
    def sources(self) -> dict[str, str]:
        """Domain -> source label (e.g. ``package-0`` -> ``rapl:package-0``)."""

    @property
    def total_domain(self) -> str | None:
        """The domain that stands for the whole device, or None when there is none."""
        return None

    def update_signal(self) -> float:
        """The raw value whose changes mark a meter update (the total counter by default);
        polled to detect the update period, so it must be cheap and must not integrate."""
        total = self.total_domain
        if total is None:
            raise EnergyMeterUnavailable(self.name, "no total-device domain to poll")
        return self.read().joules[total]

    def energy_between(self, a: EnergyReading, b: EnergyReading) -> EnergyDelta:
        """Joules per domain from ``a`` to ``b`` (plain difference unless a meter overrides)."""
        joules = {d: b.joules[d] - a.joules[d] for d in b.joules if d in a.joules}
        return EnergyDelta(
            self.name,
            joules,
            (b.timestamp_ns - a.timestamp_ns) / 1e9,
            self.sources(),
            self.total_domain,
        )

    @contextmanager
    def sampling(self, interval_s: float = 0.01) -> Iterator[EnergyMeter]:
        """Keep the meter's counters current during the body (hardware counters need nothing)."""
        yield self

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark the body as ``idle`` or ``active``; only estimating meters use it."""
        yield


ENERGY_METERS: Registry[type[EnergyMeter]] = Registry("energy meter")


def register_energy_meter(name: str) -> Callable[[type[EnergyMeter]], type[EnergyMeter]]:
    return ENERGY_METERS.register(name)


def create_energy_meter(name: str, **options: Any) -> EnergyMeter:
    return ENERGY_METERS.get(name)(**options)


@dataclass(frozen=True)
class EnergyMeasurement:
    """Energy per inference from a long run, with the idle baseline beside it.

    ``joules_per_inference`` is the meter's total domain over the busy run
    divided by the inferences; ``net_joules_per_inference`` subtracts the idle
    power over the same time. Per-domain figures are kept in ``busy`` and
    ``idle``; ``source`` is the total domain's label.
    """

    meter: str
    source: str | None
    inferences: int
    busy: EnergyDelta
    idle: EnergyDelta | None
    joules_per_inference: float | None
    net_joules_per_inference: float | None
    busy_watts: float | None
    idle_watts: float | None
    per_domain_joules_per_inference: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["busy"] = self.busy.to_dict()
        d["idle"] = self.idle.to_dict() if self.idle else None
        return d


def synced_read(meter: EnergyMeter, sync: Callable[[], None] | None) -> EnergyReading:
    """Wait for the device, then read: the reading covers all work issued before it."""
    if sync is not None:
        sync()
    return meter.read()


def measure_energy(
    meter: EnergyMeter,
    fn: Callable[[], object],
    inferences_per_call: int = 1,
    min_calls: int = 10,
    min_time_s: float = 1.0,
    idle_s: float = 1.0,
    clock: Clock = DEFAULT_CLOCK,
    sleep: Callable[[float], None] = time.sleep,
    sampling_interval_s: float = 0.01,
    sync: Callable[[], None] | None = None,
) -> EnergyMeasurement:
    """Idle baseline over ``idle_s``, then ``fn`` repeated for at least ``min_calls`` calls and
    ``min_time_s`` seconds between two readings; energy divided per inference.

    ``sync`` (the backend's device synchronisation) runs before every reading, so a reading
    never leaves queued device work outside the interval it closes."""
    ok, reason = meter.available()
    if not ok:
        raise EnergyMeterUnavailable(meter.name, reason)
    with meter.sampling(sampling_interval_s):
        idle = None
        if idle_s > 0:
            with meter.phase("idle"):
                a = synced_read(meter, sync)
                sleep(idle_s)
                b = synced_read(meter, sync)
            idle = meter.energy_between(a, b)
        calls = 0
        with meter.phase("active"):
            a = synced_read(meter, sync)
            start = clock()
            while calls < min_calls or clock() - start < min_time_s * 1e9:
                fn()
                calls += 1
            b = synced_read(meter, sync)
        busy = meter.energy_between(a, b)
    n = calls * inferences_per_call
    total = meter.total_domain
    busy_j = busy.joules.get(total) if total else None
    busy_w = busy.watts().get(total) if total else None
    idle_w = idle.watts().get(total) if (total and idle) else None
    per_inf = busy_j / n if busy_j is not None else None
    net = (
        (busy_j - idle_w * busy.seconds) / n
        if (busy_j is not None and idle_w is not None)
        else None
    )
    return EnergyMeasurement(
        meter=meter.name,
        source=busy.sources.get(total) if total else None,
        inferences=n,
        busy=busy,
        idle=idle,
        joules_per_inference=per_inf,
        net_joules_per_inference=net,
        busy_watts=busy_w,
        idle_watts=idle_w,
        per_domain_joules_per_inference={d: j / n for d, j in busy.joules.items()},
    )

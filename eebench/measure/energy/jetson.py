"""NVIDIA Jetson power rails (INA3221 monitors), read from sysfs or through jtop.

Two sysfs layouts exist:

* hwmon (JetPack 5 and later): ``/sys/class/hwmon/hwmonN/`` with
  ``name`` = ``ina3221`` and, per channel ``k``, ``in{k}_label`` (rail name),
  ``in{k}_input`` (bus voltage, mV) and ``curr{k}_input`` (current, mA);
  power = V x I. A ``power{k}_input`` file (uW) is used when present.
* iio (JetPack 4): ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/`` with
  ``rail_name_{k}`` and ``in_power{k}_input`` (mW).

The rails are power monitors, not energy counters: the meter integrates
power over time (trapezoid rule) on every read, and ``sampling()`` keeps a
background thread reading so the integral follows the load. The board input
rail (``VDD_IN`` on Orin/Xavier NX, ``POM_5V_IN`` on Nano/TX1) is the total
power; the other rails are parts of it, so they are reported but never summed.
A board without an input rail has no total.

With ``source="jtop"`` the rails come from jetson-stats' ``jtop`` service
instead (its ``power["rail"]`` and ``power["tot"]``), when it is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eebench.measure.energy.base import (
    EnergyMeter,
    EnergyMeterUnavailable,
    EnergyReading,
    register_energy_meter,
)
from eebench.measure.energy.integrate import PowerIntegrator, background_reads
from eebench.measure.timing import DEFAULT_CLOCK, Clock

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Rail names that carry the whole board's input power, in order of preference."""

DISABLED_LABELS = ("NC", "")


class _SysfsRails:
    """Rail name -> callable returning watts, discovered under a sysfs root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rails: dict[str, Callable[[], float]] = {}
        self._discover()

    def _discover(self) -> None:
        hwmon = self.root / "class" / "hwmon"
        if hwmon.is_dir():
            for dev in sorted(hwmon.iterdir()):
                if _text(dev / "name") == "ina3221":
                    self._add_hwmon(dev)
        drivers = self.root / "bus" / "i2c" / "drivers" / "ina3221x"
        if drivers.is_dir():
            for dev in sorted(drivers.glob("*/iio:device*")):
                self._add_iio(dev)

    def _add_hwmon(self, dev: Path) -> None:
        for label_file in sorted(dev.glob("in*_label")):
            k = label_file.name[2:-6]
            label = _text(label_file) or ""
            if not k.isdigit() or label in DISABLED_LABELS or _text(dev / f"in{k}_enable") == "0":
                continue
            power = dev / f"power{k}_input"
            volt, curr = dev / f"in{k}_input", dev / f"curr{k}_input"
            if power.is_file():
                self.rails[label] = lambda p=power: _number(p) / 1e6  # uW
            elif volt.is_file() and curr.is_file():
                self.rails[label] = lambda v=volt, c=curr: _number(v) * _number(c) / 1e6  # mV*mA
        return

    def _add_iio(self, dev: Path) -> None:
        for name_file in sorted(dev.glob("rail_name_*")):
            k = name_file.name.rsplit("_", 1)[1]
            label = _text(name_file) or ""
            power = dev / f"in_power{k}_input"
            if label not in DISABLED_LABELS and power.is_file():
                self.rails[label] = lambda p=power: _number(p) / 1e3  # mW

    def read(self) -> dict[str, float]:
        return {name: fn() for name, fn in self.rails.items()}


class _JtopRails:
    """Rails from jetson-stats' jtop service (``pip install jetson-stats``)."""

    def __init__(self) -> None:
        from jtop import jtop  # optional dependency

        self._jtop = jtop()
        self._jtop.start()
        power = self._jtop.power
        self.total_name = (power.get("tot") or {}).get("name")
        self.rails = dict.fromkeys(power.get("rail", {}))

    def read(self) -> dict[str, float]:
        power = self._jtop.power
        out = {name: float(v["power"]) / 1e3 for name, v in power.get("rail", {}).items()}
        if self.total_name and self.total_name not in out and "tot" in power:
            out[self.total_name] = float(power["tot"]["power"]) / 1e3
        return out

    def close(self) -> None:
        self._jtop.close()


@register_energy_meter("jetson")
class JetsonPowerMeter(EnergyMeter):
    """Integrated energy of the Jetson INA3221 rails; ``root`` is the sysfs root (``/sys``)."""

    name = "jetson"
    devices = ("cpu", "cuda")  # the board input rail carries the CPU and the integrated GPU

    def __init__(
        self, root: str | Path = "/sys", source: str = "sysfs", clock: Clock = DEFAULT_CLOCK
    ) -> None:
        if source not in ("sysfs", "jtop"):
            raise ValueError(f"source must be 'sysfs' or 'jtop', got '{source}'")
        self.root = Path(root)
        self.source = source
        self.clock = clock
        self._rails: Any = None
        self._integral = PowerIntegrator()

    def _source(self) -> Any:
        if self._rails is None:
            if self.source == "jtop":
                try:
                    self._rails = _JtopRails()
                except ImportError:
                    raise EnergyMeterUnavailable(
                        self.name,
                        "jetson-stats is not installed; pip install jetson-stats (or use source='sysfs')",
                    ) from None
            else:
                self._rails = _SysfsRails(self.root)
        return self._rails

    def rails(self) -> list[str]:
        return list(self._source().rails)

    def sources(self) -> dict[str, str]:
        return {
            r: f"ina3221:{r}" + (" (board input: total)" if r == self.total_domain else "")
            for r in self.rails()
        }

    @property
    def total_domain(self) -> str | None:
        names = self.rails()
        jtop_total = getattr(self._rails, "total_name", None)
        if jtop_total:
            return str(jtop_total)
        return next((r for r in INPUT_RAILS if r in names), None)

    def available(self) -> tuple[bool, str]:
        try:
            rails = self.rails()
        except EnergyMeterUnavailable as err:
            return False, err.reason
        if not rails:
            return (
                False,
                f"no INA3221 power rails under {self.root} (not a Jetson, or the driver is not loaded)",
            )
        try:
            self.read_power()
        except OSError as err:
            return False, f"cannot read the INA3221 rails: {err}"
        return True, ""

    def read_power(self) -> dict[str, float]:
        """Instantaneous power per rail, in watts."""
        return self._source().read()

    def update_signal(self) -> float:
        """The total rail's instantaneous power (the sum of the rails without one): it changes
        when the INA3221 finishes a conversion, which is the meter's update period."""
        try:
            power = self.read_power()
        except OSError as err:
            raise EnergyMeterUnavailable(
                self.name, f"cannot read the INA3221 rails: {err}"
            ) from None
        total = self.total_domain
        return power[total] if total in power else sum(power.values())

    def read(self) -> EnergyReading:
        """Sample the rails now and advance the integrated energy counters (trapezoid rule)."""
        with self._integral.lock:
            try:
                power = self.read_power()
            except OSError as err:
                raise EnergyMeterUnavailable(
                    self.name, f"cannot read the INA3221 rails: {err}"
                ) from None
            now = self.clock()
            return EnergyReading(self.name, now, self._integral.add(now, power))

    @contextmanager
    def sampling(self, interval_s: float = 0.01) -> Iterator[JetsonPowerMeter]:
        """Read the rails every ``interval_s`` in a background thread during the body."""
        with background_reads(self.read, interval_s, "eebench-jetson-power"):
            yield self

    def close(self) -> None:
        if hasattr(self._rails, "close"):
            self._rails.close()


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path) -> float:
    return float(path.read_text().strip())

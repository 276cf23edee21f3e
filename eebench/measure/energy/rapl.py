"""Intel (and AMD) RAPL energy counters through the Linux powercap interface.

Zones appear as ``/sys/class/powercap/intel-rapl:N`` (a CPU package, named
``package-N``) with subzones ``intel-rapl:N:M`` (``core``, ``uncore``,
``dram``). Each zone has ``energy_uj`` (a cumulative microjoule counter) and
``max_energy_range_uj`` (where it wraps to zero). eebench reads every package
and its ``dram`` subzone; the total is the sum of the packages (sockets do
not overlap; DRAM is reported beside it, not added). A difference that comes
out negative means the counter wrapped once and ``max_energy_range_uj`` is
added back (at 100 W a 2^32 uJ range wraps about every 43 s, the usual
262 kJ range every 44 min: keep measurements shorter than that).

Since 2020 (CVE-2020-8694) ``energy_uj`` is readable by root only on most
distributions; the error says how to grant read access.
"""

from __future__ import annotations

import re
from pathlib import Path

from eebench.measure.energy.base import (
    EnergyDelta,
    EnergyMeter,
    EnergyMeterUnavailable,
    EnergyReading,
    register_energy_meter,
)
from eebench.measure.timing import DEFAULT_CLOCK, Clock

DEFAULT_ROOT = "/sys/class/powercap"
TOTAL_DOMAIN = "package"
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


def permission_hint(root: Path) -> str:
    return (
        f"sudo chmod o+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*:*/energy_uj "
        "(lasts until reboot; a udev rule or running as root also works)"
    )


@register_energy_meter("rapl")
class RaplMeter(EnergyMeter):
    """CPU package and DRAM energy from RAPL counters (``root``: the powercap folder)."""

    name = "rapl"
    devices = ("cpu",)

    def __init__(self, root: str | Path = DEFAULT_ROOT, clock: Clock = DEFAULT_CLOCK) -> None:
        self.root = Path(root)
        self.clock = clock
        self._zones: dict[str, Path] | None = None
        self._ranges: dict[str, int] = {}

    # ------------------------------------------------------------------ discovery
    def zones(self) -> dict[str, Path]:
        """Domain name -> zone folder, packages first (``package-0``, ``package-0/dram``)."""
        if self._zones is None:
            found: dict[str, Path] = {}
            if self.root.is_dir():
                entries = [
                    (m, p) for p in self.root.iterdir() if (m := _ZONE.match(p.name)) is not None
                ]
                names = {p.name: _read(p / "name", self.name) for _, p in entries}
                for m, p in sorted(entries, key=lambda e: (int(e[0][1]), int(e[0][2] or -1))):
                    name = names[p.name]
                    if m[2] is None and name.startswith("package"):
                        found[name] = p
                    elif m[2] is not None and name == "dram":
                        parent = names.get(f"intel-rapl:{m[1]}", f"package-{m[1]}")
                        found[f"{parent}/dram"] = p
                    elif m[2] is None and name == "dram":
                        found["dram"] = p
            self._zones = found
        return self._zones

    def sources(self) -> dict[str, str]:
        labels = {d: f"rapl:{d}" for d in self.zones()}
        labels[TOTAL_DOMAIN] = "rapl:package (sum over CPU packages, DRAM excluded)"
        return labels

    @property
    def total_domain(self) -> str:
        return TOTAL_DOMAIN

    def available(self) -> tuple[bool, str]:
        if not self.zones():
            return False, (
                f"no RAPL package zones under {self.root} (not an x86 CPU with the powercap "
                "intel_rapl driver, or a VM/container that hides it)"
            )
        try:
            self.read()
        except EnergyMeterUnavailable as err:
            return False, err.reason
        return True, ""

    # ------------------------------------------------------------------ reading
    def _max_range(self, domain: str) -> int:
        if domain not in self._ranges:
            self._ranges[domain] = int(
                _read(self.zones()[domain] / "max_energy_range_uj", self.name)
            )
        return self._ranges[domain]

    def read(self) -> EnergyReading:
        zones = self.zones()
        if not zones:
            raise EnergyMeterUnavailable(self.name, f"no RAPL zones under {self.root}")
        joules = {}
        for domain, path in zones.items():
            joules[domain] = int(_read(path / "energy_uj", self.name, self.root)) / 1e6
        joules[TOTAL_DOMAIN] = sum(
            j for d, j in joules.items() if "/" not in d and d.startswith("package")
        )
        return EnergyReading(self.name, self.clock(), joules)

    def energy_between(self, a: EnergyReading, b: EnergyReading) -> EnergyDelta:
        """Per-zone differences with one wraparound each; the total is the sum of packages."""
        joules: dict[str, float] = {}
        for domain in self.zones():
            d = b.joules[domain] - a.joules[domain]
            if d < 0:
                d += self._max_range(domain) / 1e6
            joules[domain] = d
        joules[TOTAL_DOMAIN] = sum(
            j for d, j in joules.items() if "/" not in d and d.startswith("package")
        )
        return EnergyDelta(
            self.name, joules, (b.timestamp_ns - a.timestamp_ns) / 1e9, self.sources(), TOTAL_DOMAIN
        )


def _read(path: Path, meter: str, root: Path | None = None) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        hint = permission_hint(root or path.parent.parent)
        raise EnergyMeterUnavailable(
            meter, f"cannot read {path}: permission denied. Grant read access with: {hint}"
        ) from None
    except OSError as err:
        raise EnergyMeterUnavailable(meter, f"cannot read {path}: {err.strerror or err}") from None

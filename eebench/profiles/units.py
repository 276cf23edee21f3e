"""Units of the numbers in a hardware profile, and their conversion to base units.

Every number in a profile carries its unit, because datasheets mix GFLOPS,
TOPS and GB/s freely and a silent factor of two (FLOPs vs MACs) is the most
common mistake in roofline estimates. The convention here:

* compute is stored internally as **MAC/s**; 1 MAC = 1 fused multiply-add;
  ``gflops``/``tflops`` count FLOPs = 2 x MACs and ``gops``/``tops`` count
  operations the same way (an INT8 "TOPS" figure counts a MAC as two ops), so
  both are halved on conversion;
* bandwidth in bytes/s (decimal prefixes: 1 GB/s = 1e9 B/s, as datasheets use);
* time in seconds, power in watts, energy in joules, sizes in bytes,
  frequencies in hertz, counts and ratios as plain numbers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Dimension:
    """A physical dimension with its accepted unit spellings and factors to the base unit."""

    name: str
    base: str
    factors: dict[str, float]

    def to_base(self, value: float, unit: str) -> float:
        return value * self.factors[unit]

    def from_base(self, value: float, unit: str) -> float:
        return value / self.factors[unit]

    def suggest(self, unit: str) -> str | None:
        close = difflib.get_close_matches(unit, list(self.factors), n=1, cutoff=0.5)
        return close[0] if close else None


COMPUTE = Dimension(
    "compute rate",
    "MAC/s",
    {
        "macs_per_s": 1.0,
        "gmacs_per_s": 1e9,
        "tmacs_per_s": 1e12,
        "gflops": 1e9 / 2,
        "tflops": 1e12 / 2,
        "gops": 1e9 / 2,
        "tops": 1e12 / 2,
    },
)
BANDWIDTH = Dimension(
    "bandwidth", "B/s", {"MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12, "GiB/s": 2.0**30}
)
TIME = Dimension("time", "s", {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0})
POWER = Dimension("power", "W", {"mW": 1e-3, "W": 1.0})
ENERGY = Dimension("energy", "J", {"pJ": 1e-12, "nJ": 1e-9, "uJ": 1e-6, "mJ": 1e-3, "J": 1.0})
SIZE = Dimension("memory size", "B", {"MB": 1e6, "GB": 1e9, "MiB": 2.0**20, "GiB": 2.0**30})
FREQUENCY = Dimension("frequency", "Hz", {"kHz": 1e3, "MHz": 1e6, "GHz": 1e9})
COUNT = Dimension("count", "count", {"count": 1.0})
RATIO = Dimension("ratio", "ratio", {"ratio": 1.0})

DIMENSIONS: dict[str, Dimension] = {
    d.name: d for d in (COMPUTE, BANDWIDTH, TIME, POWER, ENERGY, SIZE, FREQUENCY, COUNT, RATIO)
}

"""Package power from the Linux powercap RAPL counter, when the machine exposes a readable one.

``energy_uj`` is a cumulative microjoule counter that wraps at
``max_energy_range_uj``; average power is the counter difference over a
wall-clock interval. Virtual machines and most non-x86 hosts have no such
counter: :func:`rapl_unavailable_reason` says why, and the profile records it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

RAPL_DIR = Path("/sys/class/powercap/intel-rapl:0")


def rapl_unavailable_reason(base: Path = RAPL_DIR) -> str | None:
    """None when the package energy counter can be read, else why not."""
    counter = base / "energy_uj"
    if not counter.exists():
        return f"no RAPL energy counter at {counter} (not exposed on this machine, e.g. a virtual machine)"
    try:
        int(counter.read_text())
    except PermissionError:
        return f"RAPL energy counter {counter} is not readable by this user (root only on recent kernels)"
    except (OSError, ValueError) as err:
        return f"RAPL energy counter {counter} cannot be read: {err}"
    return None


def average_power_w(
    work: Callable[[], object] | None,
    seconds: float,
    base: Path = RAPL_DIR,
) -> float:
    """Average package power over ``seconds`` of calling ``work`` in a loop (or sleeping if None)."""
    counter = base / "energy_uj"
    wrap_file = base / "max_energy_range_uj"
    wrap = int(wrap_file.read_text()) if wrap_file.exists() else 2**64
    e0 = int(counter.read_text())
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if work is None:
            time.sleep(min(0.05, seconds))
        else:
            work()
    e1 = int(counter.read_text())
    elapsed = time.perf_counter() - t0
    delta = e1 - e0 if e1 >= e0 else e1 + wrap - e0
    return delta * 1e-6 / elapsed

"""Memory used while measuring: peak resident set size and, on CUDA, peak allocated memory.

Peak RSS comes from the kernel's high-water mark (``VmHWM`` in
``/proc/self/status``), reset at the start of a tracked region by writing
``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) so the peak belongs to the
region. Where the reset is refused, or there is no /proc, the peak is the
process lifetime's (``ru_maxrss``) and ``peak_rss_scope`` says so. psutil
gives the current RSS before and after.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class MemoryUsage:
    """Memory of a tracked region, in bytes; every figure is ``measured``.

    ``peak_rss_scope`` is ``region`` when the high-water mark was reset at the
    start, ``process`` when it covers the whole process lifetime.
    """

    rss_before_bytes: int
    rss_after_bytes: int
    peak_rss_bytes: int
    peak_rss_source: str
    peak_rss_scope: str
    cuda_peak_allocated_bytes: int | None = None
    cuda_device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": "measured"}


def current_rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def _status_field(field: str, proc: Path) -> int | None:
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                parts = line.split()
                return int(parts[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss(proc: Path) -> bool:
    try:
        (proc / "self" / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def lifetime_peak_rss_bytes() -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryTracker:
    """Filled in by :func:`track_memory` when its region ends (``usage``)."""

    usage: MemoryUsage | None = None


@contextmanager
def track_memory(
    cuda_device: Any | None = None, proc: str | Path = "/proc"
) -> Iterator[MemoryTracker]:
    """Track peak RSS (and CUDA peak allocated memory on ``cuda_device``) over the body."""
    proc = Path(proc)
    tracker = MemoryTracker()
    before = current_rss_bytes()
    reset = _reset_peak_rss(proc)
    if cuda_device is not None:
        import torch

        torch.cuda.synchronize(cuda_device)
        torch.cuda.reset_peak_memory_stats(cuda_device)
    try:
        yield tracker
    finally:
        cuda_peak = None
        if cuda_device is not None:
            import torch

            torch.cuda.synchronize(cuda_device)
            cuda_peak = int(torch.cuda.max_memory_allocated(cuda_device))
        after = current_rss_bytes()
        hwm = _status_field("VmHWM", proc)
        if hwm is not None:
            peak, source, scope = hwm, "VmHWM", "region" if reset else "process"
        else:
            peak, source, scope = lifetime_peak_rss_bytes(), "ru_maxrss", "process"
        tracker.usage = MemoryUsage(
            rss_before_bytes=before,
            rss_after_bytes=after,
            peak_rss_bytes=max(peak, after),
            peak_rss_source=source,
            peak_rss_scope=scope,
            cuda_peak_allocated_bytes=cuda_peak,
            cuda_device=str(cuda_device) if cuda_device is not None else None,
        )

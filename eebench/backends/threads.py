"""Thread settings for torch, applied for one measurement and restored in ``finally``.

torch's intra-op thread count is process-wide, so a backend sets it only while
it measures and puts the previous value back. The inter-op pool can be sized
only before torch first runs parallel work; when that moment has passed the
request is not applied and the actual value is what gets recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThreadSettings:
    """The thread counts actually in force during a measurement."""

    threads: int
    interop_threads: int
    interop_requested: int | None = None

    @property
    def interop_applied(self) -> bool:
        return self.interop_requested is None or self.interop_requested == self.interop_threads


def try_set_interop_threads(n: int | None) -> int:
    """Set torch's inter-op pool size if still possible; return the size in force."""
    if n is not None and torch.get_num_interop_threads() != n:
        with suppress(RuntimeError):  # too late in this process: recorded as-is by the caller
            torch.set_num_interop_threads(n)
    return torch.get_num_interop_threads()


@contextmanager
def torch_threads(threads: int, interop_threads: int | None = None) -> Iterator[ThreadSettings]:
    """Run the body with ``threads`` intra-op threads; restore the previous count afterwards."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        interop = try_set_interop_threads(interop_threads)
        yield ThreadSettings(torch.get_num_threads(), interop, interop_threads)
    finally:
        torch.set_num_threads(previous)

"""The request queue between the load generator's thread and the serving worker.

LoadGen calls ``issue_queries`` from its own thread and must not wait for the
model: the System Under Test only appends requests here, and one worker
thread takes them out, forms batches and runs the network. Batches are formed
the way a dynamic batcher does it: wait for the first request, then take up to
``max_batch`` requests, waiting at most ``timeout_s`` after the first one
arrived for the batch to fill (``timeout_s = 0``: what is queued right now).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One query sample: LoadGen's response id, the sample's index in the QSL, and when it
    arrived (``time.perf_counter_ns``)."""

    query_id: int
    index: int
    arrival_ns: int


class Inbox:
    """A thread-safe FIFO of requests with batch forming; ``close()`` ends the worker."""

    def __init__(self) -> None:
        self._items: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, requests: list[Request]) -> None:
        with self._cond:
            self._items.extend(requests)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def batch(self, max_batch: int, timeout_s: float) -> list[Request]:
        """Up to ``max_batch`` requests (blocks for the first; [] once closed and empty)."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return []
                self._cond.wait()
            if timeout_s > 0 and len(self._items) < max_batch:
                deadline = self._items[0].arrival_ns + int(timeout_s * 1e9)
                while len(self._items) < max_batch and not self._closed:
                    left = (deadline - time.perf_counter_ns()) / 1e9
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(max_batch, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def drain(self, wait_until_ns: int | None) -> list[Request] | None:
        """Every queued request. When none is queued, wait until one arrives, the inbox closes,
        or the clock reaches ``wait_until_ns`` (None: no deadline). None once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                if wait_until_ns is None:
                    self._cond.wait()
                    continue
                left = (wait_until_ns - time.perf_counter_ns()) / 1e9
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._items:
                return None if self._closed else []
            out = list(self._items)
            self._items.clear()
            return out

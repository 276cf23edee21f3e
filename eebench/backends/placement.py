"""Where a backend runs: ``<backend>@<device>`` names a device of a cluster run.

A suite's backend ``torch-cuda@jetson-orin-nano-8gb`` is the ``torch-cuda`` backend on the
node that provides the Ray custom resource ``device:jetson-orin-nano-8gb``
(:mod:`eebench.cluster`). The full name is the backend's name everywhere a number is
recorded (the ``backend`` column, ``measured:<backend>`` sources), so measurements of the
same backend on two devices never share a label.

A placed backend is available only while its step runs on that device: the cluster worker
declares the devices it holds (:func:`holding`). In a run on one machine nothing is held,
so a placed backend is skipped with the reason, as an unavailable backend is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

DEVICE_RESOURCE_PREFIX = "device:"
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

_HELD: ContextVar[frozenset[str]] = ContextVar("eebench_held_devices", default=frozenset())


@dataclass(frozen=True)
class Placement:
    """A suite backend name split into the backend and the device it must run on."""

    backend: str
    device: str | None = None

    @property
    def resource(self) -> str | None:
        """The Ray custom resource that marks the node holding the device."""
        return None if self.device is None else device_resource(self.device)


def device_resource(device: str) -> str:
    return f"{DEVICE_RESOURCE_PREFIX}{device}"


def parse_placement(name: str) -> Placement:
    """``"onnxruntime@rpi5"`` -> Placement("onnxruntime", "rpi5"); a plain name has no device."""
    backend, sep, device = name.rpartition("@")
    if not sep:
        return Placement(name)
    if not backend or not DEVICE_NAME.match(device):
        raise ValueError(
            f"backend '{name}': write <backend>@<device> with a device name of letters, digits, "
            "'.', '_' and '-' (the Ray resource 'device:<device>' of the node that holds it), "
            "e.g. torch-cpu@jetson-orin-nano-8gb"
        )
    return Placement(backend, device)


def base_backend(name: str) -> str:
    """The backend without its device: what code that branches on a backend compares."""
    return parse_placement(name).backend


def held_devices() -> frozenset[str]:
    """The devices the current step runs on (set by the cluster worker)."""
    return _HELD.get()


@contextmanager
def holding(devices: frozenset[str] | set[str]) -> Iterator[None]:
    """Declare that the code in the block runs on these devices."""
    token = _HELD.set(frozenset(devices))
    try:
        yield
    finally:
        _HELD.reset(token)


class PlacedBackend:
    """A backend bound to a device: usable only on the node that holds the device.

    It behaves as the backend it wraps (``prepare``, ``providers``) under the full name, so
    the prepared model describes itself as ``<backend>@<device>``."""

    def __init__(self, inner: Any, device: str) -> None:
        self.inner = inner
        self.device = device
        self.name = f"{inner.name}@{device}"
        inner.name = self.name  # the instance's name: what prepared models and tables carry

    def available(self) -> tuple[bool, str]:
        if self.device not in held_devices():
            return False, (
                f"it runs on device '{self.device}': only in a cluster run (eebench run ... "
                f"--cluster), on the node that provides the Ray resource "
                f"'{device_resource(self.device)}'"
            )
        return self.inner.available()

    def prepare(self, model: Any, batch_size: int = 1, threads: int | None = None, **options: Any):
        return self.inner.prepare(model, batch_size=batch_size, threads=threads, **options)

    def providers(self) -> list[str]:
        return self.inner.providers()

    def __getattr__(self, attr: str) -> Any:  # anything else the wrapped backend offers
        return getattr(self.inner, attr)

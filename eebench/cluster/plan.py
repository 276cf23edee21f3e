"""A suite's steps grouped into units that a cluster schedules, with what each waits for.

A *unit* is the smallest piece of a run that is sent to one node: the steps of one model that
need nothing but each other. The units, in the order a run on one machine takes them::

    host:<model>                       train, record the exits, analytic costs (anywhere)
    estimate:<model>:simulated:<p>     estimates from a hardware profile (anywhere)
    measure:<model>:<backend>          per-part latency and energy (on the backend's device)
    policies:<model>                   operating points (anywhere; needs every cost source)
    validate:<model>:<backend>         true early-exit runs (on the backend's device)
    serve:<model>:<backend>            LoadGen scenarios (on the backend's device)

Plain backends (``torch-cpu``) are devices too: the driver's own machine. Nothing here
imports Ray, so the plan is tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eebench.backends.placement import parse_placement

SIMULATED = "simulated:"
DEVICE_BOUND = ("measure", "validate", "serve")
DRIVER_DEVICE = "@driver"
"""The device key of a backend without ``@device``: the machine the driver runs on."""


@dataclass(frozen=True)
class Unit:
    kind: str  # host | estimate | measure | policies | validate | serve
    model: str  # the model's label in the suite
    backend: str | None = None

    @property
    def id(self) -> str:
        return ":".join(p for p in (self.kind, self.model, self.backend) if p)

    @property
    def device_bound(self) -> bool:
        return self.kind in DEVICE_BOUND

    @property
    def device(self) -> str | None:
        """The device key the unit holds while it runs (None for a unit that runs anywhere)."""
        if not self.device_bound or self.backend is None:
            return None
        return parse_placement(self.backend).device or DRIVER_DEVICE

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "backend": self.backend}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(str(d["kind"]), str(d["model"]), d.get("backend"))


def _device_backends(spec: Any) -> list[str]:
    return [b for b in spec.backends if not b.startswith(SIMULATED)]


def _serving_backends(spec: Any) -> list[str]:
    if spec.serving is None or not spec.serving.enabled:
        return []
    return [b for b in (spec.serving.backends or spec.backends) if not b.startswith(SIMULATED)]


def plan_units(spec: Any) -> list[Unit]:
    """Every unit of the suite, in the order a run on one machine does the same steps."""
    units: list[Unit] = []
    for m in spec.models:
        label = m.label
        units.append(Unit("host", label))
        for b in spec.backends:
            units.append(Unit("estimate" if b.startswith(SIMULATED) else "measure", label, b))
        units.append(Unit("policies", label))
        if spec.validation.enabled:
            units.extend(Unit("validate", label, b) for b in _device_backends(spec))
        units.extend(Unit("serve", label, b) for b in _serving_backends(spec))
    return units


def prerequisites(unit: Unit, spec: Any) -> list[Unit]:
    """The units whose steps ``unit`` reads (they must have finished before it starts)."""
    host = Unit("host", unit.model)
    if unit.kind == "host":
        return []
    if unit.kind in ("estimate", "measure"):
        return [host]
    costs = [
        Unit("estimate" if b.startswith(SIMULATED) else "measure", unit.model, b)
        for b in spec.backends
    ]
    if unit.kind == "policies":
        return [host, *costs]
    return [host, *costs, Unit("policies", unit.model)]  # validate, serve


ADDRESS_HELP = (
    "local (start Ray on this machine), auto (the cluster this machine belongs to) or "
    "ray://HOST:PORT"
)


def check_address(address: str) -> str:
    """The ``--cluster`` value, checked before anything starts."""
    from eebench.errors import ConfigError

    if address in ("local", "auto") or address.startswith("ray://"):
        return address
    raise ConfigError(f"--cluster '{address}': expected {ADDRESS_HELP}")

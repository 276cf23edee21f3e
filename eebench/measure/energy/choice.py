"""Which meter measures a backend: the one on the device that did the work.

* a CPU backend (``torch-cpu``, ONNX Runtime's CPU provider) -> ``rapl``, the CPU package;
* a CUDA backend (``torch-cuda``, ONNX Runtime's CUDA/TensorRT providers) -> ``nvml``, the GPU;
* either on a Jetson -> ``jetson``, the board input rail, which carries the CPU and the
  integrated GPU together (a Jetson has no RAPL and no NVML energy counter).

``auto`` picks that meter. A suite that names a meter gets it only if it sees
the backend's device: ``rapl`` for ``torch-cuda`` would measure the idle CPU
while the GPU works, so it is refused with the fix. When the right meter
cannot be read here, energy is estimated from a hardware profile's idle and
active power when the suite names one (labelled ``estimated:<profile>``), and
otherwise recorded as unavailable with the reason: never read from another
device's meter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eebench.errors import ConfigError
from eebench.measure.energy.base import ENERGY_METERS, EnergyMeter
from eebench.measure.energy.estimated import EstimatedEnergyMeter
from eebench.measure.energy.jetson import JetsonPowerMeter
from eebench.measure.energy.nvml import NvmlMeter
from eebench.measure.energy.rapl import DEFAULT_ROOT, RaplMeter

METER_CHOICES = ("auto", "rapl", "nvml", "jetson", "estimated")
"""Values of a suite's ``measurement.energy.meter``."""

BACKEND_DEVICES = {"torch-cpu": "cpu", "torch-cuda": "cuda", "onnxruntime": "cpu"}
"""The device kind each plain backend name prepares on with its default options (ONNX
Runtime's default provider is the CPU one), for checking a suite before anything runs."""

AUTO_METER = {"cpu": "rapl", "cuda": "nvml"}


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` from a prepared model's device (``cpu``, ``cuda:1``); else as is."""
    head = device.split(":", 1)[0].strip().lower()
    return head if head in ("cpu", "cuda") else device


def check_meter_for_device(meter: str, device: str, backend: str, field: str = "") -> None:
    """Refuse an explicit meter that cannot see the backend's device, saying which one can."""
    if meter in ("auto", "estimated"):
        return
    if meter not in ENERGY_METERS.names():
        raise ConfigError(
            f"unknown energy meter '{meter}' (known: {', '.join(METER_CHOICES)})", field=field
        )
    kind = device_kind(device)
    devices = ENERGY_METERS.get(meter).devices
    if kind not in devices:
        right = AUTO_METER.get(kind)
        fix = f"set meter: {right} (the meter of {kind} devices) or meter: auto" if right else ""
        raise ConfigError(
            f"energy meter '{meter}' measures {', '.join(devices) or 'no'} devices, but backend "
            f"'{backend}' runs on {device}: its energy would come from a device that did not do "
            f"the work; {fix or 'use meter: auto'}",
            field=field,
        )


@dataclass(frozen=True)
class ProfilePower:
    """Idle and active power (watts) of a hardware profile, for estimated energy.

    ``idle_known`` False: the profile gives no idle power, so idle counts as 0 W and the
    estimate's net energy equals its gross (active power x time), as the choice's reason says.
    """

    profile: str
    idle_w: float
    active_w: float
    idle_known: bool = True


@dataclass
class MeterChoice:
    """The meter for one backend: ``measured``, ``estimated`` or ``unavailable`` (meter None)."""

    meter: EnergyMeter | None
    kind: str
    device: str
    reason: str


@dataclass(frozen=True)
class MeterPlaces:
    """Where the meters are read (the real system by default; fixture trees in tests)."""

    powercap: Path = Path(DEFAULT_ROOT)
    sysfs: Path = Path("/sys")
    root: Path = Path("/")


DEFAULT_PLACES = MeterPlaces()
"""Where :func:`choose_meter` looks when not told (tests point it at fixture trees)."""


def on_jetson(places: MeterPlaces) -> bool:
    """A Jetson: its L4T release file or device-tree model, or INA3221 rails in sysfs."""
    from eebench.profiles.jetson import is_jetson

    return is_jetson(places.root) or bool(JetsonPowerMeter(places.sysfs).rails())


def hardware_meter(
    name: str, device: str, places: MeterPlaces, gpu_uuid: str | None = None
) -> EnergyMeter:
    """A hardware meter by name, pointed at ``device`` (NVML: the GPU with that index or UUID)."""
    if name == "rapl":
        return RaplMeter(places.powercap)
    if name == "jetson":
        return JetsonPowerMeter(places.sysfs)
    if name == "nvml":
        index = device.split(":", 1)[1] if ":" in device else "0"
        return NvmlMeter(int(index) if index.isdigit() else 0, uuid=gpu_uuid)
    raise ValueError(f"'{name}' is not a hardware meter")


def choose_meter(
    device: str,
    backend: str,
    requested: str = "auto",
    power: ProfilePower | None = None,
    places: MeterPlaces | None = None,
    gpu_uuid: str | None = None,
    field: str = "measurement.energy.meter",
) -> MeterChoice:
    """The meter that measures ``backend`` running on ``device``, or why there is none."""
    places = places or DEFAULT_PLACES
    check_meter_for_device(requested, device, backend, field)
    if requested == "estimated":
        return _estimated(device, power, "the suite asks for estimated energy")
    kind = device_kind(device)
    if requested == "auto":
        if kind not in AUTO_METER:
            return MeterChoice(None, "unavailable", device, f"no energy meter for device {device}")
        name = "jetson" if on_jetson(places) else AUTO_METER[kind]
    else:
        name = requested
    meter = hardware_meter(name, device, places, gpu_uuid)
    ok, why = meter.available()
    if ok:
        return MeterChoice(meter, "measured", device, f"{name} measures {device} ({backend})")
    return _estimated(device, power, f"{name} (the meter of {device}) is not readable: {why}")


def _estimated(device: str, power: ProfilePower | None, why: str) -> MeterChoice:
    if power is None:
        return MeterChoice(
            None,
            "unavailable",
            device,
            f"{why}; no estimate either: name a hardware profile with power figures (power.active, "
            "ideally power.idle) in measurement.energy.profile",
        )
    meter = EstimatedEnergyMeter(power.idle_w, power.active_w, profile=power.profile)
    idle = (
        f"idle {power.idle_w:g} W"
        if power.idle_known
        else "no idle power (counted as 0 W: net equals gross)"
    )
    return MeterChoice(
        meter,
        "estimated",
        device,
        f"{why}; estimated from {power.profile}'s active {power.active_w:g} W and {idle}",
    )


def cuda_uuid(device: str) -> str | None:
    """NVML's name (``GPU-<uuid>``) of a CUDA device as torch numbers it, or None.

    NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``; the UUID names the
    GPU that ``cuda:N`` really is.
    """
    if device_kind(device) != "cuda":
        return None
    try:
        import torch

        props = torch.cuda.get_device_properties(device)
    except Exception:  # no torch, no CUDA, or an unknown device: NVML falls back to the index
        return None
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"

"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, optional).

``nvmlDeviceGetTotalEnergyConsumption`` returns the millijoules the GPU board
has used since the driver was loaded (Volta and newer); it is a 64-bit
counter, so it does not wrap in practice, and a counter that goes backwards
means the driver was reloaded mid-measurement (an error, not a negative
energy). GPUs without the counter report instantaneous board power
(``nvmlDeviceGetPowerUsage``, milliwatts), which the meter integrates in
software like the Jetson rails (``mode == "power"``). Either covers the GPU
board only, not the host CPU. NVML refreshes both about every 10-100 ms,
depending on the GPU: the runner sizes its windows to the detected period.

NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``; give
``uuid`` (``GPU-...``, as torch reports it) to read the GPU a CUDA device
really is.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eebench.measure.energy.base import (
    EnergyDelta,
    EnergyMeter,
    EnergyMeterUnavailable,
    EnergyReading,
    register_energy_meter,
)
from eebench.measure.energy.integrate import PowerIntegrator, background_reads
from eebench.measure.timing import DEFAULT_CLOCK, Clock

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
MODES = ("auto", "counter", "power")


def _code(err: BaseException) -> int | None:
    """The NVML return code of an NVMLError (its ``value``), or None for other errors."""
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


@register_energy_meter("nvml")
class NvmlMeter(EnergyMeter):
    """GPU ``device_index`` (or ``uuid``): its energy counter, or its integrated power."""

    name = "nvml"
    devices = ("cuda",)

    def __init__(
        self,
        device_index: int = 0,
        clock: Clock = DEFAULT_CLOCK,
        uuid: str | None = None,
        mode: str = "auto",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
        self.device_index = device_index
        self.uuid = uuid
        self.clock = clock
        self.requested_mode = mode
        self.mode: str | None = None if mode == "auto" else mode
        self._nvml: Any = None
        self._handle: Any = None
        self._integral = PowerIntegrator()

    @property
    def domain(self) -> str:
        return f"gpu{self.device_index}"

    @property
    def total_domain(self) -> str:
        return self.domain

    def sources(self) -> dict[str, str]:
        how = " (integrated power)" if self.mode == "power" else ""
        return {self.domain: f"nvml:{self.domain}{how}"}

    def _which(self) -> str:
        return f"GPU {self.uuid}" if self.uuid else f"GPU {self.device_index}"

    def _open(self) -> Any:
        if self._handle is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError:
                raise EnergyMeterUnavailable(
                    self.name, "nvidia-ml-py is not installed; pip install nvidia-ml-py"
                ) from None
            try:
                nvml.nvmlInit()
                self._handle = (
                    nvml.nvmlDeviceGetHandleByUUID(self.uuid)
                    if self.uuid
                    else nvml.nvmlDeviceGetHandleByIndex(self.device_index)
                )
            except Exception as err:  # NVMLError subclasses are generated at import
                raise EnergyMeterUnavailable(
                    self.name, f"NVML cannot open {self._which()}: {err}"
                ) from None
            self._nvml = nvml
        return self._handle

    def _denied(self, what: str, err: BaseException) -> EnergyMeterUnavailable:
        return EnergyMeterUnavailable(
            self.name,
            f"permission denied reading the {what} of {self._which()} ({err}); run as a user "
            "allowed to query the GPU (in a container: expose the device with the utility "
            "driver capability, e.g. NVIDIA_DRIVER_CAPABILITIES=compute,utility)",
        )

    def _counter_mj(self, handle: Any) -> float:
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception as err:
            if _code(err) == NVML_ERROR_NO_PERMISSION:
                raise self._denied("total-energy counter", err) from None
            raise

    def _power_w(self, handle: Any) -> float:
        try:
            return float(self._nvml.nvmlDeviceGetPowerUsage(handle)) / 1e3
        except Exception as err:
            if _code(err) == NVML_ERROR_NO_PERMISSION:
                raise self._denied("power reading", err) from None
            raise EnergyMeterUnavailable(
                self.name,
                f"{self._which()} has neither a total-energy counter (Volta or newer) nor a "
                f"power reading: {err}",
            ) from None

    def _resolve_mode(self, handle: Any) -> str:
        """``counter`` when the GPU has the energy counter, else ``power``."""
        if self.mode is None:
            try:
                self._counter_mj(handle)
                self.mode = "counter"
            except EnergyMeterUnavailable:
                raise
            except Exception as err:
                if _code(err) not in (NVML_ERROR_NOT_SUPPORTED, None):
                    raise EnergyMeterUnavailable(
                        self.name, f"cannot read the energy counter of {self._which()}: {err}"
                    ) from None
                self.mode = "power"
        return self.mode

    def available(self) -> tuple[bool, str]:
        try:
            self.read()
        except EnergyMeterUnavailable as err:
            return False, err.reason
        return True, ""

    def update_signal(self) -> float:
        """The raw counter (mJ) or power (W): what NVML refreshes once per update period."""
        handle = self._open()
        if self._resolve_mode(handle) == "counter":
            return self._counter_checked(handle)
        return self._power_w(handle)

    def _counter_checked(self, handle: Any) -> float:
        try:
            return self._counter_mj(handle)
        except EnergyMeterUnavailable:
            raise
        except Exception as err:
            raise EnergyMeterUnavailable(
                self.name,
                f"{self._which()} has no total-energy counter (needs Volta or newer): {err}",
            ) from None

    def read(self) -> EnergyReading:
        handle = self._open()
        if self._resolve_mode(handle) == "counter":
            mj = self._counter_checked(handle)
            return EnergyReading(self.name, self.clock(), {self.domain: mj / 1e3})
        with self._integral.lock:
            watts = self._power_w(handle)
            now = self.clock()
            return EnergyReading(self.name, now, self._integral.add(now, {self.domain: watts}))

    def energy_between(self, a: EnergyReading, b: EnergyReading) -> EnergyDelta:
        delta = super().energy_between(a, b)
        j = delta.joules.get(self.domain, 0.0)
        if j < 0:
            raise EnergyMeterUnavailable(
                self.name,
                f"the energy counter of {self._which()} went backwards ({a.joules[self.domain]:.3f}"
                f" J -> {b.joules[self.domain]:.3f} J): the driver was reloaded during the "
                "measurement; measure again",
            )
        return delta

    @contextmanager
    def sampling(self, interval_s: float = 0.01) -> Iterator[NvmlMeter]:
        """Integrating power needs reads during the body; the counter needs nothing."""
        self._open()
        if self._resolve_mode(self._handle) == "power":
            with background_reads(self.read, interval_s, "eebench-nvml-power"):
                yield self
        else:
            yield self

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = self._handle = None

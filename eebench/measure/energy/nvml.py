"""NVIDIA GPU energy from NVML's total-energy counter (``nvidia-ml-py``, optional).

``nvmlDeviceGetTotalEnergyConsumption`` returns the millijoules the GPU has
used since the driver was loaded (Volta and newer). It covers the GPU board
only, not the host CPU.
"""

from __future__ import annotations

import importlib
from typing import Any

from eebench.measure.energy.base import (
    EnergyMeter,
    EnergyMeterUnavailable,
    EnergyReading,
    register_energy_meter,
)
from eebench.measure.timing import DEFAULT_CLOCK, Clock


@register_energy_meter("nvml")
class NvmlMeter(EnergyMeter):
    """GPU ``device_index``'s cumulative energy counter."""

    name = "nvml"

    def __init__(self, device_index: int = 0, clock: Clock = DEFAULT_CLOCK) -> None:
        self.device_index = device_index
        self.clock = clock
        self._nvml: Any = None
        self._handle: Any = None

    @property
    def domain(self) -> str:
        return f"gpu{self.device_index}"

    @property
    def total_domain(self) -> str:
        return self.domain

    def sources(self) -> dict[str, str]:
        return {self.domain: f"nvml:{self.domain}"}

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
                self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device_index)
            except Exception as err:  # NVMLError subclasses are generated at import
                raise EnergyMeterUnavailable(
                    self.name, f"NVML cannot open GPU {self.device_index}: {err}"
                ) from None
            self._nvml = nvml
        return self._handle

    def available(self) -> tuple[bool, str]:
        try:
            self.read()
        except EnergyMeterUnavailable as err:
            return False, err.reason
        return True, ""

    def read(self) -> EnergyReading:
        handle = self._open()
        try:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as err:
            raise EnergyMeterUnavailable(
                self.name,
                f"GPU {self.device_index} has no total-energy counter (needs Volta or newer): {err}",
            ) from None
        return EnergyReading(self.name, self.clock(), {self.domain: float(mj) / 1e3})

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = self._handle = None

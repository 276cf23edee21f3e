"""Energy meters behind one interface (RAPL, NVML, Jetson INA3221, estimated) and
energy per inference with an idle baseline.

Importing this package registers the meters in ``ENERGY_METERS``.
"""

from eebench.measure.energy.base import (
    ENERGY_METERS,
    EnergyDelta,
    EnergyMeasurement,
    EnergyMeter,
    EnergyMeterUnavailable,
    EnergyReading,
    create_energy_meter,
    measure_energy,
    register_energy_meter,
)
from eebench.measure.energy.estimated import EstimatedEnergyMeter
from eebench.measure.energy.jetson import INPUT_RAILS, JetsonPowerMeter
from eebench.measure.energy.nvml import NvmlMeter
from eebench.measure.energy.rapl import RaplMeter


def detect_energy_meter() -> EnergyMeter | None:
    """The first hardware meter readable here (RAPL, NVML, Jetson), or None."""
    for meter in (RaplMeter(), NvmlMeter(), JetsonPowerMeter()):
        if meter.available()[0]:
            return meter
    return None


__all__ = [
    "ENERGY_METERS",
    "INPUT_RAILS",
    "EnergyDelta",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyMeterUnavailable",
    "EnergyReading",
    "EstimatedEnergyMeter",
    "JetsonPowerMeter",
    "NvmlMeter",
    "RaplMeter",
    "create_energy_meter",
    "detect_energy_meter",
    "measure_energy",
    "register_energy_meter",
]

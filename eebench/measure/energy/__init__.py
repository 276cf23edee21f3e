"""Energy meters behind one interface (RAPL, NVML, Jetson INA3221, estimated), the choice of
the meter that sees a backend's device, and energy per inference (net of idle power, gross
beside it) over windows sized to the meter's update period.

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
    synced_read,
)
from eebench.measure.energy.choice import (
    BACKEND_DEVICES,
    METER_CHOICES,
    MeterChoice,
    MeterPlaces,
    ProfilePower,
    check_meter_for_device,
    choose_meter,
    cuda_uuid,
    device_kind,
)
from eebench.measure.energy.estimated import EstimatedEnergyMeter
from eebench.measure.energy.jetson import INPUT_RAILS, JetsonPowerMeter
from eebench.measure.energy.net import Interval, NetEnergy, Window, mean_interval, net_energy
from eebench.measure.energy.nvml import NvmlMeter
from eebench.measure.energy.period import UpdatePeriod, detect_update_period
from eebench.measure.energy.predict import predict_energy
from eebench.measure.energy.rapl import RaplMeter
from eebench.measure.energy.session import (
    EnergySession,
    PartEnergy,
    WindowConfig,
    calls_per_window,
)

__all__ = [
    "BACKEND_DEVICES",
    "ENERGY_METERS",
    "INPUT_RAILS",
    "METER_CHOICES",
    "EnergyDelta",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyMeterUnavailable",
    "EnergyReading",
    "EnergySession",
    "EstimatedEnergyMeter",
    "Interval",
    "JetsonPowerMeter",
    "MeterChoice",
    "MeterPlaces",
    "NetEnergy",
    "NvmlMeter",
    "PartEnergy",
    "ProfilePower",
    "RaplMeter",
    "UpdatePeriod",
    "Window",
    "WindowConfig",
    "calls_per_window",
    "check_meter_for_device",
    "choose_meter",
    "create_energy_meter",
    "cuda_uuid",
    "detect_update_period",
    "device_kind",
    "mean_interval",
    "measure_energy",
    "net_energy",
    "predict_energy",
    "register_energy_meter",
    "synced_read",
]

"""Energy meters against fixture sysfs trees written here: RAPL (with a wraparound and a
permission error), Jetson INA3221 (hwmon and iio layouts), NVML through a stand-in module,
the estimated fallback, and energy per inference with the idle baseline."""

import sys
import types
from pathlib import Path

import pytest

from eebench.measure.energy import (
    ENERGY_METERS,
    EnergyMeterUnavailable,
    EstimatedEnergyMeter,
    JetsonPowerMeter,
    NvmlMeter,
    RaplMeter,
    measure_energy,
)


class StepClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def write(path: Path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def rapl_tree(root: Path, packages=(0,), max_range=262_143_328_850) -> Path:
    """A powercap tree: package zones with core and dram subzones, plus an mmio duplicate."""
    for p in packages:
        zone = root / f"intel-rapl:{p}"
        write(zone / "name", f"package-{p}")
        write(zone / "energy_uj", 1_000_000)
        write(zone / "max_energy_range_uj", max_range)
        for sub, name in ((0, "core"), (2, "dram")):
            z = root / f"intel-rapl:{p}:{sub}"
            write(z / "name", name)
            write(z / "energy_uj", 500_000)
            write(z / "max_energy_range_uj", 65_712_999_613)
    write(root / "intel-rapl-mmio:0" / "name", "package-0")
    return root


def set_energy(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_reads_packages_and_dram_and_sums_packages_only(tmp_path):
    root = rapl_tree(tmp_path, packages=(0, 1))
    clock = StepClock()
    meter = RaplMeter(root, clock=clock)
    assert meter.available() == (True, "")
    assert set(meter.zones()) == {"package-0", "package-1", "package-0/dram", "package-1/dram"}
    a = meter.read()
    set_energy(root, "intel-rapl:0", 3_000_000)  # +2 J
    set_energy(root, "intel-rapl:1", 1_500_000)  # +0.5 J
    set_energy(root, "intel-rapl:0:2", 800_000)  # dram +0.3 J
    clock.now = 2_000_000_000
    b = meter.read()
    d = meter.energy_between(a, b)
    assert d.joules["package-0"] == pytest.approx(2.0)
    assert d.joules["package-0/dram"] == pytest.approx(0.3)
    assert d.total_domain == "package" and d.total_joules == pytest.approx(2.5)  # dram not added
    assert d.watts()["package"] == pytest.approx(1.25)
    assert d.sources["package-0/dram"] == "rapl:package-0/dram"


def test_rapl_counter_wraparound_uses_max_energy_range(tmp_path):
    root = rapl_tree(tmp_path, max_range=10_000_000)  # wraps at 10 J
    meter = RaplMeter(root, clock=StepClock())
    set_energy(root, "intel-rapl:0", 9_500_000)
    a = meter.read()
    set_energy(root, "intel-rapl:0", 700_000)  # 9.5 J -> wrap -> 0.7 J: 1.2 J used
    b = meter.read()
    assert meter.energy_between(a, b).joules["package-0"] == pytest.approx(1.2)


def test_rapl_permission_error_says_how_to_grant_access(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path)
    original = Path.read_text

    def deny_energy(self, *args, **kwargs):  # root ignores file modes, so deny like the kernel does
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny_energy)
    meter = RaplMeter(root)
    ok, reason = meter.available()
    assert not ok
    assert "permission denied" in reason and "sudo chmod o+r" in reason and str(root) in reason
    with pytest.raises(EnergyMeterUnavailable, match="chmod o\\+r"):
        meter.read()


def test_rapl_absent_says_so(tmp_path):
    ok, reason = RaplMeter(tmp_path / "nothing").available()
    assert not ok and "no RAPL package zones" in reason


def jetson_hwmon_tree(root: Path, with_input_rail: bool = True) -> Path:
    dev = root / "class" / "hwmon" / "hwmon3"
    write(dev / "name", "ina3221")
    rails = [("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)]
    if not with_input_rail:
        rails[0] = ("VDD_SYS", 5000, 500)
    for k, (label, mv, ma) in enumerate(rails, start=1):
        write(dev / f"in{k}_label", label)
        write(dev / f"in{k}_input", mv)
        write(dev / f"curr{k}_input", ma)
    write(dev / "in7_label", "sum of shunt voltages")  # no current: not a rail
    other = root / "class" / "hwmon" / "hwmon0"
    write(other / "name", "thermal")
    return root


def test_jetson_hwmon_rails_integrate_power_and_the_input_rail_is_the_total(tmp_path):
    root = jetson_hwmon_tree(tmp_path)
    clock = StepClock()
    meter = JetsonPowerMeter(root, clock=clock)
    assert meter.available() == (True, "")
    assert meter.rails() == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert meter.read_power()["VDD_IN"] == pytest.approx(6.0)  # 5 V x 1.2 A
    assert meter.total_domain == "VDD_IN"
    a = meter.read()
    clock.now = 1_000_000_000
    write(root / "class/hwmon/hwmon3/curr1_input", 2000)  # 10 W now
    b = meter.read()
    d = meter.energy_between(a, b)
    assert d.joules["VDD_IN"] == pytest.approx(8.0)  # trapezoid: (6 + 10) / 2 W x 1 s
    assert d.total_joules == pytest.approx(8.0)  # the input rail, not the sum of rails
    assert d.joules["VDD_SOC"] == pytest.approx(1.5)
    assert "total" in d.sources["VDD_IN"]


def test_jetson_without_an_input_rail_has_no_total(tmp_path):
    meter = JetsonPowerMeter(jetson_hwmon_tree(tmp_path, with_input_rail=False), clock=StepClock())
    assert meter.total_domain is None


def test_jetson_iio_layout_of_older_releases(tmp_path):
    dev = tmp_path / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for k, (name, mw) in enumerate(
        [("POM_5V_IN", 3500), ("POM_5V_GPU", 800), ("POM_5V_CPU", 1200)]
    ):
        write(dev / f"rail_name_{k}", name)
        write(dev / f"in_power{k}_input", mw)
    meter = JetsonPowerMeter(tmp_path, clock=StepClock())
    assert meter.total_domain == "POM_5V_IN"
    assert meter.read_power() == pytest.approx(
        {"POM_5V_IN": 3.5, "POM_5V_GPU": 0.8, "POM_5V_CPU": 1.2}
    )


def test_jetson_absent_says_so(tmp_path):
    ok, reason = JetsonPowerMeter(tmp_path).available()
    assert not ok and "no INA3221" in reason


def test_estimated_meter_uses_idle_and_active_power_and_labels_its_numbers():
    clock = StepClock()
    meter = EstimatedEnergyMeter(
        idle_watts=2.0, active_watts=7.0, profile="jetson-orin-nano", clock=clock
    )
    a = meter.read()
    with meter.phase("idle"):
        clock.now += 1_000_000_000
    clock.now += 2_000_000_000  # active by default
    d = meter.energy_between(a, meter.read())
    assert d.total_joules == pytest.approx(2.0 + 14.0)
    assert d.sources["board"] == "estimated:jetson-orin-nano"
    assert not EstimatedEnergyMeter().available()[0]


def test_measure_energy_divides_by_inferences_and_reports_the_idle_baseline(tmp_path):
    root = rapl_tree(tmp_path)
    clock = StepClock()
    meter = RaplMeter(root, clock=clock)
    counter = {"uj": 1_000_000}

    def advance(seconds: float, watts: float) -> None:
        clock.now += int(seconds * 1e9)
        counter["uj"] += int(watts * seconds * 1e6)
        set_energy(root, "intel-rapl:0", counter["uj"])

    def infer() -> None:  # 10 ms at 20 W per call of a batch of 4
        advance(0.01, 20.0)

    result = measure_energy(
        meter,
        infer,
        inferences_per_call=4,
        min_calls=50,
        min_time_s=0.2,
        idle_s=1.0,
        clock=clock,
        sleep=lambda s: advance(s, 5.0),
    )
    assert result.inferences == 200  # 50 calls x 4, and 0.5 s >= 0.2 s
    assert result.idle_watts == pytest.approx(5.0)
    assert result.busy_watts == pytest.approx(20.0)
    assert result.joules_per_inference == pytest.approx(20.0 * 0.5 / 200)
    assert result.net_joules_per_inference == pytest.approx(15.0 * 0.5 / 200)
    assert result.source.startswith("rapl:package")
    assert result.to_dict()["idle"]["seconds"] == pytest.approx(1.0)


def test_measure_energy_refuses_an_unavailable_meter(tmp_path):
    with pytest.raises(EnergyMeterUnavailable, match="no RAPL"):
        measure_energy(RaplMeter(tmp_path), lambda: None, idle_s=0)


def test_nvml_counter_in_millijoules_through_the_nvml_interface(monkeypatch):
    fake = types.ModuleType("pynvml")
    state = {"mj": 125_000}
    fake.nvmlInit = lambda: None
    fake.nvmlShutdown = lambda: None
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda h: state["mj"]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    clock = StepClock()
    meter = NvmlMeter(0, clock=clock)
    assert meter.available() == (True, "")
    a = meter.read()
    state["mj"] += 4_500
    clock.now = 500_000_000
    d = meter.energy_between(a, meter.read())
    assert d.total_joules == pytest.approx(4.5) and d.watts()["gpu0"] == pytest.approx(9.0)
    assert d.sources == {"gpu0": "nvml:gpu0"}


def test_nvml_missing_library_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    ok, reason = NvmlMeter().available()
    assert not ok and "nvidia-ml-py" in reason


def test_every_meter_is_registered():
    assert set(ENERGY_METERS.names()) >= {"rapl", "nvml", "jetson", "estimated"}

"""Energy from the device that did the work, without the hardware: the meter follows the
backend's device, an explicit mismatch is refused with the fix, readings are synchronised
with the device, windows are sized to the detected update period, and net (idle subtracted)
vs gross arithmetic matches hand-computed numbers. NVML is a stand-in ``pynvml`` module with
a controllable update period; RAPL and the Jetson rails are fixture sysfs trees."""

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from eebench.errors import ConfigError
from eebench.measure.energy import (
    EnergyMeterUnavailable,
    EnergySession,
    EstimatedEnergyMeter,
    JetsonPowerMeter,
    MeterPlaces,
    NvmlMeter,
    ProfilePower,
    RaplMeter,
    Window,
    WindowConfig,
    calls_per_window,
    choose_meter,
    detect_update_period,
    device_kind,
    net_energy,
    predict_energy,
)
from tests.test_energy import jetson_hwmon_tree, rapl_tree, set_energy


class Clock:
    """A fake clock in ns; ``tick`` ns pass on every read (a poll takes time)."""

    def __init__(self, tick: int = 0) -> None:
        self.now = 0
        self.tick = tick

    def __call__(self) -> int:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(round(seconds * 1e9))


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeGpu:
    """A GPU whose energy counter (mJ) NVML refreshes every ``period_s`` of the fake clock:
    between refreshes a read returns the value of the last refresh."""

    def __init__(self, clock: Clock, period_s: float, watts: float = 100.0) -> None:
        self.clock, self.period_ns, self.watts = clock, int(period_s * 1e9), watts
        self.energy_j = 0.0  # true energy at the last event
        self.t_ns = 0
        self.energy_error: int | None = None
        self.power_error: int | None = None
        self.offset_mj = 5_000_000.0

    def true_energy(self) -> float:
        return self.energy_j + self.watts * (self.clock.now - self.t_ns) / 1e9

    def set_watts(self, watts: float) -> None:
        self.energy_j, self.t_ns, self.watts = self.true_energy(), self.clock.now, watts

    def counter_mj(self) -> float:
        last_update = self.clock.now - self.clock.now % self.period_ns
        e = self.energy_j + self.watts * max(0, last_update - self.t_ns) / 1e9
        if last_update < self.t_ns:  # no refresh since the power changed
            e = self.energy_j
        return math.floor(self.offset_mj + e * 1e3)

    def module(self, index_calls: list | None = None) -> types.ModuleType:
        fake = types.ModuleType("pynvml")
        fake.NVMLError = NVMLError
        fake.nvmlInit = lambda: None
        fake.nvmlShutdown = lambda: None
        fake.nvmlDeviceGetHandleByIndex = lambda i: ("index", i)
        fake.nvmlDeviceGetHandleByUUID = lambda u: ("uuid", u)

        def energy(handle):
            if self.energy_error is not None:
                raise NVMLError(self.energy_error)
            return self.counter_mj()

        def power(handle):
            if self.power_error is not None:
                raise NVMLError(self.power_error)
            return int(self.watts * 1e3)

        fake.nvmlDeviceGetTotalEnergyConsumption = energy
        fake.nvmlDeviceGetPowerUsage = power
        return fake


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)


def places(tmp_path: Path, rapl: bool = False, jetson: bool = False) -> MeterPlaces:
    powercap = tmp_path / "powercap"
    if rapl:
        rapl_tree(powercap)
    sysfs = tmp_path / "sys"
    if jetson:
        jetson_hwmon_tree(sysfs)
    return MeterPlaces(powercap=powercap, sysfs=sysfs, root=tmp_path / "root")


# ---------------------------------------------------------------------- which meter
def test_device_kinds_of_prepared_models():
    assert device_kind("cpu") == "cpu"
    assert device_kind("cuda:1") == "cuda" and device_kind("cuda") == "cuda"


def test_cuda_backend_reads_nvml_even_when_rapl_is_readable(tmp_path, monkeypatch):
    gpu = FakeGpu(Clock(), period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    where = places(tmp_path, rapl=True)
    choice = choose_meter("cuda:0", "torch-cuda", places=where)
    assert choice.kind == "measured" and isinstance(choice.meter, NvmlMeter)
    cpu = choose_meter("cpu", "torch-cpu", places=where)
    assert cpu.kind == "measured" and isinstance(cpu.meter, RaplMeter)


def test_nvml_reads_the_gpu_of_the_cuda_device(tmp_path, monkeypatch):
    gpu = FakeGpu(Clock(), period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    meter = choose_meter("cuda:1", "torch-cuda", places=places(tmp_path)).meter
    assert isinstance(meter, NvmlMeter) and meter.device_index == 1 and meter.domain == "gpu1"
    by_uuid = choose_meter("cuda:1", "torch-cuda", places=places(tmp_path), gpu_uuid="GPU-ab")
    assert by_uuid.meter._open() == ("uuid", "GPU-ab")


def test_jetson_rails_measure_both_cpu_and_cuda_backends_on_a_jetson(tmp_path, monkeypatch):
    gpu = FakeGpu(Clock(), period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())  # even with NVML importable
    where = places(tmp_path, rapl=True, jetson=True)
    for device, backend in (("cuda:0", "torch-cuda"), ("cpu", "torch-cpu")):
        choice = choose_meter(device, backend, places=where)
        assert choice.kind == "measured" and isinstance(choice.meter, JetsonPowerMeter)
        assert choice.meter.total_domain == "VDD_IN"


@pytest.mark.parametrize(
    "meter, device, backend, fix",
    [
        ("rapl", "cuda:0", "torch-cuda", "set meter: nvml"),
        ("nvml", "cpu", "torch-cpu", "set meter: rapl"),
        ("nvml", "cpu", "onnxruntime", "set meter: rapl"),
    ],
)
def test_an_explicit_meter_of_another_device_is_an_error_with_the_fix(
    tmp_path, meter, device, backend, fix
):
    with pytest.raises(ConfigError) as err:
        choose_meter(device, backend, meter, places=places(tmp_path, rapl=True))
    msg = str(err.value)
    assert "measurement.energy.meter" in msg and backend in msg and device in msg and fix in msg


def test_the_wrong_device_meter_is_never_a_fallback(tmp_path, no_nvml):
    """RAPL is readable, NVML is not: a CUDA backend gets no energy, with the reason."""
    choice = choose_meter("cuda:0", "torch-cuda", places=places(tmp_path, rapl=True))
    assert choice.meter is None and choice.kind == "unavailable"
    assert "nvml" in choice.reason and "nvidia-ml-py" in choice.reason
    assert "measurement.energy.profile" in choice.reason


def test_an_unreadable_meter_falls_back_to_the_profile_estimate(tmp_path, no_nvml):
    power = ProfilePower("jetson-orin-nano-8gb-15w", idle_w=4.0, active_w=12.0)
    choice = choose_meter("cuda:0", "torch-cuda", power=power, places=places(tmp_path, rapl=True))
    assert choice.kind == "estimated" and isinstance(choice.meter, EstimatedEnergyMeter)
    assert choice.meter.sources() == {"board": "estimated:jetson-orin-nano-8gb-15w"}
    assert "nvml" in choice.reason and "4 W" in choice.reason and "12 W" in choice.reason
    cpu = choose_meter("cpu", "torch-cpu", places=places(tmp_path / "bare"))  # no RAPL
    assert cpu.kind == "unavailable" and "no RAPL package zones" in cpu.reason


def test_the_backend_devices_table_matches_the_prepared_models():
    from eebench.backends import get_backend
    from eebench.measure.energy import BACKEND_DEVICES
    from eebench.models import create_model

    model = create_model("big-little", num_classes=10, input_shape=(1, 8, 8))
    prepared = get_backend("torch-cpu").prepare(model, batch_size=1, threads=1)
    assert BACKEND_DEVICES["torch-cpu"] == device_kind(prepared.device) == "cpu"


def test_onnxruntime_prepares_on_the_cpu_by_default(tmp_path):
    from eebench.backends import get_backend
    from eebench.measure.energy import BACKEND_DEVICES
    from eebench.models import create_model

    backend = get_backend("onnxruntime")
    ok, why = backend.available()
    if not ok:
        pytest.skip(f"onnxruntime is not usable here: {why}")
    model = create_model("big-little", num_classes=10, input_shape=(1, 8, 8))
    prepared = backend.prepare(model, batch_size=1, threads=1, cache_dir=tmp_path)
    assert BACKEND_DEVICES["onnxruntime"] == device_kind(prepared.device) == "cpu"


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA device (torch-cuda)"
)
def test_torch_cuda_prepares_on_a_cuda_device():  # pragma: no cover - GPU hosts only
    from eebench.backends import get_backend
    from eebench.measure.energy import BACKEND_DEVICES
    from eebench.models import create_model

    model = create_model("big-little", num_classes=10, input_shape=(1, 8, 8))
    prepared = get_backend("torch-cuda").prepare(model, batch_size=1, threads=1)
    assert BACKEND_DEVICES["torch-cuda"] == device_kind(prepared.device) == "cuda"


# ---------------------------------------------------------------------- NVML specifics
def test_nvml_permission_error_says_so(monkeypatch):
    gpu = FakeGpu(Clock(), period_s=0.02)
    gpu.energy_error = 4  # NVML_ERROR_NO_PERMISSION
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    ok, reason = NvmlMeter(0).available()
    assert not ok and "permission denied" in reason and "GPU 0" in reason


def test_nvml_without_an_energy_counter_integrates_power(monkeypatch):
    clock = Clock()
    gpu = FakeGpu(clock, period_s=0.02, watts=50.0)
    gpu.energy_error = 3  # NVML_ERROR_NOT_SUPPORTED: a pre-Volta GPU
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    meter = NvmlMeter(0, clock=clock)
    a = meter.read()
    assert meter.mode == "power" and "integrated power" in meter.sources()["gpu0"]
    clock.advance(2.0)
    gpu.set_watts(70.0)
    d = meter.energy_between(a, meter.read())
    assert d.total_joules == pytest.approx((50.0 + 70.0) / 2 * 2.0)  # trapezoid
    gpu.power_error = 3
    ok, reason = NvmlMeter(0, clock=clock).available()
    assert not ok and "neither a total-energy counter" in reason


def test_nvml_counter_going_backwards_is_an_error_not_negative_energy(monkeypatch):
    clock = Clock()
    gpu = FakeGpu(clock, period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    meter = NvmlMeter(0, clock=clock)
    a = meter.read()
    gpu.offset_mj = 0.0  # the driver reloaded: the counter restarts from zero
    clock.advance(1.0)
    with pytest.raises(EnergyMeterUnavailable, match="went backwards"):
        meter.energy_between(a, meter.read())


# ---------------------------------------------------------------------- update period
def test_update_period_of_nvml_is_detected_by_polling(monkeypatch):
    clock = Clock(tick=50_000)  # a poll takes 50 us
    gpu = FakeGpu(clock, period_s=0.1)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    period = detect_update_period(NvmlMeter(0, clock=clock), probe_s=0.55, clock=clock)
    assert period.resolved and period.changes == 5  # refreshes at 0.1, 0.2, ..., 0.5 s
    assert period.seconds == pytest.approx(0.1, rel=1e-3)


def test_update_period_of_rapl_about_one_millisecond(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path)
    clock = Clock(tick=20_000)
    original = Path.read_text

    def live(self, *args, **kwargs):  # the kernel refreshes energy_uj every 1 ms at 10 W
        if self.name == "energy_uj" and self.parent.name == "intel-rapl:0":
            return f"{1_000_000 + (clock.now // 1_000_000) * 10_000}\n"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", live)
    period = detect_update_period(RaplMeter(root, clock=clock), probe_s=0.1, clock=clock)
    # an upper bound, tight to two polls (a poll reads the clock twice here: 40 us)
    assert period.resolved and 0.001 <= period.seconds <= 0.001 + 2 * 40e-6


def test_update_period_of_the_jetson_rails(tmp_path, monkeypatch):
    root = jetson_hwmon_tree(tmp_path)
    clock = Clock(tick=100_000)
    original = Path.read_text

    def live(self, *args, **kwargs):  # a new INA3221 conversion every 40 ms
        if self.name == "curr1_input":
            return f"{1200 + (clock.now // 40_000_000) % 7}\n"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", live)
    period = detect_update_period(JetsonPowerMeter(root, clock=clock), probe_s=0.5, clock=clock)
    assert period.resolved and period.seconds == pytest.approx(0.04, rel=0.01)


def test_a_meter_that_never_changes_in_the_probe_reports_at_least_the_probe(tmp_path):
    clock = Clock(tick=1_000_000)
    period = detect_update_period(RaplMeter(rapl_tree(tmp_path), clock=clock), 0.2, clock)
    assert not period.resolved and period.changes == 0 and period.seconds >= 0.2


def test_estimated_energy_is_continuous_and_not_polled():
    period = detect_update_period(EstimatedEnergyMeter(1.0, 2.0), probe_s=10.0)
    assert period.seconds == 0.0 and period.polls == 0


# ---------------------------------------------------------------------- windows and sync
def test_window_holds_many_calls_of_a_fast_stage():
    config = WindowConfig(periods_per_window=10, min_window_s=0.05)
    assert config.window_s(0.1) == pytest.approx(1.0)  # 10 NVML periods of 100 ms
    assert config.window_s(0.001) == pytest.approx(0.05)  # RAPL: the minimum window
    assert calls_per_window(1.0, 50e-6) == 20_000  # a 50 us stage
    assert calls_per_window(1.0, 3.0) == 1


def test_session_sizes_windows_to_the_detected_period_and_synchronises_every_read(monkeypatch):
    clock = Clock(tick=10_000)
    gpu = FakeGpu(clock, period_s=0.1, watts=60.0)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    events: list[str] = []
    meter = NvmlMeter(0, clock=clock)
    original_read = meter.read

    def read():
        events.append("read")
        return original_read()

    meter.read = read

    def sync():
        events.append("sync")

    def stage():  # 50 us of GPU work at 160 W (100 W above idle)
        events.append("call")
        gpu.set_watts(160.0)
        clock.advance(50e-6)
        gpu.set_watts(60.0)

    def sleep(seconds):
        clock.advance(seconds)

    config = WindowConfig(periods_per_window=10, windows=3, idle_windows=2, probe_s=0.55)
    session = EnergySession(meter, sync=sync, config=config, clock=clock, sleep=sleep)
    session.start()
    assert session.period.seconds == pytest.approx(0.1, rel=1e-3)
    events.clear()
    part = session.measure(stage, inferences_per_call=1, call_s=50e-6)
    assert part.window_s == pytest.approx(1.0, rel=1e-3)  # 10 periods (and a poll or two)
    calls = part.calls_per_window
    assert calls == math.ceil(part.window_s / 50e-6) and 20_000 <= calls <= 20_010
    assert part.windows == 3
    # every reading directly follows a device synchronisation, and no call runs in between
    reads = [k for k, e in enumerate(events) if e == "read"]
    assert len(reads) == 6 and all(events[k - 1] == "sync" for k in reads)
    first_window = events[reads[0] - 1 : reads[1] + 1]
    assert first_window == ["sync", "read"] + ["call"] * calls + ["sync", "read"]
    # 1 s windows on a 100 ms meter: net energy within a quantum of the true 100 W x 50 us
    net = part.energy.net_j.estimate
    assert net == pytest.approx(5e-3, rel=0.15)
    assert part.energy.idle_w.estimate == pytest.approx(60.0, rel=0.15)
    assert part.energy.gross_j.estimate > net


def test_a_counter_wrap_inside_a_window_is_handled(tmp_path):
    root = rapl_tree(tmp_path, max_range=10_000_000)  # wraps at 10 J
    clock = Clock()
    counter = {"uj": 9_000_000}

    def advance(seconds: float, watts: float) -> None:
        clock.advance(seconds)
        counter["uj"] = (counter["uj"] + int(round(watts * seconds * 1e6))) % 10_000_000
        set_energy(root, "intel-rapl:0", counter["uj"])

    set_energy(root, "intel-rapl:0", counter["uj"])
    meter = RaplMeter(root, clock=clock)
    meter.update_period_s = 0.001  # a fixture counter cannot be polled in real time
    config = WindowConfig(periods_per_window=10, min_window_s=0.1, windows=2, idle_windows=2)
    session = EnergySession(meter, config=config, clock=clock, sleep=lambda s: advance(s, 5.0))
    part = session.start().measure(lambda: advance(0.01, 25.0), inferences_per_call=2, call_s=0.01)
    # 10 calls of 10 ms at 25 W per window (2.5 J; the counter wraps in the first window)
    assert part.calls_per_window == 10
    assert part.energy.gross_j.estimate == pytest.approx(25.0 * 0.01 / 2)
    assert part.energy.idle_w.estimate == pytest.approx(5.0)
    assert part.energy.net_j.estimate == pytest.approx(20.0 * 0.01 / 2)


# ---------------------------------------------------------------------- net vs gross
def test_net_and_gross_per_inference_with_intervals_by_hand():
    busy = [Window(2.0, 1.0, 100), Window(2.4, 1.0, 100)]
    idle = [Window(0.5, 1.0), Window(0.7, 1.0)]
    r = net_energy(busy, idle)
    t1 = 12.706204736174698  # Student t, 97.5%, 1 degree of freedom
    # gross: 20 mJ and 24 mJ per inference; mean 22 mJ, sd 2.828 mJ, se 2 mJ
    assert r.gross_j.estimate == pytest.approx(0.022)
    assert r.gross_j.hi - r.gross_j.estimate == pytest.approx(t1 * 0.002)
    # idle: 0.5 W and 0.7 W; mean 0.6 W, se 0.1 W
    assert r.idle_w.estimate == pytest.approx(0.6)
    assert r.idle_w.lo == pytest.approx(0.6 - t1 * 0.1)
    # net: 20 - 0.6 W x 10 ms = 14 mJ and 18 mJ; mean 16 mJ
    assert r.net_j.estimate == pytest.approx(0.016)
    # spread: busy var(u)/W = 8e-6/2 = 4e-6; idle (10 ms)^2 x 0.02/2 = 1e-6; total 5e-6 J^2,
    # Welch-Satterthwaite dof = 25e-12 / (16e-12 + 1e-12)
    dof = 25 / 17
    half = stats.t.ppf(0.975, dof) * math.sqrt(5e-6)
    assert r.net_j.lo == pytest.approx(0.016 - half)
    assert r.net_j.hi == pytest.approx(0.016 + half)
    assert r.busy_w == pytest.approx(2.2) and r.inferences == 200


def test_net_interval_covers_the_true_net_energy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_net, idle_w, s = 0.010, 5.0, 0.002  # J per inference, W, s per inference
    covered = 0
    for _ in range(1000):
        p = rng.normal(idle_w, 0.3, size=5)
        e = true_net + idle_w * s + rng.normal(0, 0.0005, size=5)
        busy = [Window(j * 500, s * 500, 500) for j in e]
        idle = [Window(w, 1.0) for w in p]
        r = net_energy(busy, idle)
        covered += r.net_j.lo <= true_net <= r.net_j.hi
    assert 930 <= covered <= 975


def test_net_energy_refuses_windows_without_inferences_or_idle():
    with pytest.raises(ValueError, match="at least one inference"):
        net_energy([Window(1.0, 1.0, 0)], [Window(1.0, 1.0)])
    with pytest.raises(ValueError, match="idle baseline"):
        net_energy([Window(1.0, 1.0, 10)], [])


def test_predicted_energy_of_an_early_exit_run():
    stage = np.array([1.0, 2.0, 4.0])
    head = np.array([0.1, 0.2, 0.4])
    # leaving at exit 0 costs 1.1, at exit 1 1.1 + 2.2, at exit 2 everything: 7.7
    np.testing.assert_allclose(predict_energy([0, 1, 2, 0], stage, head), [1.1, 3.3, 7.7, 1.1])
    with pytest.raises(ValueError, match="exit indices"):
        predict_energy([3], stage, head)


def test_update_period_survives_a_poller_that_loses_the_cpu(monkeypatch):
    """A loaded machine deschedules the poller for several periods now and then: the missed
    updates must not stretch the period."""

    class StallingClock(Clock):
        def __init__(self) -> None:
            super().__init__(tick=100_000)
            self.reads = 0

        def __call__(self) -> int:
            self.reads += 1
            if self.reads % 3000 == 0:  # every 300 ms of polling
                self.now += 175_000_000  # descheduled for 175 ms: three updates missed
            return super().__call__()

    clock = StallingClock()
    gpu = FakeGpu(clock, period_s=0.05)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    period = detect_update_period(NvmlMeter(0, clock=clock), probe_s=3.0, clock=clock)
    assert period.resolved and period.seconds == pytest.approx(0.05, rel=0.01)
    naive = 3.0 / period.changes  # what counting changes over the probe would say
    assert naive > 0.06


# ---------------------------------------------------------------------- through the runner
class FakeCudaPrepared:
    """A prepared model on ``cuda:0`` that records device synchronisations, meter reads and
    calls in order (the work is host-side: the GPU's counter is the fake NVML's)."""

    backend = "torch-cuda"
    device = "cuda:0"
    num_stages = 2

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def sync(self) -> None:
        self.events.append("sync")

    def activated(self):
        from contextlib import nullcontext

        return nullcontext(self)

    def to_input(self, x):
        return x

    def stage_inputs(self, x):
        return [(x,), (x,), (x,)]

    def run_stage(self, i, state):
        self.events.append("call")
        return state

    def run_exit(self, i, state):
        self.events.append("call")
        return state


def _energy_through_the_runner(tmp_path, monkeypatch, counter_mj):
    """The runner's energy step for a fake ``torch-cuda`` model (two parts of 1 ms) on a fake
    NVML GPU whose counter is ``counter_mj()``; RAPL is readable too. Returns (rows, skipped,
    info, events)."""
    import time
    from types import SimpleNamespace

    from eebench.measure.timing import MeasurementSpec
    from eebench.suites.runner import RunOptions, SuiteRunner
    from eebench.suites.schema import parse_suite

    class WallClock(Clock):
        def __call__(self) -> int:
            return time.perf_counter_ns()

    gpu = FakeGpu(WallClock(), period_s=0.005, watts=80.0)
    monkeypatch.setattr(gpu, "counter_mj", counter_mj)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    # RAPL is readable too: it must not be chosen for a CUDA backend
    monkeypatch.setattr("eebench.measure.energy.choice.DEFAULT_PLACES", places(tmp_path, rapl=True))
    events: list[str] = []
    original_read = NvmlMeter.read

    def read(self):
        events.append("read")
        return original_read(self)

    monkeypatch.setattr(NvmlMeter, "read", read)
    energy = {"windows": 2, "idle_windows": 2, "min_window_s": 0.01, "probe_s": 0.05}
    spec = parse_suite(
        {"name": "s", "models": [{"name": "big-little"}], "measurement": {"energy": energy}}
    )
    runner = SuiteRunner(spec, tmp_path / "s.yaml", RunOptions(log=lambda m: None))
    parts = SimpleNamespace(
        all=[
            SimpleNamespace(
                spec=MeasurementSpec("bl", part, 0, "torch-cuda", "cuda:0", 1, 1),
                stats=SimpleNamespace(median=1e6),  # 1 ms per call
            )
            for part in ("stage", "exit")
        ]
    )
    rows, skipped, info = runner._energy("bl", FakeCudaPrepared(events), 0.0, parts)
    return rows, skipped, info, events


def _counter_5ms() -> int:
    """A GPU energy counter that NVML refreshes every 5 ms (1 mJ per refresh)."""
    import time

    return time.perf_counter_ns() // 5_000_000


def test_the_runner_reads_a_cuda_backend_from_nvml_with_a_sync_before_every_read(
    tmp_path, monkeypatch
):
    rows, skipped, info, events = _energy_through_the_runner(tmp_path, monkeypatch, _counter_5ms)
    assert skipped is None and info["kind"] == "measured" and info["meter"] == "nvml"
    # the window follows the detected period (at least 10 ms, 10 periods); 1 ms calls fill it
    period = info["update_period"]["seconds"]
    assert period >= 0.005 * 0.99  # an upper bound: never shorter than the true 5 ms
    window = max(0.01, 10 * period)
    window_rows = rows.loc[rows["metric"] == "energy_window_s", "value"]
    np.testing.assert_allclose(window_rows, window)
    assert set(rows["source"]) == {"measured:torch-cuda+nvml:gpu0"}
    assert set(rows["device"]) == {"cuda:0"}
    # every meter reading follows a device synchronisation, with no call in between
    # two reads check that the meter is readable (choice, session start); then every meter
    # reading of the idle baseline and of each part's windows follows a device synchronisation
    reads = [k for k, e in enumerate(events) if e == "read"]
    assert "sync" not in events[: reads[1]]
    measuring = reads[2:]
    assert len(measuring) == 2 * (2 + 2 * 2)  # 2 idle windows, 2 windows x 2 parts
    assert all(events[k - 1] == "sync" for k in measuring)
    calls_per_window = rows.loc[rows["metric"] == "energy_calls_per_window", "value"]
    assert (calls_per_window == math.ceil(window / 1e-3)).all()


def test_a_meter_failing_mid_run_keeps_the_parts_measured_and_says_why(tmp_path, monkeypatch):
    import time

    state = {"countdown": None, "offset": 0}

    def counter() -> int:  # the driver reloads inside the second part's first window
        if state["countdown"] is not None:
            state["countdown"] -= 1
            if state["countdown"] == 0:
                state["offset"] = -(10**9)
        return time.perf_counter_ns() // 5_000_000 + state["offset"]

    original = EnergySession.measure
    calls = {"n": 0}

    def measure(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            state["countdown"] = 2  # the window's first reading is fine, its last is not
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EnergySession, "measure", measure)
    rows, skipped, info, _ = _energy_through_the_runner(tmp_path, monkeypatch, counter)
    assert set(rows["part"]) == {"stage"}  # the first part's rows are kept
    assert info["kind"] == "unavailable" and "went backwards" in info["reason"]
    row = skipped.iloc[0]
    assert row["step"] == "energy" and row["target"] == "torch-cuda"
    assert "exit 0" in row["reason"] and "went backwards" in row["reason"]


def test_a_jetson_without_readable_rails_is_not_measured_by_another_meter(tmp_path, monkeypatch):
    gpu = FakeGpu(Clock(), period_s=0.02)
    monkeypatch.setitem(sys.modules, "pynvml", gpu.module())
    where = places(tmp_path, rapl=True)
    (where.root / "etc").mkdir(parents=True)
    (where.root / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\n")
    choice = choose_meter("cuda:0", "torch-cuda", places=where)
    assert choice.meter is None and "jetson" in choice.reason and "no INA3221" in choice.reason


def test_jetson_rails_permission_error_says_so(tmp_path, monkeypatch):
    root = jetson_hwmon_tree(tmp_path)
    original = Path.read_text

    def deny(self, *args, **kwargs):
        if self.name.startswith("curr"):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    meter = JetsonPowerMeter(root)
    ok, reason = meter.available()
    assert not ok and "cannot read the INA3221 rails" in reason and "Permission denied" in reason
    with pytest.raises(EnergyMeterUnavailable, match="Permission denied"):
        meter.read()

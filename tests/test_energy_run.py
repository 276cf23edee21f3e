"""Energy through a real tiny run, on a fixture RAPL tree whose counter moves like the kernel's:
idle power x wall time plus active power x the process's CPU time, refreshed every 1 ms. The
run must read it for the CPU backend, subtract the idle power it measured itself, feed the net
figure (not the gross one) to the cost vectors, validate operating points by energy, and say
why when no meter fits."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from eebench.errors import ConfigError
from eebench.measure.energy import MeterPlaces
from eebench.results import Run
from eebench.suites.runner import RunOptions, run_suite
from tests.test_energy import rapl_tree
from tests.test_suites import TINY

IDLE_W, ACTIVE_W = 4.0, 30.0

SUITE = copy.deepcopy(TINY)
SUITE["backends"] = ["torch-cpu"]
SUITE["measurement"]["energy"] = {
    "windows": 3,
    "idle_windows": 3,
    # the reading itself costs the main thread ~0.1-0.7 ms of CPU (loaded machine); in a
    # 20 ms idle window that alone would read as up to +1 W of "idle" power at 30 W active
    "min_window_s": 0.1,
    "probe_s": 0.1,
}
SUITE["validation"] = {"samples": 10, "repeats": 1}


class LiveRapl:
    """``energy_uj`` of package 0 as the kernel would report it, refreshed every millisecond.

    The active part follows the CPU time of the thread that runs the inferences (the main
    thread), not of the whole process: the meter's own sampling thread wakes during idle
    windows, and on a loaded machine its wake-ups alone would move the modelled idle power by
    more than the tolerance below."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tick = -1
        self.uj = 0
        self.clock_id = time.pthread_getcpuclockid(threading.main_thread().ident)
        self.t0 = time.perf_counter()
        self.cpu0 = time.clock_gettime(self.clock_id)

    def value(self) -> int:
        tick = time.perf_counter_ns() // 1_000_000
        if tick != self.tick:
            self.tick = tick
            wall = time.perf_counter() - self.t0
            cpu = time.clock_gettime(self.clock_id) - self.cpu0
            self.uj = 1_000_000 + int((IDLE_W * wall + ACTIVE_W * cpu) * 1e6)
        return self.uj


@pytest.fixture
def live_rapl(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path / "powercap")
    live = LiveRapl(root)
    original = Path.read_text
    counter = root / "intel-rapl:0" / "energy_uj"

    def read_text(self, *args, **kwargs):
        if self == counter:
            return f"{live.value()}\n"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    places = MeterPlaces(powercap=root, sysfs=tmp_path / "sys", root=tmp_path / "root")
    monkeypatch.setattr("eebench.measure.energy.choice.DEFAULT_PLACES", places)
    return live


def _run(tmp_path: Path, suite: dict, run_id: str) -> Run:
    path = tmp_path / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = run_suite(
        str(path),
        RunOptions(
            out_root=tmp_path / "results",
            cache_root=tmp_path / "cache",
            run_id=run_id,
            progress=False,
            report=False,
        ),
    )
    return Run.open(out)


def test_cpu_backend_energy_is_net_of_the_idle_power_and_feeds_the_cost_vectors(
    tmp_path, live_rapl
):
    run = _run(tmp_path, SUITE, "rapl")
    costs = run.table("stage_costs")
    energy = costs[costs["metric"].str.startswith(("energy_", "idle_power", "busy_power"))]
    assert set(energy["source"]) == {"measured:torch-cpu+rapl:package"}
    assert set(energy["device"]) == {"cpu"} and set(energy["source_kind"]) == {"measured"}
    wide = energy.pivot_table(index=["part", "index"], columns="metric", values="value")
    lat = costs[costs["metric"] == "latency_median_ms"].set_index(["part", "index"])["value"]
    # every stage and head, with the meter's period (1 ms) and calls filling 100 ms windows
    assert len(wide) == 2 * 2
    # the detected period bounds the true 1 ms from above (tight unless the poller was starved)
    period = wide["energy_update_period_ms"]
    assert ((period >= 0.99) & (period <= 3.0)).all(), period
    np.testing.assert_allclose(wide["energy_window_s"], np.maximum(0.1, 10 * period / 1e3))
    assert (wide["energy_calls_per_window"] >= 1).all() and (wide["energy_windows"] == 3).all()
    # idle power measured in this run; gross includes it, net does not
    np.testing.assert_allclose(wide["idle_power_w"], IDLE_W, rtol=0.25)
    assert (wide["energy_gross_mj"] > wide["energy_net_mj"]).all()
    assert (wide["energy_net_ci_low_mj"] <= wide["energy_net_mj"]).all()
    assert (wide["energy_net_mj"] <= wide["energy_net_ci_high_mj"]).all()
    # net ~ active power x CPU time per call; CPU time <= wall latency on a shared machine
    ratio = wide["energy_net_mj"] / (ACTIVE_W * lat.reindex(wide.index))
    assert ((ratio > 0.1) & (ratio < 2.0)).all(), ratio
    # the cost vectors carry net energy: a cascade's final-only baseline runs its last member
    # alone (stage 1 and exit 1), so its expected energy is their net sum, not the gross one
    ops = run.table("operating_points")
    final = ops[(ops["policy"] == "final-only") & ops["cost_source"].str.startswith("measured")]
    assert len(final) > 0
    last = wide.loc[[("stage", 1), ("exit", 1)]]
    np.testing.assert_allclose(final["expected_energy_mj"], last["energy_net_mj"].sum())
    # true early-exit runs validated by energy against the parts' prediction
    val = run.table("validation")
    assert len(val) > 0 and (val["energy_source"] == "measured:torch-cpu+rapl:package").all()
    assert (val["predicted_energy_mj"] > 0).all() and np.isfinite(val["energy_ratio"]).all()
    assert (val["measured_energy_gross_mj"] > val["measured_energy_mj"]).all()
    # every energy column is in the data dictionary
    readme = (Path(__file__).resolve().parents[1] / "results" / "README.md").read_text()
    for column in [c for c in val.columns if "energy" in c]:
        assert f"| {column} |" in readme, column
    for metric in wide.columns:
        if "_ci_" in metric:  # documented as `<metric>` with `*_ci_low_<unit>` / `*_ci_high_...`
            base = metric.split("_ci_")[0]
            assert f"`{base}_" in readme and "`*_ci_low_" in readme, metric
        else:
            assert f"`{metric}`" in readme, metric
    # the report shows net with gross beside it, and the meter and device
    from eebench.report import build_report

    md = build_report([run.path], tmp_path / "report").markdown.read_text()
    section = md[md.index("Energy per stage and exit head") :]
    assert "net energy [mJ/sample] (95% CI)" in section and "gross energy [mJ/sample]" in section
    assert "measured:torch-cpu+rapl:package" in section and "| cpu |" in section
    net = wide.loc[("stage", 0), "energy_net_mj"]
    assert f"{net:.3g} [" in section
    assert "Energy validation: true early-exit runs" in md


def test_without_a_meter_for_the_device_energy_is_recorded_unavailable(tmp_path, monkeypatch):
    places = MeterPlaces(powercap=tmp_path / "none", sysfs=tmp_path / "sys", root=tmp_path)
    monkeypatch.setattr("eebench.measure.energy.choice.DEFAULT_PLACES", places)
    suite = copy.deepcopy(SUITE)
    suite["validation"] = {"enabled": False}
    run = _run(tmp_path, suite, "none")
    costs = run.table("stage_costs")
    assert not costs["metric"].str.startswith("energy_").any()
    skipped = run.table("skipped")
    row = skipped[skipped["step"] == "energy"]
    assert len(row) == 1 and row["target"].iloc[0] == "torch-cpu"
    assert "no RAPL package zones" in row["reason"].iloc[0]


def test_a_meter_of_another_device_is_refused(tmp_path):
    suite = copy.deepcopy(SUITE)
    suite["measurement"]["energy"] = {"meter": "nvml"}
    with pytest.raises(ConfigError, match="set meter: rapl"):
        _run(tmp_path, suite, "mismatch")


def test_energy_options_in_the_suite_file():
    from eebench.suites.schema import parse_suite

    base = {"name": "s", "models": [{"name": "big-little"}]}
    off = parse_suite({**base, "measurement": {"energy": False}}).measurement.energy
    assert off.enabled is False and off.meter == "auto"
    on = parse_suite({**base, "measurement": {"energy": {"meter": "nvml", "windows": 8}}})
    assert on.measurement.energy.meter == "nvml" and on.measurement.energy.windows == 8
    with pytest.raises(ConfigError, match="measurement.energy.meter.*did you mean 'rapl'"):
        parse_suite({**base, "measurement": {"energy": {"meter": "rap"}}}, source="s.yaml")
    with pytest.raises(ConfigError, match="needs 'profile'"):
        parse_suite({**base, "measurement": {"energy": {"meter": "estimated"}}})
    with pytest.raises(ConfigError, match="measurement.energy.windows"):
        parse_suite({**base, "measurement": {"energy": {"windows": 1}}})


def test_a_profile_without_power_figures_cannot_estimate(tmp_path):
    suite = copy.deepcopy(SUITE)
    suite["measurement"]["energy"] = {"profile": "amd-epyc-1t"}
    with pytest.raises(ConfigError, match="amd-epyc-1t' cannot estimate energy.*power.active"):
        _run(tmp_path, suite, "no-power")


def test_without_the_device_meter_a_named_profile_estimates_and_says_so(tmp_path, monkeypatch):
    places = MeterPlaces(powercap=tmp_path / "none", sysfs=tmp_path / "sys", root=tmp_path)
    monkeypatch.setattr("eebench.measure.energy.choice.DEFAULT_PLACES", places)
    suite = copy.deepcopy(SUITE)
    suite["measurement"]["energy"].update(profile="jetson-orin-nano-8gb-15w")
    suite["validation"] = {"enabled": False}
    run = _run(tmp_path, suite, "estimated")
    costs = run.table("stage_costs")
    net = costs[costs["metric"] == "energy_net_mj"]
    assert len(net) == 4 and set(net["source_kind"]) == {"estimated"}
    assert set(net["source"]) == {"estimated:jetson-orin-nano-8gb-15w+time:measured:torch-cpu"}
    # power x time with the profile's figures
    from eebench.profiles import load_profile

    power = load_profile("jetson-orin-nano-8gb-15w").power
    wide = costs[costs["source"] == net["source"].iloc[0]].pivot_table(
        index=["part", "index"], columns="metric", values="value"
    )
    assert power.idle is None  # the profile names only the mode's power budget
    np.testing.assert_allclose(wide["idle_power_w"], 0.0)
    np.testing.assert_allclose(wide["busy_power_w"], power.active.base, rtol=1e-6)
    np.testing.assert_allclose(wide["energy_net_mj"], wide["energy_gross_mj"])
    # an estimate never passes for a measurement: the measured cost vectors get no energy
    ops = run.table("operating_points")
    measured = ops[ops["cost_source"].str.startswith("measured")]
    assert measured["expected_energy_mj"].isna().all()

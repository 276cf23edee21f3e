"""Timing statistics and stopping rules under a seeded fake clock; measurement round trips;
per-part timing and cold start on a real backend; memory tracking."""

import json
import math
import time

import numpy as np
import pytest
import torch

from eebench.backends import get_backend
from eebench.errors import ConfigError
from eebench.measure import (
    HostTimer,
    LatencyStats,
    Measurement,
    MeasurementSpec,
    PartMeasurements,
    TimingConfig,
    collect_samples,
    measure_cold_start,
    measure_parts,
    measurements_frame,
    predict_latency,
    time_callable,
    track_memory,
)
from eebench.measure.parts import INJECT_DELAY_ENV, InjectedDelay
from eebench.models import create_model


class FakeClock:
    """A clock that only moves when the workload says so (plus a fixed cost per reading)."""

    def __init__(self, read_cost_ns: int = 0) -> None:
        self.now = 0
        self.read_cost_ns = read_cost_ns
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        self.now += self.read_cost_ns
        return self.now

    def advance(self, ns: int) -> None:
        self.now += int(ns)


def seeded_workload(clock: FakeClock, seed: int = 0, mean_ns: float = 1e6, cv: float = 0.05):
    rng = np.random.default_rng(seed)
    drawn: list[int] = []

    def fn() -> None:
        d = int(rng.normal(mean_ns, cv * mean_ns))
        drawn.append(d)
        clock.advance(d)

    return fn, drawn


SPEC = MeasurementSpec(
    model="m", part="stage", index=0, backend="torch-cpu", device="cpu", threads=1, batch_size=1
)


def test_samples_are_exactly_the_workload_durations_after_warmup():
    clock = FakeClock()
    fn, drawn = seeded_workload(clock)
    run = collect_samples(
        fn, TimingConfig(warmup=3, min_runs=10, min_time_s=0.0), HostTimer(clock), clock
    )
    assert run.warmup_ns == tuple(drawn[:3])
    assert run.samples_ns == tuple(drawn[3:])
    assert len(run.samples_ns) == 10
    assert run.stopped_by == "min-runs-and-time"


def test_stops_only_when_both_min_count_and_min_time_are_reached():
    clock = FakeClock()
    fn, _ = seeded_workload(clock, mean_ns=1e6, cv=0.0)  # exactly 1 ms per call
    run = collect_samples(
        fn, TimingConfig(warmup=0, min_runs=5, min_time_s=0.05), HostTimer(clock), clock
    )
    assert len(run.samples_ns) == 50  # time, not count, decided
    clock2 = FakeClock()
    fn2, _ = seeded_workload(clock2, mean_ns=1e7, cv=0.0)  # 10 ms per call
    run2 = collect_samples(
        fn2, TimingConfig(warmup=0, min_runs=30, min_time_s=0.05), HostTimer(clock2), clock2
    )
    assert len(run2.samples_ns) == 30  # count, not time, decided


def test_max_time_caps_a_slow_workload():
    clock = FakeClock()
    fn, _ = seeded_workload(clock, mean_ns=0.4e9, cv=0.0)
    cfg = TimingConfig(warmup=0, min_runs=100, min_time_s=0.0, max_time_s=1.0)
    run = collect_samples(fn, cfg, HostTimer(clock), clock)
    assert run.stopped_by == "max-time"
    assert len(run.samples_ns) == 3


def test_statistics_match_numpy_on_seeded_samples():
    clock = FakeClock()
    fn, _ = seeded_workload(clock, seed=7, cv=0.2)
    m = time_callable(
        fn, SPEC, TimingConfig(warmup=2, min_runs=200, min_time_s=0.0), HostTimer(clock), clock
    )
    a = np.asarray(m.samples_ns, dtype=float)
    s = m.stats
    assert s.n == 200
    assert s.median == pytest.approx(np.median(a))
    assert s.mean == pytest.approx(a.mean())
    assert s.p90 == pytest.approx(np.percentile(a, 90)) and s.p90_supported
    # 200 samples cannot support p99 (LoadGen's rule needs 662): NaN and a flag, never a number
    assert math.isnan(s.p99) and not s.p99_supported
    assert s.iqr == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25))
    assert s.cv == pytest.approx(a.std(ddof=1) / a.mean())
    assert 0.15 < s.cv < 0.25
    # order-statistic interval of the median: 0-based ranks 85 and 114 for n = 200 at 95%
    ordered = np.sort(a)
    assert (s.median_ci_lo, s.median_ci_hi) == (ordered[85], ordered[114])
    assert s.mean_ci_lo < s.mean < s.mean_ci_hi
    assert s.p90_ci_lo <= s.p90 <= s.p90_ci_hi
    row = m.to_row()
    assert row["n"] == 200 and not row["p99_supported"] and math.isnan(row["p99_us"])
    assert row["median_ci_lo_us"] == pytest.approx(ordered[85] / 1e3)


def test_noisy_flag_follows_the_median_interval():
    rng = np.random.default_rng(1)
    quiet = Measurement(SPEC, tuple(int(v) for v in rng.normal(1e5, 2e3, 100)), TimingConfig())
    loud = Measurement(SPEC, tuple(int(v) for v in rng.lognormal(11.5, 0.5, 100)), TimingConfig())
    few = Measurement(SPEC, (100, 101, 99, 100, 100), TimingConfig())
    assert quiet.stats.median_rel_half_width < 0.02 and not quiet.noisy
    assert loud.stats.median_rel_half_width > 0.02 and loud.noisy
    assert few.noisy and math.isnan(few.stats.median_ci_lo)  # 5 samples: no 95% interval
    # the target is configurable
    assert not Measurement(SPEC, loud.samples_ns, TimingConfig(rel_ci_target=0.5)).noisy


def test_adaptive_stopping_ends_when_the_median_is_known_to_2_percent():
    clock = FakeClock()
    fn, _ = seeded_workload(clock, seed=3, mean_ns=1e6, cv=0.05)
    cfg = TimingConfig(warmup=0, min_runs=20, min_time_s=0.0, max_time_s=60.0, adaptive=True)
    run = collect_samples(fn, cfg, HostTimer(clock), clock)
    assert run.stopped_by == "ci-target"
    # normal theory: half-width 1.96 * sqrt(pi/2) * 0.05 / sqrt(n) <= 0.02 from n ~ 38;
    # the rule checks at 20, 30, 40, ... so it stops near 40
    assert 30 <= len(run.samples_ns) <= 60
    m = Measurement(SPEC, run.samples_ns, cfg, stopped_by=run.stopped_by)
    assert not m.noisy and m.stop_reason == "ci-target"


def test_adaptive_stopping_gives_up_at_max_time_and_flags_noise():
    clock = FakeClock()
    fn, _ = seeded_workload(clock, seed=4, mean_ns=1e6, cv=0.9)  # wildly noisy
    cfg = TimingConfig(warmup=0, min_runs=10, min_time_s=0.0, max_time_s=0.1, adaptive=True)
    run = collect_samples(fn, cfg, HostTimer(clock), clock)
    assert run.stopped_by == "max-time"
    m = Measurement(SPEC, run.samples_ns, cfg, stopped_by=run.stopped_by)
    assert m.noisy and m.stats.median_rel_half_width > 0.02
    # without adaptive stopping the same workload stops at the minimum
    clock2 = FakeClock()
    fn2, _ = seeded_workload(clock2, seed=4, mean_ns=1e6, cv=0.9)
    fixed = TimingConfig(warmup=0, min_runs=10, min_time_s=0.0, max_time_s=0.1)
    run2 = collect_samples(fn2, fixed, HostTimer(clock2), clock2)
    assert run2.stopped_by == "min-runs-and-time" and len(run2.samples_ns) == 10


def test_known_small_sample_statistics():
    s = LatencyStats.from_samples([1, 2, 3, 4])
    assert (s.median, s.mean, s.p25, s.p75, s.iqr) == (2.5, 2.5, 1.75, 3.25, 1.5)
    with pytest.raises(ValueError, match="empty"):
        LatencyStats.from_samples([])


def test_measurement_round_trips_through_json_and_gives_tidy_rows():
    spec = MeasurementSpec(
        model="cascade",
        part="exit",
        index=2,
        backend="onnxruntime",
        device="cpu",
        threads=2,
        batch_size=4,
        provider="CPUExecutionProvider",
        interop_threads=1,
        input_shape=(1, 8, 8),
        extra={"graph_optimization_level": "all"},
    )
    m = Measurement(
        spec, (1000, 1200, 1100), TimingConfig(min_runs=3), (5000,), "min-runs-and-time"
    )
    back = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m
    assert back.stats == m.stats
    row = m.to_row()
    assert row["source"] == "measured:onnxruntime"
    assert row["threads"] == 2 and row["input_shape"] == "1x8x8"
    assert row["median_us"] == pytest.approx(1.1)
    frame = measurements_frame([m, back], samples=True)
    assert len(frame) == 6 and set(frame["latency_ns"]) == {1000, 1100, 1200}


def test_invalid_timing_config_names_the_field():
    with pytest.raises(ConfigError, match="TimingConfig: max_time_s"):
        TimingConfig(min_time_s=2.0, max_time_s=1.0)


def test_predict_latency_sums_stages_and_heads_up_to_the_exit():
    pred = predict_latency([0, 2, 1], stage_ns=np.array([10, 20, 30]), head_ns=np.array([1, 2, 3]))
    assert pred.tolist() == [11, 66, 33]
    with pytest.raises(ValueError, match="exit indices"):
        predict_latency([3], np.ones(3), np.ones(3))


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime"])
def test_measure_parts_times_every_stage_and_head_with_its_description(backend, tmp_path):
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4)
    opts = {"cache_dir": tmp_path} if backend == "onnxruntime" else {}
    prepared, cold = measure_cold_start(
        get_backend(backend), model, batch_size=2, threads=1, **opts
    )
    assert cold.prepare_ns > 0 and cold.first_call_ns > 0
    cfg = TimingConfig(warmup=1, min_runs=3, min_time_s=0.0)
    parts = measure_parts(prepared, batch_size=2, config=cfg)
    assert [(m.spec.part, m.spec.index) for m in parts.all] == [
        ("stage", 0),
        ("stage", 1),
        ("exit", 0),
        ("exit", 1),
    ]
    for m in parts.all:
        assert m.spec.backend == backend and m.spec.threads == 1 and m.spec.batch_size == 2
        assert m.spec.source == f"measured:{backend}"
        assert len(m.samples_ns) >= 3 and min(m.samples_ns) > 0
    assert parts.predict([1]).item() == pytest.approx(parts.cumulative_ns()[1])
    assert PartMeasurements.from_dict(json.loads(json.dumps(parts.to_dict()))) == parts


def test_pipeline_context_times_each_part_inside_whole_passes():
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=3, width=4)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    cfg = TimingConfig(warmup=2, min_runs=4, min_time_s=0.0)
    parts = measure_parts(prepared, batch_size=1, config=cfg, context="pipeline")
    assert {len(m.samples_ns) for m in parts.all} == {4}  # one sample per part per pass
    assert {len(m.warmup_ns) for m in parts.all} == {2}
    assert all(m.spec.extra["context"] == "pipeline" for m in parts.all)
    with pytest.raises(ValueError, match="context must be one of"):
        measure_parts(prepared, context="hot")


def test_injected_delay_stretches_each_call_by_the_factor():
    inner: list[int] = []

    def work() -> int:
        t0 = time.perf_counter_ns()
        while time.perf_counter_ns() - t0 < 200_000:  # 0.2 ms of busy work
            pass
        inner.append(time.perf_counter_ns() - t0)
        return 7

    slowed = InjectedDelay("m", 0, 1.5).wrap(work)
    t0 = time.perf_counter_ns()
    assert slowed() == 7
    total = time.perf_counter_ns() - t0
    assert total >= 1.5 * inner[0]  # the wait is sized on the call's own duration


def test_injected_delay_hook_marks_the_slowed_stage_only(monkeypatch):
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=3, width=4)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    cfg = TimingConfig(warmup=0, min_runs=3, min_time_s=0.0)
    label = measure_parts(prepared, config=cfg).stages[0].spec.model
    monkeypatch.setenv(INJECT_DELAY_ENV, f"{label}:1:1.3")
    for context in ("interleaved", "isolated", "pipeline"):
        parts = measure_parts(prepared, config=cfg, context=context)
        marked = [
            (m.spec.part, m.spec.index) for m in parts.all if "injected_factor" in m.spec.extra
        ]
        assert marked == [("stage", 1)] and parts.stages[1].spec.extra["injected_factor"] == 1.3
    monkeypatch.setenv(INJECT_DELAY_ENV, "another-model:1:1.3")
    assert not any(
        "injected_factor" in m.spec.extra for m in measure_parts(prepared, config=cfg).all
    )
    monkeypatch.setenv(INJECT_DELAY_ENV, f"{label}:7:1.3")
    with pytest.raises(ConfigError, match="stage 7 does not exist"):
        measure_parts(prepared, config=cfg)
    for bad in ("sdn:1", "sdn:x:1.3", "sdn:1:0.5"):
        monkeypatch.setenv(INJECT_DELAY_ENV, bad)
        with pytest.raises(ConfigError, match=INJECT_DELAY_ENV):
            InjectedDelay.from_env()


def test_interleaved_context_spreads_every_part_over_the_whole_window():
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=3, width=4)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    clock = FakeClock(read_cost_ns=1000)  # every reading costs 1 us: each timed call "takes" 1 us
    cfg = TimingConfig(warmup=1, min_runs=5, min_time_s=0.005)
    parts = measure_parts(prepared, config=cfg, clock=clock)  # interleaved is the default
    assert all(m.spec.extra["context"] == "interleaved" for m in parts.all)
    for m in parts.all:
        assert len(m.warmup_ns) == 1 and m.stopped_by == "min-runs-and-time"
        # a burst is BURST_S / 1 us = 5000 calls, capped at 1000; one round costs a part
        # 1000 x 2 readings + 2 = 2.002 ms of its own time, so 5 ms take 3 rounds
        assert len(m.samples_ns) == 3 * 1000 and set(m.samples_ns) == {1000}
    # the speed probe is timed in the same rounds, recorded beside the parts, not among them
    probe = parts.probe
    assert probe is not None and (probe.spec.part, probe.spec.index) == ("probe", 0)
    assert len(probe.samples_ns) == 3000 and probe not in parts.all
    assert parts.with_probe == [*parts.all, probe]
    assert PartMeasurements.from_dict(json.loads(json.dumps(parts.to_dict()))) == parts
    assert measure_parts(prepared, config=cfg, clock=FakeClock(1000), probe=False).probe is None


def test_thread_count_is_applied_during_measurement_and_restored():
    torch.set_num_threads(2)
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    seen = []
    cfg = TimingConfig(warmup=0, min_runs=1, min_time_s=0.0)
    with prepared.activated():
        time_callable(lambda: seen.append(torch.get_num_threads()), SPEC, cfg)
    assert set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_track_memory_sees_a_large_allocation():
    import mmap

    with track_memory() as tracker:
        # a fresh anonymous mapping, every page touched: new resident memory whatever the
        # allocator already holds (a numpy block may reuse pages freed by earlier tests)
        block = mmap.mmap(-1, 64 * 1024 * 1024)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        block.close()
    usage = tracker.usage
    assert usage is not None
    if usage.peak_rss_scope == "region":  # the high-water mark was reset at the start
        assert usage.peak_rss_bytes >= usage.rss_before_bytes + 30_000_000
    else:
        assert usage.peak_rss_bytes >= usage.rss_before_bytes
    assert usage.peak_rss_source in ("VmHWM", "ru_maxrss")
    assert usage.cuda_peak_allocated_bytes is None


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"
)
def test_cuda_peak_allocated_memory_is_tracked():
    with track_memory(cuda_device=torch.device("cuda:0")) as tracker:
        x = torch.empty(10_000_000, device="cuda")
        del x
    assert tracker.usage.cuda_peak_allocated_bytes >= 40_000_000


def test_stage_cost_rows_carry_intervals_counts_and_flags():
    from eebench.suites.tables import measured_rows

    rng = np.random.default_rng(0)
    wide = Measurement(
        SPEC, tuple(int(v) for v in rng.lognormal(11, 0.3, 100)), TimingConfig(), (), "max-time"
    )
    rows, samples = measured_rows("m", [wide])
    by = rows.set_index("metric")
    ordered = np.sort(np.asarray(wide.samples_ns, float)) / 1e6
    # n = 100 at 95%: the 40th and 61st order statistics bound the median (textbook table)
    assert by.loc["latency_median_ci_low_ms", "value"] == pytest.approx(ordered[39])
    assert by.loc["latency_median_ci_high_ms", "value"] == pytest.approx(ordered[60])
    assert by.loc["repeats", "value"] == 100 and (rows["stop_reason"] == "max-time").all()
    assert by.loc["latency_median_ms", "flag"] == "noisy"  # lognormal sigma 0.3: ~±6%
    assert by.loc["latency_p90_ms", "flag"] == "" and by.loc["latency_p90_ms", "value"] > 0
    assert by.loc["latency_p99_ms", "flag"] == "insufficient samples"
    assert math.isnan(by.loc["latency_p99_ms", "value"])
    assert len(samples) == 100 and samples["ms"].tolist() == pytest.approx(
        [s / 1e6 for s in wide.samples_ns]
    )


def test_onnxruntime_speed_probe_runs_through_an_onnxruntime_session(tmp_path):
    import onnxruntime as ort

    from eebench.measure.probe import probe_operands
    from eebench.suites.tables import measured_rows

    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4)
    prepared = get_backend("onnxruntime").prepare(model, threads=2, cache_dir=tmp_path)
    probe = prepared.speed_probe(seed=3)
    # the product runs in its own session with the stages' options: threads, no spinning
    assert isinstance(probe.runner, ort.InferenceSession)
    options = probe.runner.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert probe.runner.get_providers() == ["CPUExecutionProvider"]
    a, b = probe_operands(3)
    assert np.asarray(probe.run()[0]) == pytest.approx(a @ b, rel=1e-4, abs=1e-3)
    assert probe.kind.startswith("onnxruntime MatMul 128x128")
    assert prepared.describe()["speed_probe"] == probe.kind
    # measured in the parts' rounds, the probe's measurement and its table rows say which ran
    cfg = TimingConfig(warmup=1, min_runs=3, min_time_s=0.0)
    parts = measure_parts(prepared, config=cfg)
    assert parts.probe.spec.backend == "onnxruntime"
    assert parts.probe.spec.extra["speed_probe"] == probe.kind
    assert all("speed_probe" not in m.spec.extra for m in parts.all)
    costs, _ = measured_rows("m", parts.with_probe)
    notes = costs.loc[costs["part"] == "probe", "note"]
    assert len(notes) and (notes == probe.kind).all()
    assert costs.loc[costs["part"] != "probe", "note"].isna().all()


def test_torch_cpu_speed_probe_is_the_host_matmul_older_runs_timed():
    from eebench.measure.probe import HOST_TORCH_KIND

    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    probe = prepared.speed_probe()
    assert probe.kind == HOST_TORCH_KIND == prepared.describe()["speed_probe"]
    assert probe.runner == torch.device("cpu") and probe.run().shape == (128, 128)
    cfg = TimingConfig(warmup=0, min_runs=2, min_time_s=0.0)
    assert measure_parts(prepared, config=cfg).probe.spec.extra["speed_probe"] == HOST_TORCH_KIND


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"
)
def test_torch_cuda_speed_probe_runs_on_the_device_timed_like_the_parts():
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4)
    prepared = get_backend("torch-cuda").prepare(model, threads=1)
    probe = prepared.speed_probe()
    assert probe.kind == f"torch.mm 128x128 float32 on {prepared.device}"
    assert probe.run().device.type == "cuda"
    cfg = TimingConfig(warmup=1, min_runs=3, min_time_s=0.0)
    parts = measure_parts(prepared, config=cfg)
    assert parts.probe.spec.extra["speed_probe"] == probe.kind
    assert parts.probe.spec.clock == parts.stages[0].spec.clock == "cuda-events"
    assert min(parts.probe.samples_ns) > 0


class ScriptedPrepared:
    """One stage and one head whose call durations are scripted on a fake clock: the stage
    takes 1 us for its first 1500 calls and 3 us after (its median moves in the middle of
    the measurement), the head cycles through 0.5, 0.501, ..., 1.5 us in a fixed shuffled
    order (its median is known to 2% from about 2400 samples: 0.98 / sqrt(n) <= 0.02)."""

    backend = "torch-cpu"
    device = "cpu"
    threads = 1
    model_name = "scripted"
    num_stages = 1
    input_shape = (1, 2, 2)

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stage_calls = 0
        self.exit_calls = 0

    def activated(self):
        from contextlib import nullcontext

        return nullcontext(self)

    def to_input(self, x):
        return x

    def stage_inputs(self, x):
        return [(x,), (x,)]

    def interval_timer(self, clock):
        return HostTimer(clock)

    def describe(self):
        return {"backend": self.backend, "device": self.device, "threads": self.threads}

    def run_stage(self, i, state):
        self.stage_calls += 1
        self.clock.advance(1000 if self.stage_calls <= 1500 else 3000)
        return state

    def run_exit(self, i, state):
        self.exit_calls += 1
        self.clock.advance(500 + (self.exit_calls * 389) % 1001)  # 389 and 1001 are coprime
        return state[0]


def test_a_part_stopped_by_its_interval_target_is_never_flagged_noisy():
    # interleaved rounds of 1000 timed calls per part: the stage meets 2% in round 1 (every
    # sample 1 us), the head only in round 3 (3000 samples), when the stage has 1497 samples
    # of 1 us and 1503 of 3 us: its median's interval spans 1..3 us. It must not end as
    # "stopped by ci-target" yet noisy: it is sampled on, and round 4 (2503 of 3 us) meets
    # the target again
    clock = FakeClock()
    prepared = ScriptedPrepared(clock)
    cfg = TimingConfig(warmup=0, min_runs=20, min_time_s=0.0, max_time_s=60.0, adaptive=True)
    parts = measure_parts(prepared, config=cfg, clock=clock, probe=False)
    stage, head = parts.stages[0], parts.exits[0]
    assert head.stopped_by == "ci-target" and not head.noisy
    assert stage.stopped_by == "ci-target" and not stage.noisy
    assert stage.stats.median == 3000 and stage.samples_ns.count(3000) == 2503
    assert len(stage.samples_ns) == len(head.samples_ns) == 4000
    for m in parts.all:
        assert m.stats.median_rel_half_width <= cfg.rel_ci_target


@pytest.mark.parametrize("context", ["interleaved", "isolated", "pipeline"])
def test_stopped_by_the_interval_target_and_noisy_never_go_together(context):
    clock = FakeClock()
    cfg = TimingConfig(warmup=0, min_runs=20, min_time_s=0.0, max_time_s=60.0, adaptive=True)
    parts = measure_parts(
        ScriptedPrepared(clock), config=cfg, clock=clock, probe=False, context=context
    )
    for m in parts.all:
        assert m.stopped_by in ("ci-target", "pass-ci-target")
        assert m.noisy == (m.stats.median_rel_half_width > cfg.rel_ci_target)
        assert (m.stopped_by == "ci-target") == (not m.noisy)
    if context == "pipeline":
        # the pass (1.5-2.5 us) is known to 2% long before the head alone (0.5-1.5 us) is
        assert parts.exits[0].noisy and parts.exits[0].stopped_by == "pass-ci-target"

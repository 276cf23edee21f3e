"""The estimator on hand-computed layers (read off the analytic cost table), its
measured-micro-benchmark path, the breakdown of every estimate, where its constants come
from, and the ``simulated:<profile>`` backend."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eebench.errors import ConfigError
from eebench.models import create_model
from eebench.models.base import MultiExitModel
from eebench.profiles import (
    DEFAULT_BANDWIDTH_EFFICIENCY,
    DEFAULT_EFFICIENCY,
    Estimator,
    HardwareProfile,
    estimate_layers,
    estimate_model,
    list_profiles,
    model_operators,
)
from eebench.profiles.estimator import ScatterTime, ThroughputCurve
from eebench.profiles.operators import Operator

SHEET = {"kind": "datasheet", "document": "made-up data sheet", "url": "https://example.org/sheet"}
BENCH = {"kind": "measured", "date": "2026-01-01", "tool": "test", "method": "by hand"}


def made_up_profile(**power) -> HardwareProfile:
    """Peak 10 GMAC/s on the CPU, 10 GB/s, 5 us per operator, 2 W active (unless overridden)."""
    return HardwareProfile.model_validate(
        {
            "name": "made-up",
            "identity": {"vendor": "Acme", "device": "Board", "power_mode": "default"},
            "compute": {"fp32": {"cpu": {"value": 10, "unit": "gmacs_per_s", "provenance": "s"}}},
            "memory": {"bandwidth": {"value": 10, "unit": "GB/s", "provenance": "s"}},
            "overhead": {"per_op": {"value": 5, "unit": "us", "provenance": "s"}},
            "power": power or {"active": {"value": 2, "unit": "W", "provenance": "s"}},
            "sources": {"s": SHEET},
        }
    )


class TinyNet(MultiExitModel):
    """One stage (a 3x3 conv, 3 -> 8 channels, no bias) and one head (flatten + linear 512 -> 4)."""

    family = "test"

    def __init__(self) -> None:
        super().__init__(num_classes=4, input_shape=(3, 8, 8))
        self.stages.append(nn.Conv2d(3, 8, 3, padding=1, bias=False))
        self.exits.append(nn.Sequential(nn.Flatten(), nn.Linear(512, 4)))


# hand-computed for TinyNet at batch 1, float32:
CONV_MACS = 3 * 3 * 3 * 8 * 8 * 8  # Cin * k * k * Cout * Hout * Wout = 13824
CONV_BYTES = 4 * (3 * 64 + 8 * 64 + 8 * 3 * 9)  # input + output + weights = 3680
LIN_MACS = 512 * 4  # 2048
LIN_BYTES = 4 * (512 + 4 + 512 * 4 + 4)  # input + output + weight + bias = 10272
RATE = 10e9 * DEFAULT_EFFICIENCY["cpu"]  # 5 GMAC/s achievable without micro-benchmarks
BW = 10e9 * DEFAULT_BANDWIDTH_EFFICIENCY  # 7 GB/s


def test_operators_carry_the_cost_tables_macs_and_bytes() -> None:
    layers = model_operators(TinyNet())
    conv = next(lc for lc in layers if lc.op == "conv")
    lin = next(lc for lc in layers if lc.op == "linear")
    assert (conv.part, conv.index, conv.macs, conv.bytes(), conv.kernel) == (
        "stage",
        0,
        CONV_MACS,
        CONV_BYTES,
        9,
    )
    assert (lin.part, lin.index, lin.macs, lin.bytes()) == ("exit", 0, LIN_MACS, LIN_BYTES)
    assert {lc.op for lc in layers} == {"conv", "linear", "view", "container"}


def test_hand_computed_conv_and_linear() -> None:
    assert DEFAULT_EFFICIENCY["cpu"] == 0.5 and DEFAULT_BANDWIDTH_EFFICIENCY == 0.7
    table = estimate_model(TinyNet(), made_up_profile())
    stage = table[table["part"] == "stage"].iloc[0]
    head = table[table["part"] == "exit"].iloc[0]
    # conv: compute-bound, 13824 / 5e9 = 2.7648 us (memory 3680 / 7e9 = 0.5257 us), + 5 us
    conv_s = CONV_MACS / RATE + 5e-6
    assert conv_s == pytest.approx(7.7648e-6)
    assert stage["latency_ms"] == pytest.approx(conv_s * 1e3, rel=1e-12)
    assert stage["compute_ms"] == pytest.approx(CONV_MACS / RATE * 1e3, rel=1e-12)
    assert stage["memory_ms"] == pytest.approx(CONV_BYTES / BW * 1e3, rel=1e-12)
    assert stage["energy_mj"] == pytest.approx(conv_s * 2.0 * 1e3, rel=1e-12)  # time x 2 W
    # linear: memory-bound, 10272 / 7e9 = 1.4674 us (compute 2048 / 5e9 = 0.4096 us), + 5 us;
    # flatten and the Sequential cost nothing without a measured module-call overhead
    lin_s = LIN_BYTES / BW + 5e-6
    assert lin_s == pytest.approx(6.46743e-6, rel=1e-5)
    assert head["latency_ms"] == pytest.approx(lin_s * 1e3, rel=1e-12)
    assert head["energy_mj"] == pytest.approx(lin_s * 2.0 * 1e3, rel=1e-12)
    # the breakdown adds up to the latency: the conv is compute-bound, the linear memory-bound
    assert (stage["compute_bound_ms"], stage["memory_bound_ms"], stage["overhead_ms"]) == (
        pytest.approx(CONV_MACS / RATE * 1e3, rel=1e-12),
        0.0,
        pytest.approx(5e-3, rel=1e-12),
    )
    assert (head["compute_bound_ms"], head["memory_bound_ms"], head["overhead_ms"]) == (
        0.0,
        pytest.approx(LIN_BYTES / BW * 1e3, rel=1e-12),
        pytest.approx(5e-3, rel=1e-12),
    )
    parts = table["compute_bound_ms"] + table["memory_bound_ms"] + table["overhead_ms"]
    assert parts.to_numpy() == pytest.approx(table["latency_ms"].to_numpy(), rel=1e-12)
    assert (stage["macs"], head["macs"], stage["layers"], head["layers"]) == (
        CONV_MACS,
        LIN_MACS,
        1,
        1,
    )
    assert set(table["source"]) == {"estimated:made-up"}


def test_energy_per_mac_and_per_byte() -> None:
    profile = made_up_profile(
        energy_per_mac={"value": 1, "unit": "pJ", "provenance": "s"},
        energy_per_byte={"value": 10, "unit": "pJ", "provenance": "s"},
    )
    stage = estimate_model(TinyNet(), profile).iloc[0]
    # 13824 MACs x 1 pJ + 3680 bytes x 10 pJ = 50624 pJ = 5.0624e-5 mJ
    assert stage["energy_mj"] == pytest.approx(50624e-12 * 1e3, rel=1e-12)


def test_no_power_figures_gives_nan_energy_and_says_why() -> None:
    profile = made_up_profile(unavailable="no meter on this board")
    table = estimate_model(TinyNet(), profile)
    assert table["energy_mj"].isna().all()
    assert "no energy: no meter on this board" in table["assumptions"].iat[0]
    assert math.isfinite(table["latency_ms"].sum())


def test_a_measured_shape_is_reproduced_exactly() -> None:
    data = made_up_profile().model_dump(by_alias=True, exclude_none=True)
    data["measured"] = {
        "provenance": "b",
        "engine": "cpu",
        "precision": "fp32",
        "per_op_overhead": {"value": 4, "unit": "us"},
        "conv": [
            {
                "in_channels": 3,
                "out_channels": 8,
                "height": 8,
                "width": 8,
                "kernel": 3,
                "time": {"value": 20, "unit": "us"},
                "achieved": {"value": CONV_MACS / 20e-6 / 1e9, "unit": "gmacs_per_s"},
            }
        ],
        "bandwidth": {"value": 9, "unit": "GB/s"},
    }
    data["sources"]["b"] = BENCH
    profile = HardwareProfile.model_validate(data)
    est = Estimator(profile)
    conv = next(lc for lc in model_operators(TinyNet()) if lc.op == "conv")
    # net 20 - 4 = 16 us of compute, plus the 4 us overhead back: the measured 20 us
    assert est.layer(conv).time_s == pytest.approx(20e-6, rel=1e-12)
    # the linear layer borrows the conv family's data and never runs faster than its fastest layer
    lin = next(lc for lc in model_operators(TinyNet()) if lc.op == "linear")
    assert est.compute_time(lin) >= 16e-6 * (1 - 1e-12)
    assert any("gemm layers use the" in a for a in est.assumptions)
    # a measured in-sequence slowdown scales every layer of the profile
    data["measured"]["sequence_slowdown"] = {"value": 1.5, "unit": "ratio"}
    slowed = Estimator(HardwareProfile.model_validate(data))
    assert slowed.layer(conv).time_s == pytest.approx(1.5 * 20e-6, rel=1e-12)


def test_throughput_curve_interpolates_in_log_space_and_clamps() -> None:
    curve = ThroughputCurve([(1e3, 1e9), (1e5, 4e9)])
    assert curve(1e4) == pytest.approx(2e9)  # geometric midpoint
    assert curve(10) == pytest.approx(1e9) and curve(1e9) == pytest.approx(4e9)


def test_scatter_time_scales_with_the_familys_exponent() -> None:
    # time proportional to MACs: beta = 1, a layer twice as large takes twice as long
    linear = ScatterTime([(1, 100, 1e-6), (1, 1000, 1e-5), (10, 100, 1e-5), (10, 1000, 1e-4)])
    assert linear.beta == pytest.approx(1.0)
    assert linear(1, 1000) == pytest.approx(1e-5)
    assert linear(2, 1000) == pytest.approx(2e-5, rel=1e-9)
    # time independent of size: beta = 0, any layer takes the measured time
    flat = ScatterTime([(4, 100, 1e-4), (64, 100, 1e-4), (4, 10000, 1e-4)])
    assert flat.beta == pytest.approx(0.0)
    assert flat(16, 1000) == pytest.approx(1e-4)


def test_unavailable_precision_or_engine_is_a_clear_error() -> None:
    profile = made_up_profile()
    with pytest.raises(ConfigError, match="no int8 compute figure.*fp32/cpu"):
        Estimator(profile, precision="int8")
    with pytest.raises(ConfigError, match="no fp32 figure for engine 'tensor_cores'"):
        Estimator(profile, engine="tensor_cores")
    with pytest.raises(ConfigError, match="unknown precision"):
        Estimator(profile, precision="fp8")


def test_batch_size_scales_the_work() -> None:
    one = estimate_model(TinyNet(), made_up_profile(), batch_size=1)
    four = estimate_model(TinyNet(), made_up_profile(), batch_size=4)
    assert list(four["macs"]) == [4 * m for m in one["macs"]]
    assert (four["latency_ms"] > one["latency_ms"]).all()


@pytest.mark.parametrize("name", sorted(list_profiles()))
def test_every_shipped_profile_estimates_a_model(name: str) -> None:
    table = estimate_model(create_model("cascade", input_shape=(3, 32, 32)), name)
    assert len(table) == 6 and (table["latency_ms"] > 0).all()
    assert set(table["source"]) == {f"estimated:{name}"}
    assert table["latency_ms"].map(math.isfinite).all()


def test_jetson_profiles_order_like_their_peaks() -> None:
    model = create_model("cascade", input_shape=(3, 32, 32))
    nano = estimate_model(model, "jetson-nano-5w")["latency_ms"].sum()
    nano10 = estimate_model(model, "jetson-nano-10w")["latency_ms"].sum()
    orin = estimate_model(model, "jetson-agx-orin-64gb-maxn")["latency_ms"].sum()
    assert nano > nano10 > orin


def test_fp16_uses_tensor_cores_and_half_the_bytes() -> None:
    model = create_model("cascade", input_shape=(3, 32, 32))
    fp16 = estimate_layers(model, "jetson-orin-nano-8gb-15w", precision="fp16")
    fp32 = estimate_layers(model, "jetson-orin-nano-8gb-15w")
    assert (fp16["bytes"] * 2 == fp32["bytes"]).all()
    table = estimate_model(model, "jetson-orin-nano-8gb-15w", precision="fp16")
    assert set(table["engine"]) == {"tensor_cores"}


def test_operator_macs_agree_with_the_cost_analysis() -> None:
    costs = pytest.importorskip("eebench.costs")
    for name in ("cascade", "sdn-resnet"):
        model = create_model(name, input_shape=(3, 32, 32))
        layers = model_operators(model)
        table = costs.analyze_costs(model)
        for i in range(model.num_stages):
            assert (
                sum(lc.macs for lc in layers if lc.part == "stage" and lc.index == i)
                == table.stage_macs[i]
            )
            assert (
                sum(lc.macs for lc in layers if lc.part == "exit" and lc.index == i)
                == table.head_macs[i]
            )


class Residual(nn.Module):
    """conv, then a residual addition and a functional ReLU, then a shared ReLU module twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.act(torch.relu(self.conv(x) + x)))


class ResidualNet(MultiExitModel):
    family = "test"

    def __init__(self) -> None:
        super().__init__(num_classes=2, input_shape=(4, 8, 8))
        self.stages.append(Residual())
        self.exits.append(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)))


def test_functional_ops_and_repeated_calls_are_operators() -> None:
    ops = [o for o in model_operators(ResidualNet()) if o.part == "stage"]
    assert sorted((o.name, o.op) for o in ops) == [
        ("fn:add", "elementwise"),
        ("fn:relu", "activation"),
        ("stages.0", "container"),  # the block's own module call
        ("stages.0.act", "activation"),
        ("stages.0.act", "activation"),
        ("stages.0.conv", "conv"),
    ]
    add = next(o for o in ops if o.name == "fn:add")
    # two 4x8x8 inputs in, one out, no weights
    assert (add.input_elements, add.output_elements, add.weight_elements) == (512, 256, 0)
    # the shared ReLU's traffic is split over its two calls: 256 in and 256 out each
    act = [o for o in ops if o.name.endswith("act")]
    assert [(o.input_elements, o.output_elements) for o in act] == [(256, 256), (256, 256)]
    # at batch 3, activations triple and weights do not
    conv1 = next(o for o in ops if o.op == "conv")
    conv3 = next(o for o in model_operators(ResidualNet(), 3) if o.op == "conv")
    assert conv3.macs == 3 * conv1.macs == 3 * (4 * 9 * 4 * 64)
    assert conv3.input_elements == 3 * 256 and conv3.weight_elements == conv1.weight_elements


def test_simulated_backend_times_with_the_estimate() -> None:
    backends = pytest.importorskip("eebench.backends")
    from eebench.measure.parts import measure_parts
    from eebench.measure.timing import TimingConfig

    model = create_model("cascade", input_shape=(3, 32, 32))
    backend = backends.get_backend("simulated:jetson-nano-10w")
    assert backend.available() == (True, "")
    prepared = backend.prepare(model, batch_size=1, threads=1)
    parts = measure_parts(prepared, config=TimingConfig(warmup=0, min_runs=2, min_time_s=0))
    expected = estimate_model(model, "jetson-nano-10w")
    stage_ms = expected[expected["part"] == "stage"]["latency_ms"].to_numpy()
    assert parts.stage_ns() / 1e6 == pytest.approx(stage_ms, abs=1e-6)  # whole nanoseconds
    assert prepared.describe()["source"] == "estimated:jetson-nano-10w"
    # a shrunk batch is priced at its own size
    x = prepared.to_input(torch.zeros(3, 3, 32, 32))
    timer = prepared.interval_timer()
    t3 = timer(lambda: prepared.run_stage(0, (x,)))
    t1 = timer(lambda: prepared.run_stage(0, (x[:1],)))
    assert t3 > t1 > 0
    assert "simulated:jetson-nano-10w" in backends.list_backends(expand_families=True)


def test_operator_bytes_follow_the_precision() -> None:
    lc = Operator("stage", 0, "x", "conv", 10, 100, 50, 25)
    assert lc.bytes(4) == 700 and lc.bytes(2) == 350 and lc.bytes(1) == 175


def test_profile_constants_are_used_and_labelled_with_their_source() -> None:
    data = made_up_profile().model_dump(by_alias=True, exclude_none=True)
    data["estimation"] = {
        "compute_efficiency": {"cpu": {"value": 0.2, "unit": "ratio", "provenance": "guess"}},
        "bandwidth_efficiency": {"value": 0.5, "unit": "ratio", "provenance": "s"},
    }
    data["sources"]["guess"] = {"kind": "assumption", "note": "nobody measured it"}
    est = Estimator(HardwareProfile.model_validate(data))
    conv = next(o for o in model_operators(TinyNet()) if o.op == "conv")
    # 10 GMAC/s x 0.2 = 2 GMAC/s: 13824 MACs take 6.912 us
    assert est.compute_time(conv) == pytest.approx(CONV_MACS / 2e9, rel=1e-12)
    text = "; ".join(est.assumptions)
    assert "compute = 0.2 x peak fp32/cpu" in text
    assert "estimation.compute_efficiency.cpu: unsourced assumption" in text
    assert "bandwidth = 0.5 x peak (profile estimation.bandwidth_efficiency, datasheet)" in text
    assert "per-op overhead 5 us (profile overhead.per_op, datasheet)" in text
    # without stated constants the built-in defaults are used and called unsourced
    bare = "; ".join(Estimator(made_up_profile()).assumptions)
    assert "compute = 0.5 x peak fp32/cpu, no micro-benchmarks (eebench default: unsourced" in bare


def test_jetson_estimates_say_what_dominates_and_that_it_is_assumed() -> None:
    table = estimate_model(create_model("cascade", input_shape=(3, 32, 32)), "jetson-nano-10w")
    total = table["latency_ms"].sum()
    assert (table["compute_bound_ms"] + table["memory_bound_ms"] + table["overhead_ms"]).sum() == (
        pytest.approx(total, rel=1e-9)
    )
    # the assumed 10 us is paid once per operator (views and module calls are free without a
    # measured module-call overhead): 0.01 ms x the operators of each part
    assert table["overhead_ms"].to_numpy() == pytest.approx(0.01 * table["layers"].to_numpy())
    text = table["assumptions"].iat[0]
    assert "per-op overhead 10 us (profile overhead.per_op: unsourced assumption)" in text
    assert "estimation.compute_efficiency.cuda_cores: unsourced assumption" in text


def test_measured_overhead_comes_from_the_chain_slope() -> None:
    data = made_up_profile().model_dump(by_alias=True, exclude_none=True)
    data["measured"] = {
        "provenance": "b",
        "engine": "cpu",
        "precision": "fp32",
        "per_op_overhead": {"value": 2, "unit": "us"},
        "overhead_chain": [
            {"ops": 1, "time": {"value": 5, "unit": "us"}},
            {"ops": 4, "time": {"value": 11, "unit": "us"}},
        ],
        "bandwidth": {"value": 9, "unit": "GB/s"},
        "gemm": [
            {
                "m": 1,
                "n": 100,
                "k": 100,
                "time": {"value": 10, "unit": "us"},
                "achieved": {"value": 1e4 / 10e-6 / 1e9, "unit": "gmacs_per_s"},
            }
        ],
    }
    data["sources"]["b"] = BENCH
    est = Estimator(HardwareProfile.model_validate(data))
    head = est.parts_table(model_operators(TinyNet()))
    head = head[head["part"] == "exit"].iloc[0]
    # one linear operator pays the 2 us slope (not the 5 us of a chain of one)
    assert head["overhead_ms"] == pytest.approx(2e-3, rel=1e-12)
    assert "per-op overhead 2 us (measured: slope of chains of 1, 4 operators)" in "; ".join(
        est.assumptions
    )

"""Hardware profiles: shipped files validate, bad files are refused with the file and field path,
submission, lookup, Jetson detection and the measuring path."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from eebench.cli import main
from eebench.errors import ConfigError
from eebench.profiles import (
    ProfileError,
    builtin_profiles_dir,
    community_profiles_dir,
    detect_jetson,
    list_profiles,
    load_profile,
    load_profile_file,
    slugify,
    submit_profile,
    validate_file,
)
from eebench.profiles.locate import load_named_file, profile_entries
from eebench.profiles.measure import build_profile, write_profile
from eebench.profiles.microbench import ConvShape, clock_named, run_microbenchmarks, statistic_s
from eebench.profiles.overhead import fit_chain
from eebench.profiles.validate import parse_profile

SHIPPED = sorted(builtin_profiles_dir().glob("*.yaml")) + sorted(
    community_profiles_dir().glob("*.yaml")
)
BUILTIN_JETSONS = [
    "jetson-nano-5w",
    "jetson-nano-10w",
    "jetson-xavier-nx-15w",
    "jetson-agx-xavier-maxn",
    "jetson-orin-nano-8gb-15w",
    "jetson-orin-nano-8gb-super-maxn",
    "jetson-agx-orin-64gb-maxn",
]


def good_profile() -> dict:
    """A small valid profile with micro-benchmarks, as plain YAML data."""
    return {
        "schema_version": 1,
        "name": "test-device",
        "identity": {
            "vendor": "Acme",
            "device": "Test board",
            "power_mode": "default",
            "memory": {"value": 4, "unit": "GB", "provenance": "sheet"},
        },
        "compute": {"fp32": {"cpu": {"value": 20, "unit": "gmacs_per_s", "provenance": "sheet"}}},
        "memory": {"bandwidth": {"value": 25.6, "unit": "GB/s", "provenance": "sheet"}},
        "power": {"active": {"value": 10, "unit": "W", "provenance": "sheet"}},
        "measured": {
            "provenance": "bench",
            "engine": "cpu",
            "precision": "fp32",
            "bandwidth": {"value": 12, "unit": "GB/s"},
            "per_op_overhead": {"value": 5, "unit": "us"},
            # 1 x 1000 x 1000 = 1e6 MACs in 100 us = 10 GMAC/s
            "gemm": [
                {
                    "m": 1,
                    "n": 1000,
                    "k": 1000,
                    "time": {"value": 100, "unit": "us"},
                    "achieved": {"value": 10, "unit": "gmacs_per_s"},
                },
            ],
        },
        "sources": {
            "sheet": {
                "kind": "datasheet",
                "document": "Test board data sheet",
                "document_number": "DS-1",
            },
            "bench": {
                "kind": "measured",
                "date": "2026-01-01",
                "tool": "eebench profile measure",
                "method": "median of module calls",
            },
        },
    }


def write(tmp_path: Path, data: dict, name: str = "test-device.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems(tmp_path: Path, data: dict) -> list[str]:
    path = write(tmp_path, data)
    return [str(i) for i in validate_file(path)]


# ------------------------------------------------------------------ shipped profiles
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_profile_validates(path: Path) -> None:
    assert validate_file(path) == []
    profile = load_named_file(path)  # the name inside matches the file name
    assert profile.name == path.stem
    assert load_profile(path.stem) == profile


def test_builtin_profiles_are_found_by_name() -> None:
    names = list_profiles()
    for name in BUILTIN_JETSONS:
        assert name in names
    assert any(load_profile(n).measured is not None for n in names), "a measured host profile ships"


def test_every_number_in_shipped_profiles_has_a_resolvable_provenance() -> None:
    for entry in profile_entries():
        p = load_profile(entry.name)
        for path, _q, prov in p.quantities():
            assert prov is not None, f"{entry.name}: {path}"
            assert p.resolve(prov).kind in ("datasheet", "measured", "derived", "assumption")


def test_good_fixture_is_valid(tmp_path: Path) -> None:
    assert problems(tmp_path, good_profile()) == []


# ------------------------------------------------------------------ refusals
def test_missing_provenance_is_refused_with_file_and_field(tmp_path: Path) -> None:
    data = good_profile()
    del data["memory"]["bandwidth"]["provenance"]
    out = problems(tmp_path, data)
    assert len(out) == 1
    assert out[0].startswith(str(tmp_path / "test-device.yaml") + ": memory.bandwidth.provenance: ")
    assert "missing provenance" in out[0]


def test_negative_bandwidth_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwidth"]["value"] = -25.6
    assert problems(tmp_path, data) == [
        f"{tmp_path / 'test-device.yaml'}: memory.bandwidth.value: must be > 0, got -25.6"
    ]


def test_zero_peak_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["compute"]["fp32"]["cpu"]["value"] = 0
    assert any("compute.fp32.cpu.value: must be > 0, got 0" in p for p in problems(tmp_path, data))


def test_unknown_unit_is_refused_with_suggestion(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwidth"]["unit"] = "GB/sec"
    (out,) = problems(tmp_path, data)
    assert (
        "memory.bandwidth.unit: unknown unit 'GB/sec' for a bandwidth (did you mean 'GB/s'?)" in out
    )


def test_unit_of_the_wrong_dimension_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["compute"]["fp32"]["cpu"]["unit"] = "GB/s"
    (out,) = problems(tmp_path, data)
    assert "compute.fp32.cpu.unit: unknown unit 'GB/s' for a compute rate" in out


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_are_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, good_profile())
    path.write_text(path.read_text().replace("value: 25.6", f"value: {text}"))
    (out,) = [str(i) for i in validate_file(path)]
    assert "memory.bandwidth.value: must be a finite number" in out


def test_achieved_above_peak_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["compute"]["fp32"]["cpu"]["value"] = 5  # below the 10 GMAC/s achieved by the GEMM
    (out,) = problems(tmp_path, data)
    assert (
        "measured.gemm[0].achieved: achieved 10 GMAC/s is above the peak compute.fp32.cpu = 5"
        in out
    )


def test_measured_bandwidth_above_peak_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["measured"]["bandwidth"]["value"] = 30
    (out,) = problems(tmp_path, data)
    assert (
        "measured.bandwidth: achieved 30 GB/s is above the peak memory.bandwidth = 25.6 GB/s" in out
    )


def test_achieved_inconsistent_with_macs_and_time_is_refused(tmp_path: Path) -> None:
    data = good_profile()
    data["measured"]["gemm"][0]["time"]["value"] = 200
    (out,) = problems(tmp_path, data)
    assert "does not match MACs / time" in out


def test_unknown_key_is_refused_with_nearest_valid_key(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwith"] = data["memory"].pop("bandwidth")
    (out,) = problems(tmp_path, data)
    assert "memory.bandwith: unknown key 'bandwith' (did you mean 'bandwidth'?)" in out


def test_unknown_key_inside_a_list_item_is_located(tmp_path: Path) -> None:
    data = good_profile()
    data["measured"]["gemm"][0]["kk"] = 3
    (out,) = problems(tmp_path, data)
    assert "measured.gemm[0].kk: unknown key 'kk' (did you mean 'k'?)" in out


def test_unknown_source_reference_suggests_the_nearest(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwidth"]["provenance"] = "sheeet"
    (out,) = problems(tmp_path, data)
    assert "memory.bandwidth.provenance: unknown source 'sheeet' (did you mean 'sheet'?)" in out


def test_datasheet_source_needs_a_reference(tmp_path: Path) -> None:
    data = good_profile()
    del data["sources"]["sheet"]["document_number"]
    (out,) = problems(tmp_path, data)
    assert "sources.sheet: a datasheet source needs 'document'" in out


def test_uncertain_value_needs_a_note(tmp_path: Path) -> None:
    data = good_profile()
    data["power"]["active"]["uncertain"] = True
    (out,) = problems(tmp_path, data)
    assert "power.active: an uncertain value needs a 'note'" in out


def test_micro_benchmarks_must_be_measured(tmp_path: Path) -> None:
    data = good_profile()
    data["measured"]["provenance"] = "sheet"
    assert any("micro-benchmarks must have kind 'measured'" in p for p in problems(tmp_path, data))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = good_profile()
    del data["memory"]["bandwidth"]["provenance"]
    data["power"]["active"]["value"] = -1
    data["identity"]["memory"]["unit"] = "gigabytes"
    out = problems(tmp_path, data)
    assert len(out) == 2  # schema errors first; provenance is checked once the schema passes
    assert {o.split(": ")[1] for o in out} == {"power.active.value", "identity.memory.unit"}


def test_yaml_errors_give_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nidentity: [unclosed\n")
    (out,) = validate_file(path)
    assert "not valid YAML: line" in str(out)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, good_profile())
    path.write_text(path.read_text() + "name: again\n")
    (out,) = validate_file(path)
    assert "duplicate key 'name'" in str(out)


def test_load_profile_file_raises_with_every_issue(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwidth"]["value"] = -1
    with pytest.raises(ProfileError, match=r"memory\.bandwidth\.value: must be > 0") as info:
        load_profile_file(write(tmp_path, data))
    assert isinstance(info.value, ConfigError)
    assert len(info.value.issues) == 1


def test_unknown_profile_name_suggests_the_nearest() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown hardware profile 'jetson-nano-10'.*Did you mean 'jetson-nano-10w'",
    ):
        load_profile("jetson-nano-10")


# ------------------------------------------------------------------ CLI
def test_cli_validate_prints_one_line_per_problem_and_fails(tmp_path: Path, capsys) -> None:
    good = write(tmp_path, good_profile(), "good.yaml")
    bad_data = good_profile()
    bad_data["memory"]["bandwidth"]["value"] = -1
    bad_data["measured"]["gemm"][0]["kk"] = 1
    bad = write(tmp_path, bad_data, "bad.yaml")
    assert main(["profile", "validate", str(good)]) == 0
    capsys.readouterr()
    assert main(["profile", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == f"{good}: ok"
    assert len(out) == 3 and all(line.startswith(f"{bad}: ") for line in out[1:])


def test_cli_show_and_list(capsys) -> None:
    assert main(["profile", "show", "jetson-orin-nano-8gb-15w"]) == 0
    shown = capsys.readouterr().out
    assert "memory.bandwidth = 68 GB/s: datasheet" in shown and "DS-11105-001" in shown
    assert main(["list", "profiles"]) == 0
    listed = capsys.readouterr().out
    for name in BUILTIN_JETSONS:
        assert name in listed


# ------------------------------------------------------------------ submission
def test_slugify() -> None:
    assert slugify("Jetson Orin Nano (Super) 25W") == "jetson-orin-nano-super-25w"
    assert slugify("  Ünïcode__Board ") == "unicode-board"


def test_submit_normalises_name_writes_checksum_and_refuses_overwrite(tmp_path: Path) -> None:
    data = good_profile()
    data["name"] = "My Test Board (Lab 3)"
    src = tmp_path / "mine.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    community = tmp_path / "community"

    sub = submit_profile(src, community_dir=community)
    assert sub.name == "my-test-board-lab-3"
    assert sub.path == community / "my-test-board-lab-3.yaml"
    assert yaml.safe_load(sub.path.read_text())["name"] == "my-test-board-lab-3"
    digest = hashlib.sha256(sub.path.read_bytes()).hexdigest()
    assert sub.checksum == digest
    assert sub.checksum_file.read_text() == f"{digest}  my-test-board-lab-3.yaml\n"
    assert validate_file(sub.path) == []
    text = sub.pull_request_text(repo_root=tmp_path)
    assert (
        "git add community/my-test-board-lab-3.yaml community/my-test-board-lab-3.yaml.sha256"
        in text
    )
    assert digest in text

    with pytest.raises(ConfigError, match="already exists.*refusing to overwrite"):
        submit_profile(src, community_dir=community)


def test_submit_refuses_the_name_of_a_builtin_profile(tmp_path: Path) -> None:
    data = good_profile()
    data["name"] = "Jetson Nano 10W"
    src = write(tmp_path, data, "nano.yaml")
    with pytest.raises(ConfigError, match="'jetson-nano-10w' already exists"):
        submit_profile(src, community_dir=tmp_path / "community")
    assert not (tmp_path / "community").exists()


def test_submit_refuses_an_invalid_profile(tmp_path: Path) -> None:
    data = good_profile()
    data["memory"]["bandwidth"]["value"] = -3
    with pytest.raises(ProfileError, match="must be > 0, got -3"):
        submit_profile(write(tmp_path, data), community_dir=tmp_path / "community")


def test_edited_submission_fails_its_checksum(tmp_path: Path) -> None:
    sub = submit_profile(write(tmp_path, good_profile()), community_dir=tmp_path / "community")
    sub.path.write_text(sub.path.read_text().replace("value: 25.6", "value: 99"))
    (out,) = validate_file(sub.path)
    assert "does not match test-device.yaml.sha256" in str(out)


# ------------------------------------------------------------------ Jetson detection
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("NVIDIA Jetson Nano Developer Kit", "jetson-nano-10w"),
        ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx-15w"),
        ("Jetson-AGX", "jetson-agx-xavier-maxn"),
        ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin-64gb-maxn"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano-8gb-15w"),
        ("NVIDIA Jetson TX2 Developer Kit", None),
    ],
)
def test_detect_jetson_from_the_device_tree(
    tmp_path: Path, model: str, expected: str | None
) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    assert detect_jetson(tmp_path) == expected
    if expected is not None:
        assert expected in list_profiles()


def test_detect_jetson_from_the_l4t_release_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n"
    )
    assert detect_jetson(tmp_path) == "jetson-nano-10w"


def test_not_a_jetson(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B")
    assert detect_jetson(tmp_path) is None
    assert detect_jetson(tmp_path / "empty") is None


# ------------------------------------------------------------------ measuring
def test_statistic_of_pooled_samples() -> None:
    assert statistic_s([300, 100, 200, 900], "median") == pytest.approx(250e-9)
    assert statistic_s([300, 100, 200, 900], "min") == pytest.approx(100e-9)
    with pytest.raises(ConfigError, match="unknown statistic 'mean'"):
        statistic_s([1], "mean")
    # a thread clock that did not advance reads 0 ns: such samples are not the minimum
    assert statistic_s([0, 300, 100], "min") == pytest.approx(100e-9)
    with pytest.raises(ConfigError, match="clock did not advance"):
        statistic_s([0, 0], "min")


def test_chain_fit_separates_per_operator_cost_from_the_fixed_cost() -> None:
    # 3 us to call the chain + 2 us per operator, exactly: the fit recovers both
    fit = fit_chain([(k, 3e-6 + 2e-6 * k) for k in (1, 2, 4, 8, 16)])
    assert fit.slope_s == pytest.approx(2e-6, rel=1e-9)
    assert fit.intercept_s == pytest.approx(3e-6, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    # by hand, (1, 10), (3, 14), (5, 24): mean x 3, mean y 16, slope = (-2*-6 + 2*8) / 8 = 3.5
    noisy = fit_chain([(1, 10.0), (3, 14.0), (5, 24.0)])
    assert (noisy.slope_s, noisy.intercept_s) == pytest.approx((3.5, 5.5))
    with pytest.raises(ValueError, match="two different chain lengths"):
        fit_chain([(4, 1.0), (4, 2.0)])


def test_thread_clock_refuses_more_than_one_thread() -> None:
    with pytest.raises(ConfigError, match="thread clock"):
        clock_named("thread", threads=2)


def test_measured_profile_validates_and_is_labelled(tmp_path: Path) -> None:
    results = run_microbenchmarks(
        "torch-cpu",
        threads=1,
        min_time_s=0.002,
        progress=False,
        gemm_shapes=((1, 64, 32),),
        conv_shapes=(ConvShape(3, 8, 8), ConvShape(8, 8, 8, groups=8)),
        op_shapes=((8, 8),),
        bandwidth_bytes=2**20,
        rounds=2,
        chain_lengths=(1, 2, 4, 8),
    )
    data = build_profile(
        "unit-host",
        results,
        "torch-cpu",
        "eebench profile measure --name unit-host",
        "2026-01-01T00:00:00+00:00",
        {"unavailable": "no meter in tests"},
    )
    profile, issues = parse_profile(copy.deepcopy(data), "<test>")
    assert issues == [] and profile is not None
    src = profile.resolve(profile.measured.provenance)
    assert (src.kind, src.backend, src.threads, src.tool) == (
        "measured",
        "torch-cpu",
        1,
        "eebench profile measure",
    )
    assert len(profile.measured.conv) == 2 and len(profile.measured.ops) == 6
    assert profile.power.unavailable == "no meter in tests"
    assert profile.measured.sequence_slowdown.base > 0 and profile.measured.module_overhead.base > 0
    # the per-op overhead is the slope of the measured chains, not a constant
    m = profile.measured
    assert [c.ops for c in m.overhead_chain] == [1, 2, 4, 8] == [c.ops for c in m.module_chain]
    times = [c.time.base for c in m.overhead_chain]
    slope = float(np.polyfit([1, 2, 4, 8], times, 1)[0])
    assert m.per_op_overhead.base == pytest.approx(max(slope, 1e-9), rel=2e-3, abs=2e-9)
    assert profile.overhead.per_op.base == pytest.approx(m.per_op_overhead.base)
    assert profile.resolve(profile.overhead.per_op.provenance).derived_from == (
        "measured.overhead_chain"
    )
    # the CPU it was measured on, for the host check
    from eebench.measure.environment import cpu_flags

    assert profile.identity.cpu_flags == (cpu_flags() or None)
    best = max(p.achieved.base for p in [*profile.measured.gemm, *profile.measured.conv])
    assert profile.peak("fp32", "cpu").base == pytest.approx(best, rel=1e-3)
    out = write_profile(data, tmp_path / "unit-host.yaml")
    assert validate_file(out) == []
    with pytest.raises(ConfigError, match="exists"):
        write_profile(data, out)


def test_profile_power_comes_from_the_rapl_meter_or_says_why(tmp_path: Path) -> None:
    from eebench.measure.energy import RaplMeter
    from eebench.profiles.measure import measure_power

    missing = measure_power("2026-01-01", seconds=0.01, meter=RaplMeter(root=tmp_path / "none"))
    assert "unavailable" in missing and missing["unavailable"]
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    power = measure_power("2026-01-01", seconds=0.01, meter=RaplMeter(root=tmp_path))
    # a counter that does not move reads as zero watts, never NaN
    assert power["idle"]["value"] == 0.0 and power["active"]["value"] == 0.0


def test_per_op_overhead_must_match_the_slope_of_its_chains(tmp_path: Path) -> None:
    data = good_profile()
    data["measured"]["overhead_chain"] = [
        {"ops": 1, "time": {"value": 8, "unit": "us"}},
        {"ops": 4, "time": {"value": 14, "unit": "us"}},
    ]
    # slope (14 - 8) / 3 = 2 us per operator, but per_op_overhead says 5 us
    issues = validate_file(write(tmp_path, data))
    assert any(
        i.field == "measured.per_op_overhead" and "slope" in i.message and "2 us" in i.message
        for i in issues
    ), issues
    data["measured"]["per_op_overhead"] = {"value": 2, "unit": "us"}
    assert validate_file(write(tmp_path, data)) == []


def test_unsourced_assumptions_need_a_note_and_efficiencies_are_fractions(tmp_path: Path) -> None:
    data = good_profile()
    data["estimation"] = {
        "bandwidth_efficiency": {"value": 0.7, "unit": "ratio", "provenance": "guess"}
    }
    data["sources"]["guess"] = {"kind": "assumption"}
    issues = validate_file(write(tmp_path, data))
    assert any("unsourced assumption needs a 'note'" in i.message for i in issues), issues
    data["sources"]["guess"]["note"] = "typical of LPDDR4"
    assert validate_file(write(tmp_path, data)) == []
    data["estimation"]["compute_efficiency"] = {
        "cpu": {"value": 1.5, "unit": "ratio", "provenance": "guess"}
    }
    issues = validate_file(write(tmp_path, data))
    assert [i.field for i in issues] == ["estimation.compute_efficiency.cpu"]


@pytest.mark.parametrize("name", BUILTIN_JETSONS)
def test_datasheet_profiles_name_every_constant_the_estimate_assumes(name: str) -> None:
    profile = load_profile(name)
    assert profile.measured is None
    constants = [("overhead.per_op", profile.overhead.per_op)]
    constants.append(("estimation.bandwidth_efficiency", profile.estimation.bandwidth_efficiency))
    for engine in {e for pr in ("fp32", "fp16", "int8") for e in profile.engines(pr)}:
        q = getattr(profile.estimation.compute_efficiency, engine)
        constants.append((f"estimation.compute_efficiency.{engine}", q))
    for path, q in constants:
        assert q is not None, f"{name}: {path} is not stated"
        prov = profile.resolve(q.provenance)
        assert prov.kind in ("datasheet", "assumption"), (path, prov.kind)
        if prov.kind == "assumption":
            assert prov.describe().startswith("unsourced assumption: ") and len(prov.note) > 40

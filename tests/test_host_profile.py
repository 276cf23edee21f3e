"""Knowing which machine a run is on: a host profile measured on another CPU is flagged in the
manifest, on the console and in the report, tested with a fake environment."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import yaml

from eebench.measure import environment
from eebench.measure.environment import Environment, cpu_flags, cpu_vendor
from eebench.profiles import HardwareProfile, host_mismatch, load_profile
from eebench.results import Run
from eebench.suites.runner import RunOptions, run_suite

BENCH = {"kind": "measured", "date": "2026-01-01", "tool": "test", "method": "by hand"}


def host_profile(flags: list[str] | None = None) -> HardwareProfile:
    """A host profile measured on an 'AMD EPYC 7B13' with AVX2 and FMA (and no AVX-512)."""
    identity = {"vendor": "AMD", "device": "AMD EPYC 7B13", "power_mode": "os"}
    if flags is not None:
        identity["cpu_flags"] = flags
    return HardwareProfile.model_validate(
        {
            "name": "epyc-test",
            "identity": identity,
            "measured": {
                "provenance": "b",
                "engine": "cpu",
                "precision": "fp32",
                "bandwidth": {"value": 9, "unit": "GB/s"},
            },
            "sources": {"b": BENCH},
        }
    )


def fake_env(model: str, vendor: str | None, flags: list[str]) -> Environment:
    return Environment(
        captured_at="2026-01-01T00:00:00+00:00",
        hostname="fake",
        os="Linux",
        kernel="6",
        machine="x86_64",
        python="CPython 3.12",
        cpu_model=model,
        cores_logical=2,
        cores_physical=1,
        cpu_vendor=vendor,
        cpu_flags=flags,
    )


XEON = fake_env("Intel(R) Xeon(R) Platinum 8480+", "Intel", ["avx2", "avx512f", "amx_tile", "fma"])


def test_another_vendor_model_and_isa_is_a_mismatch() -> None:
    found = host_mismatch(host_profile(["avx2", "fma"]), XEON)
    assert found is not None
    assert found.reasons == (
        "vendor AMD (profile) vs Intel (host)",
        "CPU model 'AMD EPYC 7B13' (profile) vs 'Intel(R) Xeon(R) Platinum 8480+' (host)",
        "the profiled CPU lacked amx_tile, avx512f",
    )
    assert "host profile 'epyc-test' was measured on AMD EPYC 7B13" in found.message()
    # the vendor is in the model string already: not repeated
    assert found.to_dict()["host_cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    # a manifest's environment (a dict) is read the same way
    assert host_mismatch(host_profile(["avx2", "fma"]), XEON.to_dict()) == found


def test_same_cpu_matches_and_missing_flags_are_not_guessed() -> None:
    same = fake_env("AMD EPYC 7B13", "AMD", ["avx2", "fma"])
    assert host_mismatch(host_profile(["avx2", "fma"]), same) is None
    # model strings compare without case or spacing differences
    assert (
        host_mismatch(host_profile(["avx2", "fma"]), fake_env("amd  epyc 7b13", "AMD", [])) is None
    )
    # the same model on a host exposing fewer ISA extensions (a VM hiding AVX-512) differs
    less = fake_env("AMD EPYC 7B13", "AMD", ["avx2"])
    assert host_mismatch(host_profile(["avx2", "fma"]), less).reasons == ("the host lacks fma",)
    # a profile that recorded no flags is compared on vendor and model only
    assert host_mismatch(host_profile(None), less) is None


def test_datasheet_profiles_are_never_host_mismatches() -> None:
    assert host_mismatch(load_profile("jetson-nano-10w"), XEON) is None


def test_environment_reads_vendor_and_speed_flags_from_cpuinfo(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum "
        "8480+\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile amx_bf16 ht\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\n"
    )
    assert cpu_vendor(info) == "Intel"
    assert cpu_flags(info) == [
        "amx_bf16",
        "amx_tile",
        "avx",
        "avx2",
        "avx512_vnni",
        "avx512f",
        "fma",
        "sse4_2",
    ]
    assert cpu_vendor(tmp_path / "missing") is None and cpu_flags(tmp_path / "missing") == []


SUITE = {
    "name": "host-check",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 200}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 1, "lr": 0.02, "batch_size": 32},
        }
    ],
    "policies": [
        {"name": "threshold", "confidence": ["max_softmax"], "thresholds": [0.5, 0.9]},
    ],
    "backends": ["simulated:amd-epyc-1t", "simulated:jetson-nano-10w"],
    "validation": {"enabled": False},
}


@pytest.fixture(scope="module")
def xeon_run(tmp_path_factory):
    """A run estimating with the committed AMD EPYC host profile, on a (fake) Intel Xeon."""
    root = tmp_path_factory.mktemp("host")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    real = environment.capture_environment
    lines: list[str] = []

    def xeon(*args, **kwargs) -> Environment:
        return dataclasses.replace(
            real(*args, **kwargs),
            cpu_model=XEON.cpu_model,
            cpu_vendor=XEON.cpu_vendor,
            cpu_flags=XEON.cpu_flags,
        )

    mp = pytest.MonkeyPatch()
    mp.setattr(environment, "capture_environment", xeon)
    try:
        out = run_suite(
            str(path),
            RunOptions(
                out_root=root / "results",
                cache_root=root / "cache",
                run_id="xeon",
                progress=False,
                log=lines.append,
            ),
        )
    finally:
        mp.undo()
    return out, lines


def test_mismatch_is_in_the_manifest_the_console_and_the_report(xeon_run) -> None:
    out, lines = xeon_run
    run = Run.open(out)
    found = run.manifest["host_profile_mismatch"]
    assert found["jetson-nano-10w"] is None
    epyc = found["amd-epyc-1t"]
    assert epyc["profile_cpu"] == "AMD EPYC" and "Xeon" in epyc["host_cpu"]
    assert "vendor AMD (profile) vs Intel (host)" in epyc["reasons"]
    warnings = [line for line in lines if line.startswith("WARNING:")]
    assert len(warnings) == 1 and "host profile 'amd-epyc-1t'" in warnings[0]
    report = (out / "report" / "report.md").read_text()
    heading = "\n## Estimated from hardware profiles\n"  # the section, not the answer's subsection
    assert heading in report
    section = report.split(heading, 1)[1].split("\n## ", 1)[0]
    assert "WARNING (" in section and "amd-epyc-1t" in section and "Xeon" in section
    assert "profile measured on another CPU" in section


def test_bundle_and_report_show_what_each_estimate_is_made_of(xeon_run) -> None:
    out, _ = xeon_run
    costs = Run.open(out).table("stage_costs")
    est = costs[costs["source_kind"] == "estimated"]
    wide = est.pivot_table(
        index=["source", "part", "index"], columns="metric", values="value", aggfunc="first"
    )
    parts = wide["latency_compute_ms"] + wide["latency_memory_ms"] + wide["latency_overhead_ms"]
    pd.testing.assert_series_equal(parts, wide["latency_median_ms"], check_names=False, rtol=1e-9)
    lat = est[est["metric"] == "latency_median_ms"]
    assert lat["note"].str.startswith("assumed: ").all()
    nano = lat[lat["source"] == "estimated:jetson-nano-10w"]["note"].iat[0]
    assert "unsourced assumption" in nano
    report = (out / "report" / "report.md").read_text()
    section = report.split("\n## Estimated from hardware profiles\n", 1)[1].split("\n## ", 1)[0]
    assert "overhead_%" in section and "dominant" in section


def test_profile_estimate_command_warns_on_another_cpu(monkeypatch, capsys) -> None:
    from eebench.cli import main

    monkeypatch.setattr(environment, "capture_environment", lambda *a, **k: XEON)
    assert main(["profile", "estimate", "big-little", "amd-epyc-1t"]) == 0
    captured = capsys.readouterr()
    assert "compute_bound_ms" in captured.out and "memory_bound_ms" in captured.out
    assert "WARNING: host profile 'amd-epyc-1t' was measured on AMD EPYC" in captured.err
    # a datasheet profile describes another device on purpose: no warning
    assert main(["profile", "estimate", "big-little", "jetson-nano-10w"]) == 0
    assert "WARNING" not in capsys.readouterr().err

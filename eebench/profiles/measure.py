"""``eebench profile measure``: this machine's micro-benchmarks written as a hardware profile.

Everything in the written profile is labelled: the micro-benchmarks and the
host description are ``measured`` (date, tool, method, eebench version,
backend, threads, command, CPU model); the peak compute, bandwidth and per-op
overhead entries are ``derived`` from those measurements (a machine without a
datasheet at hand has no better peak than its best measurement). Power is
measured through RAPL where a counter is readable; otherwise the profile says
why there is none.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from eebench import __version__
from eebench.errors import ConfigError
from eebench.measure import environment
from eebench.profiles.microbench import MicroBenchResults, run_microbenchmarks
from eebench.profiles.submit import slugify
from eebench.profiles.validate import ProfileError, parse_profile

_ENGINE_OF_BACKEND = {"torch-cpu": "cpu", "torch-cuda": "cuda_cores"}
_CLOCK_TEXT = {
    "wall": "wall (elapsed time, perf_counter_ns)",
    "thread": "thread (CPU time of the calling thread, thread_time_ns: excludes waiting for a core "
    "on a shared machine; equals latency on an idle core for one torch thread)",
}


def _sig(x: float, digits: int = 4) -> float:
    """Round to significant digits: profiles are read by people; 4 digits is below the noise."""
    return float(f"{x:.{digits}g}")


def cpu_model() -> str:
    """The CPU model name as the OS reports it (the environment capture's reader)."""
    return environment.cpu_model()


def _cpu_vendor() -> str:
    return environment.cpu_vendor() or platform.machine() or "unknown"


def _cpu_max_mhz() -> float | None:
    freq = psutil.cpu_freq()
    if freq is not None and (freq.max or freq.current):
        return float(freq.max or freq.current)
    return None


def default_name(threads: int) -> str:
    """A profile name from the CPU model and thread count, e.g. ``amd-epyc-1t``."""
    return slugify(f"{cpu_model()}-{threads}t")


def _q(value: float, unit: str, provenance: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _sig(value), "unit": unit}
    if provenance is not None:
        out["provenance"] = provenance
    return out


def build_profile(
    name: str,
    results: MicroBenchResults,
    backend: str,
    command: str,
    date: str,
    power: dict[str, Any],
) -> dict[str, Any]:
    """The profile (plain YAML-ready data) for one set of micro-benchmark results."""
    engine = _ENGINE_OF_BACKEND[backend]
    model = cpu_model()
    gemm = [
        {
            "m": g.m,
            "n": g.n,
            "k": g.k,
            "time": _q(g.seconds * 1e6, "us"),
            "achieved": _q(g.m * g.n * g.k / g.seconds / 1e9, "gmacs_per_s"),
        }
        for g in results.gemm
    ]
    conv = []
    for c in results.conv:
        s = c.shape
        entry: dict[str, Any] = {
            "batch": s.batch,
            "in_channels": s.in_channels,
            "out_channels": s.out_channels,
            "height": s.size,
            "width": s.size,
            "kernel": s.kernel,
        }
        if s.stride != 1:
            entry["stride"] = s.stride
        if s.groups != 1:
            entry["groups"] = s.groups
        entry["time"] = _q(c.seconds * 1e6, "us")
        entry["achieved"] = _q(s.macs / c.seconds / 1e9, "gmacs_per_s")
        conv.append(entry)
    ops = [
        {
            "op": o.op,
            "shape": list(o.shape),
            "bytes": o.bytes,
            "time": _q(o.seconds * 1e6, "us"),
            "achieved": _q(o.bytes / o.seconds / 1e9, "GB/s"),
        }
        for o in results.ops
    ]
    best = max([e["achieved"]["value"] for e in gemm + conv], default=None)
    measured_src = {
        "kind": "measured",
        "date": date,
        "tool": "eebench profile measure",
        "method": f"{results.statistic} latency of nn.Module calls after warm-up (GEMM: nn.Linear, conv: nn.Conv2d "
        "without bias, batch 1 unless stated); bandwidth: copy of a 64 MiB float32 tensor "
        "(read + write bytes); memory-bound ops (nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), "
        "nn.BatchNorm2d, nn.LocalResponseNorm(3), nn.ReLU(inplace=True), torch.add): bytes = input + output + weights; "
        "per-op overhead: least-squares slope of the time of chains of k nn.ReLU calls on a "
        f"one-element tensor over k = {', '.join(str(k) for k, _ in results.overhead_chain)}; "
        "module overhead: the same slope for chains of k empty nn.Sequential calls; "
        "sequence slowdown: a 20-layer CIFAR-scale chain timed whole over the "
        "sum of its layers timed alone; clock: " + _CLOCK_TEXT[results.clock],
        "eebench_version": __version__,
        "backend": backend,
        "threads": results.threads,
        "clock": results.clock,
        "statistic": results.statistic,
        "command": command,
        "host": f"{model} ({platform.machine()}, {os.cpu_count()} logical CPUs)",
    }
    os_src = {
        "kind": "measured",
        "date": date,
        "tool": "eebench profile measure",
        "method": "read from /proc/cpuinfo and psutil (CPU model, logical CPUs, memory, CPU clock)",
    }
    identity: dict[str, Any] = {
        "vendor": _cpu_vendor(),
        "device": model,
        "power_mode": "as configured by the operating system (not set by eebench)",
        "cpu": f"{model}, {os.cpu_count()} logical CPUs ({platform.machine()})",
        "memory": _q(psutil.virtual_memory().total / 2**30, "GiB", "host-os"),
        "cores": {"cpu": _q(float(os.cpu_count() or 1), "count", "host-os")},
    }
    flags = environment.cpu_flags()
    if flags:
        identity["cpu_flags"] = flags
    mhz = _cpu_max_mhz()
    if mhz:
        identity["clocks"] = {"cpu_max": _q(mhz, "MHz", "host-os")}
    profile: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "description": f"{model} measured with eebench profile measure ({backend}, {results.threads} "
        f"thread{'s' if results.threads != 1 else ''}, fp32)",
        "identity": identity,
    }
    if best is not None:
        profile["compute"] = {
            "fp32": {
                engine: _q(
                    best,
                    "gmacs_per_s",
                    {
                        "kind": "derived",
                        "from": "the best achieved throughput among measured.gemm and measured.conv (not a datasheet peak)",
                    },
                )
            }
        }
    profile["memory"] = {
        "bandwidth": _q(
            results.bandwidth_bytes_per_s / 1e9,
            "GB/s",
            {
                "kind": "derived",
                "from": "measured.bandwidth (a large tensor copy; not a datasheet peak)",
            },
        )
    }
    per_op_us = max(results.per_op_overhead_s * 1e6, 1e-3)  # a quantity is > 0
    module_us = max(results.module_overhead_s * 1e6, 1e-3)
    fit = results.overhead_fit
    profile["overhead"] = {
        "per_op": _q(
            per_op_us,
            "us",
            {
                "kind": "derived",
                "from": "measured.overhead_chain",
                "formula": f"least-squares slope of time over chain length (R^2 = {fit.r2:.3f}, "
                f"intercept {fit.intercept_s * 1e6:.3g} us per chain call)",
            },
        )
    }
    profile["power"] = power
    profile["measured"] = {
        "provenance": "host-measure",
        "engine": engine,
        "precision": "fp32",
        "per_op_overhead": _q(per_op_us, "us"),
        "overhead_chain": [
            {"ops": k, "time": _q(t * 1e6, "us")} for k, t in results.overhead_chain
        ],
        "module_overhead": _q(module_us, "us"),
        "module_chain": [{"ops": k, "time": _q(t * 1e6, "us")} for k, t in results.module_chain],
        "sequence_slowdown": _q(results.sequence_slowdown, "ratio"),
        "bandwidth": _q(results.bandwidth_bytes_per_s / 1e9, "GB/s"),
        "gemm": gemm,
        "conv": conv,
        "ops": ops,
    }
    profile["sources"] = {"host-measure": measured_src, "host-os": os_src}
    return profile


def measure_power(date: str, seconds: float = 1.0, meter: Any | None = None) -> dict[str, Any]:
    """Idle and active power from the measure package's RAPL meter, or the reason there is none."""
    from eebench.measure.energy import RaplMeter, measure_energy

    meter = meter or RaplMeter()
    ok, reason = meter.available()
    if not ok:
        return {"unavailable": reason}
    import torch

    a = torch.randn(512, 512)
    result = measure_energy(meter, lambda: a @ a, min_calls=1, min_time_s=seconds, idle_s=seconds)
    if result.busy_watts is None or result.idle_watts is None:
        return {"unavailable": f"{meter.name} has no total-device domain to read power from"}
    src = {
        "kind": "measured",
        "date": date,
        "tool": "eebench profile measure",
        "method": f"{result.source} energy counter over {seconds:g} s idle and "
        f"{seconds:g} s of 512x512 matrix products",
    }
    idle, active = result.idle_watts, result.busy_watts
    return {"idle": _q(idle, "W", src), "active": _q(max(active, idle), "W", src)}


def measure_profile(
    name: str,
    backend: str = "torch-cpu",
    threads: int | None = None,
    command: str | None = None,
    min_time_s: float = 0.3,
    progress: bool = True,
    power_seconds: float = 1.0,
    clock: str = "wall",
    statistic: str = "median",
    rounds: int = 3,
    between_rounds: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the micro-benchmarks and return the validated profile as YAML-ready data.

    ``clock`` is ``wall`` (elapsed time) or ``thread`` (CPU time of the calling thread, for
    one thread on a machine shared with other work; see
    :data:`eebench.profiles.microbench.PROFILE_CLOCKS`).
    """
    if backend not in _ENGINE_OF_BACKEND:
        raise ConfigError(
            f"profile measure supports the backends {', '.join(_ENGINE_OF_BACKEND)}, got '{backend}'"
        )
    slug = slugify(name)
    if not slug:
        raise ConfigError(f"profile name '{name}' has no letters or digits")
    date = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    results = run_microbenchmarks(
        backend,
        threads,
        min_time_s=min_time_s,
        progress=progress,
        clock=clock,
        statistic=statistic,
        rounds=rounds,
        between_rounds=between_rounds,
    )
    power = (
        measure_power(date, power_seconds)
        if backend == "torch-cpu"
        else {
            "unavailable": "GPU power needs the device's own meter (e.g. the Jetson INA3221); not read here"
        }
    )
    command = (
        command
        or f"eebench profile measure --name {slug} --backend {backend} --threads {results.threads} "
        f"--clock {clock} --statistic {statistic} --rounds {rounds}"
    )
    data = build_profile(slug, results, backend, command, date, power)
    _, issues = parse_profile(data, f"<measured profile {slug}>")
    if issues:
        raise ProfileError(issues)
    return data


class _ProfileDumper(yaml.SafeDumper):
    """Block style, except quantities (``{value: 25.6, unit: GB/s}``) and lists of numbers
    on one line each: a profile is read by people."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flow = (
        "value" in data and "unit" in data and all(not isinstance(v, dict) for v in data.values())
    )
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, int | float) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ProfileDumper.add_representer(dict, _represent_dict)
_ProfileDumper.add_representer(list, _represent_list)


def write_profile(data: dict[str, Any], path: str | Path, overwrite: bool = False) -> Path:
    """Write a profile as YAML; refuse to replace an existing file unless ``overwrite``."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise ConfigError(f"{p} exists; choose another --out or pass --overwrite", source=str(p))
    p.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Written by eebench profile measure; validate with: eebench profile validate "
        + p.name
        + "\n"
    )
    text += yaml.dump(data, Dumper=_ProfileDumper, sort_keys=False, allow_unicode=True, width=100)
    p.write_text(text, encoding="utf-8")
    return p

"""Human-readable views of profiles: ``eebench profile show`` and ``eebench list profiles``."""

from __future__ import annotations

import pandas as pd

from eebench.profiles.locate import load_named_file, profile_entries
from eebench.profiles.schema import PRECISIONS, HardwareProfile, Quantity
from eebench.profiles.validate import ProfileError


def _fmt(q: Quantity | None) -> str:
    if q is None:
        return "-"
    mark = " (uncertain)" if q.uncertain else ""
    return f"{q.value:g} {q.unit}{mark}"


def _peak_text(q: Quantity, precision: str) -> str:
    macs = q.base
    ops = "GOP/s" if precision == "int8" else "GFLOP/s"
    mark = " (uncertain)" if q.uncertain else ""
    return f"{macs / 1e9:,.1f} GMAC/s = {2 * macs / 1e9:,.1f} {ops}{mark}"


def profile_text(profile: HardwareProfile) -> str:
    """A multi-line description of a profile with every number's provenance."""
    p = profile
    ident = p.identity
    device = (
        ident.device if ident.device.startswith(ident.vendor) else f"{ident.vendor} {ident.device}"
    )
    lines = [f"{p.name}: {device} — {ident.power_mode}"]
    if p.description:
        lines.append(f"  {p.description}")
    for label, value in (("SoC", ident.soc), ("CPU", ident.cpu), ("GPU", ident.gpu)):
        if value:
            lines.append(f"  {label}: {value}")
    if ident.memory is not None:
        lines.append(f"  memory: {_fmt(ident.memory)}")
    lines.append("peak compute (dense; 1 MAC = 2 FLOPs or 2 integer ops):")
    for precision in PRECISIONS:
        for engine in p.engines(precision):
            q = p.peak(precision, engine)
            if q is not None:
                lines.append(f"  {precision:5s} {engine:13s} {_peak_text(q, precision)}")
    lines.append(f"memory bandwidth: {_fmt(p.memory.bandwidth)}")
    lines.append(f"per-op overhead: {_fmt(p.overhead.per_op)}")
    est = p.estimation
    for engine in ("cpu", "cuda_cores", "tensor_cores", "dla"):
        q = getattr(est.compute_efficiency, engine)
        if q is not None:
            lines.append(f"compute efficiency {engine}: {_fmt(q)}")
    if est.bandwidth_efficiency is not None:
        lines.append(f"bandwidth efficiency: {_fmt(est.bandwidth_efficiency)}")
    if ident.cpu_flags:
        lines.append(f"CPU instruction-set flags: {' '.join(ident.cpu_flags)}")
    pw = p.power
    if pw.unavailable:
        lines.append(f"power: unavailable ({pw.unavailable})")
    else:
        lines.append(
            f"power: idle {_fmt(pw.idle)}, active {_fmt(pw.active)}, "
            f"energy/MAC {_fmt(pw.energy_per_mac)}, energy/byte {_fmt(pw.energy_per_byte)}"
        )
    m = p.measured
    if m is not None:
        lines.append(f"micro-benchmarks ({m.engine}, {m.precision}):")
        lines.append(f"  {p.resolve(m.provenance).describe()}")
        lines.append(
            f"  per-op overhead {_fmt(m.per_op_overhead)}, module-call overhead "
            f"{_fmt(m.module_overhead)}, copy bandwidth {_fmt(m.bandwidth)}, in-sequence "
            f"slowdown {_fmt(m.sequence_slowdown)}"
        )
        for g in m.gemm:
            shape = f"gemm {g.m}x{g.k}x{g.n}"
            lines.append(
                f"  {shape:38s} {g.macs / 1e6:9.3f} MMAC {_fmt(g.time):>14} "
                f"{g.achieved.base / 1e9:8.2f} GMAC/s"
            )
        for c in m.conv:
            extra = (f" s{c.stride}" if c.stride != 1 else "") + (
                f" g{c.groups}" if c.groups != 1 else ""
            )
            shape = (
                f"conv {c.in_channels}->{c.out_channels} {c.height}x{c.width} k{c.kernel}{extra}"
            )
            lines.append(
                f"  {shape:38s} {c.macs / 1e6:9.3f} MMAC {_fmt(c.time):>14} "
                f"{c.achieved.base / 1e9:8.2f} GMAC/s"
            )
        for o in m.ops:
            shape = f"{o.op} {'x'.join(map(str, o.shape))}"
            lines.append(
                f"  {shape:38s} {o.bytes / 1e3:9.1f} kB   {_fmt(o.time):>14} "
                f"{o.achieved.base / 1e9:8.2f} GB/s"
            )
    lines.append("provenance:")
    for path, q, prov in p.quantities():
        if path.startswith("measured."):
            continue
        if prov is None:
            text = "MISSING"
        elif prov.ref is not None:
            kind = p.resolve(prov).kind
            kind = "unsourced assumption" if kind == "assumption" else kind
            text = f"{kind} (source {prov.ref})"
        else:
            text = prov.describe()
        note = f" [uncertain: {q.note}]" if q.uncertain else ""
        lines.append(f"  {path} = {q.value:g} {q.unit}: {text}{note}")
    if p.sources:
        lines.append("sources:")
        for sid, src in p.sources.items():
            lines.append(f"  {sid}: {src.describe()}")
    return "\n".join(lines)


def profiles_table() -> pd.DataFrame:
    """One row per profile found; a profile that does not validate says so instead of vanishing."""
    rows = []
    for entry in profile_entries():
        try:
            p = load_named_file(entry.path)
        except ProfileError as err:
            rows.append(
                {
                    "name": entry.name,
                    "origin": entry.origin,
                    "device": "-",
                    "power mode": "-",
                    "fp32 peak (GMAC/s)": "-",
                    "bandwidth (GB/s)": "-",
                    "measured": "-",
                    "note": f"invalid: {len(err.issues)} problem(s), run eebench profile validate",
                }
            )
            continue
        peaks = [p.peak("fp32", e) for e in p.engines("fp32")]
        best = max((q.base for q in peaks if q is not None), default=None)
        bw = p.memory.bandwidth
        rows.append(
            {
                "name": p.name,
                "origin": entry.origin,
                "device": p.identity.device
                if p.identity.device.startswith(p.identity.vendor)
                else f"{p.identity.vendor} {p.identity.device}",
                "power mode": p.identity.power_mode,
                "fp32 peak (GMAC/s)": f"{best / 1e9:,.1f}" if best else "-",
                "bandwidth (GB/s)": f"{bw.base / 1e9:g}" if bw else "-",
                "measured": "yes" if p.measured is not None else "no",
                "note": "",
            }
        )
    return pd.DataFrame(rows)

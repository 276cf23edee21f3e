"""The report's table of estimates: what each estimated latency is made of, and whose CPU it
describes.

Every ``estimated:<profile>`` latency in a bundle carries its breakdown
(``latency_compute_ms`` + ``latency_memory_ms`` + ``latency_overhead_ms`` = the
latency), so the table shows, per model, profile and part, the three shares and
which one dominates: an estimate that is 95 % assumed per-operator overhead says
little about the device's compute. When a run estimated with a host profile
measured on another CPU (manifest ``host_profile_mismatch``), the rows of that
profile carry the warning next to the numbers, and :func:`host_notes` gives it
for the section's introduction.
"""

from __future__ import annotations

import math

import pandas as pd

from eebench.report.data import RunData, combined
from eebench.report.tables import fmt_num

BREAKDOWN = {
    "latency_compute_ms": "compute",
    "latency_memory_ms": "memory",
    "latency_overhead_ms": "overhead",
}
KEYS = ["run", "model", "source", "batch_size", "part", "index"]


def host_notes(runs: list[RunData]) -> dict[tuple[str, str], str]:
    """(run label, profile) -> the host-mismatch warning recorded in the run's manifest."""
    out: dict[tuple[str, str], str] = {}
    for run in runs:
        found = run.manifest.get("host_profile_mismatch")
        if not isinstance(found, dict):
            continue
        for profile, info in found.items():
            if isinstance(info, dict) and info.get("message"):
                out[(run.label, str(profile))] = str(info["message"])
    return out


def estimates_intro(runs: list[RunData]) -> str:
    """The section's introduction, with every host-profile mismatch spelled out."""
    text = (
        "Latency of each stage and exit head estimated from a hardware profile (not measured), "
        "split into compute-bound, memory-bound and per-operator overhead time, which add up to "
        "the estimate; 'dominant' names the largest share and 'assumed' the constants behind it "
        "(an unsourced assumption says so)."
    )
    for (run, profile), message in sorted(host_notes(runs).items()):
        text += f" WARNING ({run}, {profile}): {message}"
    return text


def estimates_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per run, model, profile, batch size and part: estimate (ms), its three parts
    (ms and % of the estimate), the dominant part, the assumptions and any host warning."""
    costs = combined(runs, "stage_costs")
    if costs.empty or "metric" not in costs.columns:
        return pd.DataFrame()
    est = costs[costs["source_kind"] == "estimated"]
    est = est[est["metric"].isin(["latency_median_ms", *BREAKDOWN])]
    if est.empty:
        return pd.DataFrame()
    wide = est.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="first")
    notes = {}
    if "note" in est.columns:
        lat = est[est["metric"] == "latency_median_ms"].drop_duplicates(subset=KEYS)
        notes = dict(zip(map(tuple, lat[KEYS].to_numpy()), lat["note"]))
    warnings = host_notes(runs)
    rows = []
    for key, row in wide.iterrows():
        rec = dict(zip(KEYS, key))
        total = row.get("latency_median_ms", math.nan)
        rec["estimated_ms"] = fmt_num(total)
        shares = {}
        for metric, name in BREAKDOWN.items():
            value = row.get(metric, math.nan)
            rec[f"{name}_ms"] = fmt_num(value)
            share = value / total if total and not math.isnan(value) else math.nan
            rec[f"{name}_%"] = "" if math.isnan(share) else f"{100 * share:.0f}"
            shares[name] = share
        known = {k: v for k, v in shares.items() if not math.isnan(v)}
        rec["dominant"] = max(known, key=known.get) if known else ""
        note = notes.get(key, "")
        rec["assumed"] = "" if not isinstance(note, str) else note.removeprefix("assumed: ")
        profile = str(rec["source"]).removeprefix("estimated:")
        rec["host_warning"] = (
            "profile measured on another CPU" if (rec["run"], profile) in warnings else ""
        )
        rows.append(rec)
    out = pd.DataFrame(rows)
    if len(runs) == 1:
        out = out.drop(columns="run")
    if not out["host_warning"].astype(bool).any():
        out = out.drop(columns="host_warning")
    return out

"""Turning what the packages return into the bundle's long-format tables.

Kept apart from the runner so that the column conventions of
:mod:`eebench.results.schema` live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from eebench.measure.timing import PROBE_PART, Measurement

NS_PER_MS = 1e6


def analytic_rows(model_id: str, cost_table: Any) -> pd.DataFrame:
    """stage_costs rows for MACs, parameters and activation bytes (source: analytic)."""
    t = cost_table.table
    rows = []
    for _, r in t.iterrows():
        for metric, unit in (
            ("macs", "MAC"),
            ("params", "count"),
            ("output_bytes", "B"),
            ("input_bytes", "B"),
        ):
            if metric in t.columns:
                rows.append(
                    _cost_row(
                        model_id,
                        r["part"],
                        int(r["index"]),
                        metric,
                        float(r[metric]),
                        unit,
                        "analytic",
                        "analytic",
                        "",
                        "",
                        0,
                        1,
                    )
                )
        unsupported = r.get("unsupported_ops", "")
        if isinstance(unsupported, str) and unsupported:
            rows[-1]["note"] = f"unsupported ops: {unsupported}"
    return pd.DataFrame(rows)


def _cost_row(
    model: str,
    part: str,
    index: int,
    metric: str,
    value: float,
    unit: str,
    kind: str,
    source: str,
    backend: str,
    device: str,
    threads: int,
    batch_size: int,
) -> dict[str, Any]:
    return {
        "model": model,
        "part": part,
        "index": index,
        "metric": metric,
        "value": value,
        "unit": unit,
        "source_kind": kind,
        "source": source,
        "backend": backend,
        "device": device,
        "threads": threads,
        "batch_size": batch_size,
    }


def measured_rows(
    model_id: str, measurements: Sequence[Measurement]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """stage_costs rows (latency statistics) and latency_samples rows (raw ms) for measured parts.

    Every statistic comes with the sample count (``repeats``) and its 95% interval
    (``*_ci_low_ms``/``*_ci_high_ms`` rows: order statistics for the median and the
    percentiles, a block bootstrap for the mean). A percentile the sample count does
    not support is NaN with ``flag`` = ``insufficient samples``; a median whose
    interval is wider than the target is flagged ``noisy``. ``stop_reason`` says what
    ended the sampling (``ci-target``, ``max-time``, ...). The speed probe's rows carry
    its kind in ``note`` (what product ran through which backend).
    """
    rows, samples = [], []
    for m in measurements:
        spec, st = m.spec, m.stats
        base = dict(
            model=model_id,
            part=spec.part,
            index=int(spec.index),
            backend=spec.backend,
            device=spec.device,
            threads=spec.threads,
            batch_size=spec.batch_size,
        )
        source = spec.source
        short = "insufficient samples"
        p90_flag = "" if st.p90_supported else short
        p99_flag = "" if st.p99_supported else short
        noisy = "noisy" if m.noisy else ""
        # the speed probe's rows say what it ran: compare divides only by probes of one kind
        kind = spec.extra.get("speed_probe") if spec.part == PROBE_PART else None
        probe_note = {"note": str(kind)} if kind else {}
        for metric, value, unit, flag in (
            ("latency_median_ms", st.median / NS_PER_MS, "ms", noisy),
            ("latency_median_ci_low_ms", st.median_ci_lo / NS_PER_MS, "ms", noisy),
            ("latency_median_ci_high_ms", st.median_ci_hi / NS_PER_MS, "ms", noisy),
            ("latency_mean_ms", st.mean / NS_PER_MS, "ms", ""),
            ("latency_mean_ci_low_ms", st.mean_ci_lo / NS_PER_MS, "ms", ""),
            ("latency_mean_ci_high_ms", st.mean_ci_hi / NS_PER_MS, "ms", ""),
            ("latency_p90_ms", st.p90 / NS_PER_MS, "ms", p90_flag),
            ("latency_p90_ci_low_ms", st.p90_ci_lo / NS_PER_MS, "ms", p90_flag),
            ("latency_p90_ci_high_ms", st.p90_ci_hi / NS_PER_MS, "ms", p90_flag),
            ("latency_p99_ms", st.p99 / NS_PER_MS, "ms", p99_flag),
            ("latency_p99_ci_low_ms", st.p99_ci_lo / NS_PER_MS, "ms", p99_flag),
            ("latency_p99_ci_high_ms", st.p99_ci_hi / NS_PER_MS, "ms", p99_flag),
            ("latency_iqr_ms", st.iqr / NS_PER_MS, "ms", ""),
            ("latency_cv", st.cv, "ratio", ""),
            ("noisy", float(m.noisy), "flag", noisy),
            ("repeats", float(len(m.samples_ns)), "count", ""),
        ):
            rows.append(
                {
                    **_cost_row(
                        model_id,
                        spec.part,
                        int(spec.index),
                        metric,
                        float(value),
                        unit,
                        "measured",
                        source,
                        spec.backend,
                        spec.device,
                        spec.threads,
                        spec.batch_size,
                    ),
                    "flag": flag,
                    "stop_reason": m.stopped_by,
                    **probe_note,
                }
            )
        ms = np.asarray(m.samples_ns, dtype=np.float64) / NS_PER_MS
        samples.append(
            pd.DataFrame(
                {
                    **{k: [v] * len(ms) for k, v in base.items()},
                    "sample": np.arange(len(ms)),
                    "ms": ms,
                }
            )
        )
    lat = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    return pd.DataFrame(rows), lat


def estimated_rows(model_id: str, estimate: pd.DataFrame, profile: str) -> pd.DataFrame:
    """stage_costs rows for the estimator's latency and energy (source: estimated:<profile>).

    The latency comes with its breakdown -- ``latency_compute_ms`` (compute-bound
    operators), ``latency_memory_ms`` (memory-bound operators) and
    ``latency_overhead_ms`` (per-operator and module-call overhead), which add up to
    ``latency_median_ms`` -- so a reader sees what dominates an estimate; the latency row's
    ``note`` lists the constants the estimate assumed and where each comes from.
    """
    rows = []
    source = f"estimated:{profile}"
    for _, r in estimate.iterrows():
        bs = int(r.get("batch_size", 1))
        for metric, col, unit in (
            ("latency_median_ms", "latency_ms", "ms"),
            ("latency_compute_ms", "compute_bound_ms", "ms"),
            ("latency_memory_ms", "memory_bound_ms", "ms"),
            ("latency_overhead_ms", "overhead_ms", "ms"),
            ("energy_mj", "energy_mj", "mJ"),
        ):
            if col in estimate.columns and pd.notna(r[col]):
                rows.append(
                    _cost_row(
                        model_id,
                        r["part"],
                        int(r["index"]),
                        metric,
                        float(r[col]),
                        unit,
                        "estimated",
                        source,
                        f"simulated:{profile}",
                        profile,
                        0,
                        bs,
                    )
                )
                if metric == "latency_median_ms" and "assumptions" in estimate.columns:
                    rows[-1]["note"] = f"assumed: {r['assumptions']}"
    return pd.DataFrame(rows)


def energy_rows(
    model_id: str, spec: Any, part: Any, kind: str, source: str
) -> list[dict[str, Any]]:
    """stage_costs rows of one part's energy (:class:`eebench.measure.energy.PartEnergy`).

    Net energy per inference (idle power of the same run subtracted) is the primary figure;
    gross (idle included), the idle and busy power, each with its 95% interval, and how the
    meter was read (update period, window, calls per window, windows) sit beside it.
    """
    e = part.energy
    values: list[tuple[str, float, str]] = [
        ("energy_net_mj", e.net_j.estimate * 1e3, "mJ"),
        ("energy_net_ci_low_mj", e.net_j.lo * 1e3, "mJ"),
        ("energy_net_ci_high_mj", e.net_j.hi * 1e3, "mJ"),
        ("energy_gross_mj", e.gross_j.estimate * 1e3, "mJ"),
        ("energy_gross_ci_low_mj", e.gross_j.lo * 1e3, "mJ"),
        ("energy_gross_ci_high_mj", e.gross_j.hi * 1e3, "mJ"),
        ("idle_power_w", e.idle_w.estimate, "W"),
        ("idle_power_ci_low_w", e.idle_w.lo, "W"),
        ("idle_power_ci_high_w", e.idle_w.hi, "W"),
        ("busy_power_w", e.busy_w, "W"),
        ("energy_update_period_ms", part.update_period.seconds * 1e3, "ms"),
        ("energy_window_s", part.window_s, "s"),
        ("energy_calls_per_window", float(part.calls_per_window), "count"),
        ("energy_windows", float(part.windows), "count"),
    ]
    return [
        _cost_row(
            model_id,
            spec.part,
            int(spec.index),
            metric,
            float(value),
            unit,
            kind,
            source,
            spec.backend,
            spec.device,
            spec.threads,
            spec.batch_size,
        )
        for metric, value, unit in values
    ]


def exits_rows(model_id: str, record: Any) -> pd.DataFrame:
    """The exits table of one record: per sample and exit, label, prediction and confidences."""
    df = record.to_frame()
    df.insert(0, "split", record.split)
    df.insert(0, "model", model_id)
    return df


def long_operating_points(
    frame: pd.DataFrame,
    model_id: str,
    family: str,
    calibration: str | None,
    cost_sources: Sequence[tuple[str, str, str | None]],
) -> pd.DataFrame:
    """One row per (operating point, cost source).

    ``frame`` is the evaluation package's wide table, with ``expected_<name>``
    columns per cost vector; ``cost_sources`` lists ``(source label, latency
    cost name, energy cost name or None)``. MACs (analytic) are on every row.
    """
    if frame.empty:
        return frame
    base = frame.copy()
    base["model"] = model_id
    base["family"] = family
    if "calibration" not in base.columns:
        base["calibration"] = calibration or np.where(
            base["kind"] == "baseline", "baseline", "sweep"
        )
    base["thresholds"] = base["thresholds"].map(_thresholds_text)
    keep = [
        c
        for c in base.columns
        if not any(
            c in (f"expected_{n}", f"{n}_unit", f"{n}_source", f"wasted_{n}", f"wasted_frac_{n}")
            for _, lat, en in cost_sources
            for n in (lat, en)
            if n
        )
    ]
    out = []
    if not cost_sources:
        out.append(
            base[keep].assign(
                cost_source="analytic",
                expected_latency_ms=np.nan,
                expected_energy_mj=np.nan,
                energy_source="",
            )
        )
    for label, lat, en in cost_sources:
        part = base[keep].copy()
        part["cost_source"] = label
        part["expected_latency_ms"] = base[f"expected_{lat}"].to_numpy()
        part["expected_energy_mj"] = base[f"expected_{en}"].to_numpy() if en else np.nan
        part["energy_source"] = label if en else ""
        out.append(part)
    return pd.concat(out, ignore_index=True)


def _thresholds_text(value: Any) -> str:
    if isinstance(value, (tuple, list, np.ndarray)):
        return "(" + ", ".join(f"{float(v):.6g}" for v in value) + ")"
    return str(value)

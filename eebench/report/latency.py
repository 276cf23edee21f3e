"""The report's per-part latency table: every measured statistic with its sample count, its 95%
interval and its caveats next to the number.

A median whose interval is wider than the run's target is marked ``noisy``; a percentile the
sample count cannot support (MLPerf LoadGen's rule: 64 samples for p90, 662 for p99) reads
``insufficient samples`` instead of a number. Also used for the console's list of flagged
parts at the end of a run.
"""

from __future__ import annotations

import math

import pandas as pd

from eebench.measure.stats import INSUFFICIENT, min_samples_for_percentile
from eebench.report.data import RunData, combined
from eebench.report.derive import part_order
from eebench.report.tables import fmt_num

KEYS = ["model", "backend", "device", "threads", "batch_size", "part", "index"]
STATS = ("median", "mean", "p90", "p99")


def measured_parts(costs: pd.DataFrame) -> pd.DataFrame:
    """One row per measured part (``KEYS`` + ``run`` when present): the latency statistics in ms
    with their interval bounds (``<stat>_ms``, ``<stat>_lo``, ``<stat>_hi``), ``n``,
    ``noisy``, ``p90_ok``/``p99_ok`` and ``stop_reason``."""
    if costs.empty or "metric" not in costs.columns:
        return pd.DataFrame()
    meas = costs[(costs["source_kind"] == "measured") & costs["metric"].str.startswith("latency_")]
    if meas.empty:
        return pd.DataFrame()
    keys = (["run"] if "run" in meas.columns else []) + KEYS
    wide = meas.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    counts = costs[(costs["source_kind"] == "measured") & (costs["metric"] == "repeats")]
    counts = counts.set_index(keys)["value"]
    noisy = costs[(costs["source_kind"] == "measured") & (costs["metric"] == "noisy")]
    noisy = noisy.set_index(keys)["value"]
    reasons = (
        meas.drop_duplicates(subset=keys).set_index(keys)["stop_reason"]
        if "stop_reason" in meas.columns
        else pd.Series(dtype=str)
    )
    rows = []
    for key, row in wide.iterrows():
        rec = dict(zip(keys, key))
        n = counts.get(key, math.nan)
        rec["n"] = n
        rec["noisy"] = bool(noisy.get(key, 0.0))
        reason = reasons.get(key, "")
        rec["stop_reason"] = "" if pd.isna(reason) else str(reason)
        for stat in STATS:
            rec[f"{stat}_ms"] = row.get(f"latency_{stat}_ms", math.nan)
            rec[f"{stat}_lo"] = row.get(f"latency_{stat}_ci_low_ms", math.nan)
            rec[f"{stat}_hi"] = row.get(f"latency_{stat}_ci_high_ms", math.nan)
        for stat, q in (("p90", 0.90), ("p99", 0.99)):
            rec[f"{stat}_ok"] = not math.isnan(n) and n >= min_samples_for_percentile(q)
        rows.append(rec)
    out = pd.DataFrame(rows)
    order = out.apply(lambda r: part_order(r["part"], int(r["index"])), axis=1)
    return out.assign(_o=order).sort_values([*keys[:-2], "_o"], kind="mergesort").drop(columns="_o")


def interval_text(value: float, lo: float, hi: float) -> str:
    """``0.0815 [0.0801, 0.0829]``; the bare value where the interval is undefined."""
    text = fmt_num(value)
    if text and fmt_num(lo) and fmt_num(hi):
        return f"{text} [{fmt_num(lo)}, {fmt_num(hi)}]"
    return text


def _percentile_text(row: pd.Series, stat: str, q: float) -> str:
    if not row[f"{stat}_ok"] or math.isnan(row[f"{stat}_ms"]):
        return f"{INSUFFICIENT} (n < {min_samples_for_percentile(q)})"
    return interval_text(row[f"{stat}_ms"], row[f"{stat}_lo"], row[f"{stat}_hi"])


def latency_table(runs: list[RunData]) -> pd.DataFrame:
    """Per measured part: n, median, mean, p90, p99 in ms with 95% intervals and caveats."""
    parts = measured_parts(combined(runs, "stage_costs"))
    if parts.empty:
        return parts
    out = pd.DataFrame(
        {
            "run": parts["run"],
            "model": parts["model"],
            "backend": parts["backend"],
            "threads": parts["threads"].map(lambda v: fmt_num(v, 6)),
            "batch size": parts["batch_size"].map(lambda v: fmt_num(v, 6)),
            "part": parts["part"] + " " + parts["index"].astype(int).astype(str),
            "n": parts["n"].map(lambda v: fmt_num(v, 9)),
            "median [ms] (measured, 95% interval)": [
                interval_text(r.median_ms, r.median_lo, r.median_hi) + (" noisy" if r.noisy else "")
                for r in parts.itertuples()
            ],
            "mean [ms] (95% interval)": [
                interval_text(r.mean_ms, r.mean_lo, r.mean_hi) for r in parts.itertuples()
            ],
            "p90 [ms]": [_percentile_text(r, "p90", 0.90) for _, r in parts.iterrows()],
            "p99 [ms]": [_percentile_text(r, "p99", 0.99) for _, r in parts.iterrows()],
            "stopped by": parts["stop_reason"],
        }
    )
    if out["run"].nunique() == 1:
        out = out.drop(columns="run")
    return out


def noisy_lines(costs: pd.DataFrame) -> list[str]:
    """One console line per part whose median is flagged noisy, the number and its interval."""
    parts = measured_parts(costs)
    if parts.empty:
        return []
    lines = []
    for r in parts[parts["noisy"]].itertuples():
        rel = (r.median_hi - r.median_lo) / 2 / r.median_ms if r.median_ms else math.nan
        width = f"±{rel:.1%}" if not math.isnan(rel) else "no interval"
        lines.append(
            f"  {r.model} {r.part} {int(r.index)} on {r.backend}: median "
            f"{interval_text(r.median_ms, r.median_lo, r.median_hi)} ms ({width}, "
            f"n={fmt_num(r.n, 9)}, stopped by {r.stop_reason or 'unknown'}) NOISY"
        )
    return lines

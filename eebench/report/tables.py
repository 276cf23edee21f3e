"""The report's tables, as DataFrames of display strings (the HTML and Markdown pages render them).

Column headers carry the unit and the kind of every number (analytic,
measured, estimated:<profile>), as the figures' axes do.
"""

from __future__ import annotations

import math

import pandas as pd

from eebench.report.data import RunData, combined, flatten
from eebench.report.derive import (
    calibrated,
    exit_fraction_columns,
    policy_label,
    reference_role,
    unique_points,
)


def fmt_count(value: float) -> str:
    """1234567 -> '1.23 M' (MACs, parameters)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_num(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}"


def fmt_pct(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.1f}"


def environment_table(runs: list[RunData]) -> pd.DataFrame:
    """Rows: status, timing and every environment field; one column per run."""
    cols = {}
    for run in runs:
        m = run.manifest
        entries = {
            "status": run.status
            + (f" ({run.reason})" if run.reason and run.status != "complete" else ""),
            "suite": str(m.get("suite_name", "")),
            "run folder": str(run.path),
            "started": str(m.get("started") or ""),
            "finished": str(m.get("finished") or ""),
            "finished steps": str(
                sum(1 for s in m.get("steps", {}).values() if s.get("status") == "done")
            ),
        }
        entries.update(flatten(run.environment))
        cols[run.label] = entries
    keys = list(dict.fromkeys(k for entries in cols.values() for k in entries))
    table = pd.DataFrame(
        {label: [entries.get(k, "") for k in keys] for label, entries in cols.items()}
    )
    table.insert(0, "field", keys)
    return table


def cluster_nodes_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per node of a cluster run (``manifest.cluster``): where it is, what it holds,
    its CPU and code, and which units ran there; empty for runs made on one machine."""
    rows = []
    for run in runs:
        cluster = run.manifest.get("cluster") or {}
        envs = cluster.get("node_environments") or {}
        units = cluster.get("units") or {}
        for node_id, node in (cluster.get("nodes") or {}).items():
            ran = [u for u, st in units.items() if st.get("node") == node_id]
            env = envs.get(node_id) or {}
            rows.append(
                {
                    "run": run.label,
                    "node": node.get("hostname", node_id[:12]),
                    "address": node.get("address", ""),
                    "driver": "yes" if node_id == cluster.get("driver_node") else "",
                    "devices": ", ".join(node.get("devices") or []),
                    "CPUs": f"{node.get('cpus', 0):g}",
                    "GPUs": f"{node.get('gpus', 0):g}",
                    "CPU model": env.get("cpu_model", ""),
                    "eebench": node.get("eebench_version", ""),
                    "commit": str(node.get("git_commit") or "")[:12],
                    "units run": len(ran),
                    "device-bound units": ", ".join(
                        u for u in ran if u.split(":", 1)[0] in ("measure", "validate", "serve")
                    ),
                }
            )
    return pd.DataFrame(rows)


def operating_points_table(runs: list[RunData]) -> pd.DataFrame:
    """Calibrated operating points with val and test side by side, plus test latency/energy per source."""
    ops = calibrated(combined(runs, "operating_points"))
    if ops.empty:
        return pd.DataFrame()
    pts = unique_points(ops)
    key = ["run", "model", "family", "policy", "confidence", "calibration"]
    val = pts[pts["split"] == "val"].drop_duplicates(subset=key).set_index(key)
    test = pts[pts["split"] == "test"].drop_duplicates(subset=key).set_index(key)
    index = list(dict.fromkeys([*val.index, *test.index]))
    frac_cols = exit_fraction_columns(pts)
    rows = []
    for k in index:
        v = val.loc[k] if k in val.index else None
        t = test.loc[k] if k in test.index else None
        row = {
            "run": k[0],
            "model": k[1],
            "family": k[2],
            "policy": policy_label(k[3], k[4]),
            # baselines and bounds are references, not choices: say which (the oracle reads labels)
            "calibration": k[5] if k[5] != "baseline" else _reference_label(k[3]),
            "thresholds (chosen on val)": str((v if v is not None else t)["thresholds"]),
        }
        row["val accuracy [%]"] = fmt_pct(v["accuracy"]) if v is not None else ""
        row["test accuracy [%]"] = fmt_pct(t["accuracy"]) if t is not None else ""
        row["val expected MACs (analytic)"] = fmt_count(v["expected_macs"]) if v is not None else ""
        row["test expected MACs (analytic)"] = (
            fmt_count(t["expected_macs"]) if t is not None else ""
        )
        if t is not None and frac_cols:
            fr = [t[c] for c in frac_cols if not pd.isna(t[c])]
            row["test exit distribution [%]"] = " / ".join(f"{100 * f:.0f}" for f in fr)
        # final exit right, this policy's answer wrong; and SDN's wasted computation (share of
        # the MACs a sample paid after an exit already had the right answer), side by side
        row["test lost by exiting early [%]"] = (
            fmt_pct(t.get("lost_by_exiting_early", math.nan)) if t is not None else ""
        )
        row["test wasted computation [% of MACs] (analytic)"] = (
            fmt_pct(t.get("wasted_frac_macs", math.nan)) if t is not None else ""
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    test_rows = ops[ops["split"] == "test"]
    if "cost_source" in test_rows.columns and "expected_latency_ms" in test_rows.columns:
        sources = [s for s in test_rows["cost_source"].unique() if s]
        for source in sorted(sources, key=lambda s: (not s.startswith("measured"), s)):
            sub = (
                test_rows[test_rows["cost_source"] == source]
                .drop_duplicates(subset=key)
                .set_index(key)
            )
            table[f"test latency [ms] ({source})"] = [
                fmt_num(sub.loc[k, "expected_latency_ms"]) if k in sub.index else "" for k in index
            ]
            if "expected_energy_mj" in sub.columns and sub["expected_energy_mj"].notna().any():
                esrc = sub["energy_source"].iloc[0] if "energy_source" in sub.columns else source
                table[f"test energy [mJ] ({esrc or source})"] = [
                    fmt_num(sub.loc[k, "expected_energy_mj"]) if k in sub.index else ""
                    for k in index
                ]
    if table["run"].nunique() == 1:
        table = table.drop(columns="run")
    return table


def _reference_label(policy: str) -> str:
    role = reference_role(policy)
    if role == "bound":
        return "bound (reads the labels; not a choice)"
    return "baseline (not a choice)"


_SHOWN_DIGITS = 4
"""Significant digits of the validation table's mean latencies; its ratio is computed from
the numbers as shown, so a reader dividing the two columns gets exactly the ratio column."""


def _with_ci(val: pd.DataFrame, col: str) -> pd.Series:
    """``value [lo, hi]`` where the table has the interval columns, the value alone otherwise."""
    base = col.removesuffix("_ms")
    lo, hi = f"{base}_ci_low_ms", f"{base}_ci_high_ms"
    shown = val[col].map(lambda v: fmt_num(v, _SHOWN_DIGITS))
    if lo not in val.columns or hi not in val.columns:
        return shown
    ci = [
        f" [{fmt_num(a, 3)}, {fmt_num(b, 3)}]" if not (pd.isna(a) or pd.isna(b)) else ""
        for a, b in zip(val[lo], val[hi], strict=True)
    ]
    return shown + pd.Series(ci, index=val.index)


def _shown_ratio(measured: float, predicted: float) -> str:
    """measured / predicted from the two values rounded as the table shows them."""
    if pd.isna(measured) or pd.isna(predicted):
        return ""
    m = float(fmt_num(measured, _SHOWN_DIGITS))
    p = float(fmt_num(predicted, _SHOWN_DIGITS))
    return f"{m / p:.3f}" if p else ""


def validation_table(runs: list[RunData]) -> pd.DataFrame:
    """Mean measured vs mean predicted latency per calibrated point, with 95% intervals, the
    clock both sides used, and where the ±10% goal is missed, the part that dominates the gap."""
    val = combined(runs, "validation")
    if val.empty:
        return pd.DataFrame()
    out = pd.DataFrame(
        {
            "run": val["run"],
            "model": val["model"],
            "backend": val["backend"],
            # the confidence measure tells apart rows of one policy
            "policy": [
                policy_label(str(p), str(c))
                for p, c in zip(
                    val["policy"],
                    val["confidence"] if "confidence" in val.columns else [""] * len(val),
                    strict=True,
                )
            ],
            "calibration": val["calibration"],
            "batch size": val["batch_size"].map(lambda v: fmt_num(v, 6)),
            "threads": val["threads"].map(lambda v: fmt_num(v, 6)),
            "predicted mean [ms] (parts x exit mix) [95% CI]": _with_ci(
                val, "predicted_latency_ms"
            ),
            "measured mean [ms] (true early exit) [95% CI]": _with_ci(val, "measured_latency_ms"),
            "measured / predicted": [
                _shown_ratio(m, p)
                for m, p in zip(
                    val["measured_latency_ms"], val["predicted_latency_ms"], strict=True
                )
            ],
            "decision overhead [µs]": val["decision_overhead_us"].map(fmt_num),
            "agreement with exit record [%]": val["agreement"].map(fmt_pct),
        }
    )
    if "ratio_ci_low" in val.columns:
        out.insert(
            out.columns.get_loc("measured / predicted") + 1,
            "ratio 95% CI",
            [
                f"[{a:.3f}, {b:.3f}]" if not (pd.isna(a) or pd.isna(b)) else ""
                for a, b in zip(val["ratio_ci_low"], val["ratio_ci_high"], strict=True)
            ],
        )
    if "gap_note" in val.columns:
        out["outside ±10%: the part that dominates the gap"] = (
            val["gap_note"].astype(object).fillna("")
        )
    if "clock" in val.columns:
        out["clock"] = val["clock"]
    for col, name in (
        ("speedup_vs_aggregation", "speedup vs aggregation [x]"),
        ("speedup_vs_backbone", "speedup vs plain network [x]"),
    ):
        if col in val.columns:
            out[name] = val[col].map(fmt_num)
    if "accuracy" in val.columns:
        out["accuracy [%]"] = val["accuracy"].map(fmt_pct)
    if out["run"].nunique() == 1:
        out = out.drop(columns="run")
    return out


def skipped_table(runs: list[RunData]) -> pd.DataFrame:
    sk = combined(runs, "skipped")
    if sk.empty:
        return pd.DataFrame()
    out = sk[["run", "model", "step", "target", "reason"]].drop_duplicates()
    return out.drop(columns="run") if out["run"].nunique() == 1 else out

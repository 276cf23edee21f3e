"""The summary printed at the end of a run: the best calibrated operating point per model and
cost source, on test."""

from __future__ import annotations

import pandas as pd


def summary_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model and cost source, the calibrated point with the lowest expected latency among those
    within 1% of the final exit's accuracy (or the most accurate one), next to the final-only baseline
    (the plain network: every stage and the final head only, a cascade's last member alone; its
    MACs and latency are the plain network's, not the cumulative cost of the final exit)."""
    ops = tables.get("operating_points", pd.DataFrame())
    if ops.empty:
        return pd.DataFrame()
    test = ops[ops["split"] == "test"]
    rows = []
    for (model, source), g in test.groupby(["model", "cost_source"], sort=False):
        final = g[g["policy"] == "final-only"]
        cal = g[~g["calibration"].isin(["sweep", "baseline"])]
        if cal.empty:
            continue
        final_acc = float(final["accuracy"].iloc[0]) if len(final) else float("nan")
        final_lat = float(final["expected_latency_ms"].iloc[0]) if len(final) else float("nan")
        final_macs = float(final["expected_macs"].iloc[0]) if len(final) else float("nan")
        ok = cal[cal["accuracy"] >= final_acc - 0.01] if len(final) else cal
        pool = ok if len(ok) else cal
        key = (
            "expected_latency_ms" if pool["expected_latency_ms"].notna().any() else "expected_macs"
        )
        best = pool.sort_values([key, "accuracy"], ascending=[True, False]).iloc[0]
        rows.append(
            {
                "model": model,
                "family": best["family"],
                "cost source": source,
                "policy": f"{best['policy']}/{best['confidence']}",
                "calibration": best["calibration"],
                "accuracy": round(float(best["accuracy"]), 4),
                "final-only acc": round(final_acc, 4),
                "exp. MMACs (analytic)": round(float(best["expected_macs"]) / 1e6, 4),
                "final-only MMACs": round(final_macs / 1e6, 4),
                "exp. latency ms": round(float(best["expected_latency_ms"]), 4),
                "final-only ms": round(final_lat, 4),
            }
        )
    return pd.DataFrame(rows)

"""The summary printed at the end of a run: per model and cost source, the recommended calibrated
operating point, chosen on val and reported on test.

The choice reads the val rows only: among the calibrated points of the early-exit policies
(baselines and bounds such as the oracle are never candidates), those whose val accuracy is within
:data:`ACCURACY_SLACK` of the final-only baseline's val accuracy, the one with the lowest expected
latency on val (expected MACs where the cost source has no latency); ties go to the higher val
accuracy, then to table order. The summary then shows the *test* row of that same operating point
(same model, policy, confidence, calibration and thresholds) beside its val accuracy, and the
final-only baseline's test row. Relabelling the test split can change the numbers shown, never
which point is shown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eebench.evaluation.pareto import identity_columns, is_reference

ACCURACY_SLACK = 0.01
"""How far below the final-only val accuracy a recommended point may be (absolute, 0.01 = 1 point)."""

_NOT_CALIBRATED = ("sweep", "")


def pick_operating_points(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per model and cost source: the chosen point's identity (``model``, ``family``,
    ``cost_source``, ``policy``, ``confidence``, ``calibration``, ``thresholds``), ``chosen_by``
    (the val cost column it minimised), its val row's ``val_accuracy`` and ``val_cost``, and its
    test row's ``accuracy``, ``expected_macs``, ``expected_latency_ms`` (NaN where the run has no
    test row for it), with the final-only baseline's test ``final_accuracy``, ``final_macs`` and
    ``final_latency_ms``."""
    columns = [
        "model",
        "family",
        "cost_source",
        "policy",
        "confidence",
        "calibration",
        "thresholds",
        "chosen_by",
        "val_accuracy",
        "val_cost",
        "accuracy",
        "expected_macs",
        "expected_latency_ms",
        "final_accuracy",
        "final_macs",
        "final_latency_ms",
    ]
    if ops.empty or "split" not in ops.columns:
        return pd.DataFrame(columns=columns)
    keys = [k for k in identity_columns(ops) if k != "split"]
    val = ops[ops["split"] == "val"]
    test = ops[ops["split"] == "test"].drop_duplicates(subset=keys).set_index(keys)
    rows = []
    for (model, source), g in val.groupby(["model", "cost_source"], sort=False):
        final_val = g[g["policy"] == "final-only"]
        cal = g[~g["calibration"].isin(_NOT_CALIBRATED) & ~is_reference(g)]
        if cal.empty:
            continue
        if len(final_val):
            ok = cal[cal["accuracy"] >= float(final_val["accuracy"].iloc[0]) - ACCURACY_SLACK]
        else:
            ok = cal
        pool = ok if len(ok) else cal
        key = (
            "expected_latency_ms" if pool["expected_latency_ms"].notna().any() else "expected_macs"
        )
        best = pool.sort_values(
            [key, "accuracy"], ascending=[True, False], kind="mergesort", na_position="last"
        ).iloc[0]
        ident = tuple(best[k] for k in keys)
        chosen = test.loc[ident] if ident in test.index else None
        final = test[
            (test.index.get_level_values("model") == model)
            & (test.index.get_level_values("cost_source") == source)
            & (test.index.get_level_values("policy") == "final-only")
        ]

        def got(row: pd.Series | None, col: str) -> float:
            return float(row[col]) if row is not None else float("nan")

        first_final = final.iloc[0] if len(final) else None
        rows.append(
            {
                "model": model,
                "family": best["family"],
                "cost_source": source,
                "policy": best["policy"],
                "confidence": best["confidence"],
                "calibration": best["calibration"],
                "thresholds": best["thresholds"],
                "chosen_by": key,
                "val_accuracy": float(best["accuracy"]),
                "val_cost": float(best[key]),
                "accuracy": got(chosen, "accuracy"),
                "expected_macs": got(chosen, "expected_macs"),
                "expected_latency_ms": got(chosen, "expected_latency_ms"),
                "final_accuracy": got(first_final, "accuracy"),
                "final_macs": got(first_final, "expected_macs"),
                "final_latency_ms": got(first_final, "expected_latency_ms"),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def summary_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The printed summary: per model and cost source the point :func:`pick_operating_points`
    chose on val, with its val accuracy and its test accuracy, expected MACs (analytic) and
    expected latency, next to the final-only baseline on test (the plain network: every stage and
    the final head only, a cascade's last member alone; its MACs and latency are the plain
    network's, not the cumulative cost of the final exit)."""
    picks = pick_operating_points(tables.get("operating_points", pd.DataFrame()))
    if picks.empty:
        return pd.DataFrame()

    def r(values: pd.Series, scale: float = 1.0) -> list[float]:
        return [round(float(v) / scale, 4) if np.isfinite(v) else float("nan") for v in values]

    return pd.DataFrame(
        {
            "model": picks["model"],
            "family": picks["family"],
            "cost source": picks["cost_source"],
            "policy": picks["policy"] + "/" + picks["confidence"],
            "calibration": picks["calibration"],
            "thresholds": picks["thresholds"],
            "val acc": r(picks["val_accuracy"]),
            "test acc": r(picks["accuracy"]),
            "final-only acc": r(picks["final_accuracy"]),
            "exp. MMACs (analytic)": r(picks["expected_macs"], 1e6),
            "final-only MMACs": r(picks["final_macs"], 1e6),
            "exp. latency ms": r(picks["expected_latency_ms"]),
            "final-only ms": r(picks["final_latency_ms"]),
        }
    )

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

import re

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


_PER_MODEL_BUDGET = re.compile(r"^(budget|budgeted-batch)-[0-9.e+-]+-macs$")


def target_group(calibration: str) -> str:
    """The calibration target a name stands for across models: a MAC budget is a fraction of each
    model's own plain network, so ``budget-1.52e+05-macs`` (one model) and
    ``budget-2.5e+05-macs`` (another) are the same target, ``budget (per model)``; other names
    are targets as they are."""
    m = _PER_MODEL_BUDGET.match(str(calibration))
    return f"{m.group(1)} (per model)" if m else str(calibration)


HEADLINE_COLUMNS = [
    "cost_source",
    "target",
    "calibration",
    "model",
    "family",
    "policy",
    "confidence",
    "thresholds",
    "chosen_by",
    "rule",
    "reference_val_accuracy",
    "val_accuracy",
    "val_cost",
    "accuracy",
    "expected_macs",
    "expected_latency_ms",
    "expected_energy_mj",
    "energy_source",
    "final_accuracy",
    "final_macs",
    "final_latency_ms",
    "final_energy_mj",
]


def pick_per_target(ops: pd.DataFrame) -> pd.DataFrame:
    """The report's headline: one row per cost source and calibration target, the operating point
    recommended across every model and policy, chosen on val and reported on test.

    Candidates are the calibrated points of early-exit policies with that target
    (:func:`target_group`: a MAC budget is one target across models; baselines and bounds never). The accuracy reference is the best final-only val accuracy among the models of
    the cost source (the most accurate plain network); among candidates whose val accuracy is
    within :data:`ACCURACY_SLACK` of it, the one with the lowest val expected latency (expected
    MACs where the source has no latency) wins, ties to the higher val accuracy, then table order.
    Where no candidate comes that close, the most accurate on val wins (``rule`` says which).
    Each row carries the chosen point's test row (``accuracy``, ``expected_*``) and the test row
    of its model's final-only baseline (``final_*``, the plain network). Relabelling the test
    split changes the numbers shown, never which point is shown.
    """
    if ops.empty or "split" not in ops.columns:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    if "cost_source" not in ops.columns:  # analytic costs only: one source, MACs
        ops = ops.assign(cost_source="")
    keys = [k for k in identity_columns(ops) if k != "split"]
    val = ops[ops["split"] == "val"]
    test = ops[ops["split"] == "test"].drop_duplicates(subset=keys).set_index(keys)
    reference = ~val["calibration"].isin(_NOT_CALIBRATED) & ~is_reference(val)
    rows = []
    for source, g in val.groupby("cost_source", sort=False):
        finals = g[g["policy"] == "final-only"]["accuracy"]
        ref = float(finals.max()) if len(finals) else float("nan")
        cands = g[reference.loc[g.index]]
        groups = cands["calibration"].map(target_group)
        for target, cand in cands.groupby(groups, sort=False):
            ok = cand[cand["accuracy"] >= ref - ACCURACY_SLACK] if np.isfinite(ref) else cand
            if len(ok):
                pool = ok
                rule = (
                    f"cheapest on val within {100 * ACCURACY_SLACK:g} point of the most accurate "
                    "plain network"
                )
            else:
                pool = cand[cand["accuracy"] == cand["accuracy"].max()]
                rule = (
                    f"no point within {100 * ACCURACY_SLACK:g} point of the most accurate plain "
                    "network on val: the most accurate"
                )
            cost = (
                "expected_latency_ms"
                if "expected_latency_ms" in pool and pool["expected_latency_ms"].notna().any()
                else "expected_macs"
            )
            best = pool.sort_values(
                [cost, "accuracy"], ascending=[True, False], kind="mergesort", na_position="last"
            ).iloc[0]
            ident = tuple(best[k] for k in keys)
            chosen = test.loc[ident] if ident in test.index else None
            final = test[
                (test.index.get_level_values("model") == best["model"])
                & (test.index.get_level_values("cost_source") == source)
                & (test.index.get_level_values("policy") == "final-only")
            ]
            plain = final.iloc[0] if len(final) else None

            def got(row: pd.Series | None, col: str) -> float:
                if row is None or col not in row.index:
                    return float("nan")
                return float(row[col])

            rows.append(
                {
                    "cost_source": source,
                    "target": target,
                    "calibration": best["calibration"],
                    "model": best["model"],
                    "family": best["family"],
                    "policy": best["policy"],
                    "confidence": best["confidence"],
                    "thresholds": best["thresholds"],
                    "chosen_by": cost,
                    "rule": rule,
                    "reference_val_accuracy": ref,
                    "val_accuracy": float(best["accuracy"]),
                    "val_cost": float(best[cost]),
                    "accuracy": got(chosen, "accuracy"),
                    "expected_macs": got(chosen, "expected_macs"),
                    "expected_latency_ms": got(chosen, "expected_latency_ms"),
                    "expected_energy_mj": got(chosen, "expected_energy_mj"),
                    "energy_source": _text(chosen, "energy_source"),
                    "final_accuracy": got(plain, "accuracy"),
                    "final_macs": got(plain, "expected_macs"),
                    "final_latency_ms": got(plain, "expected_latency_ms"),
                    "final_energy_mj": got(plain, "expected_energy_mj"),
                }
            )
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _text(row: pd.Series | None, col: str) -> str:
    if row is None or col not in row.index or pd.isna(row[col]):
        return ""
    return str(row[col])


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

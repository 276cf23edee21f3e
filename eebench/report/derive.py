"""What the figures and tables compute from a run's long-format tables.

Kept apart from the drawing so each quantity (a Pareto front, cumulative MACs
per exit, overthinking, per-stage latency statistics) is a plain DataFrame
that tests can check without looking at pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.evaluation.pareto import front_chosen_on_val, identity_columns, is_reference
from eebench.evaluation.pareto import pareto_front as _pareto_front

OP_KEYS = ["run", "model", "family", "split", "policy", "confidence", "thresholds", "calibration"]


def pareto_front(df: pd.DataFrame, cost: str, quality: str) -> pd.DataFrame:
    """Points not dominated by a cheaper-or-equal point of higher-or-equal quality, by cost;
    baselines and bounds (oracle, aggregation, final-only) are never on it."""
    return _pareto_front(df, cost, quality)


def choice_points(ops: pd.DataFrame) -> pd.DataFrame:
    """Operating points of early-exit policies: everything a front or a pick may contain."""
    return ops if ops.empty else ops[~is_reference(ops)]


def reference_points(ops: pd.DataFrame) -> pd.DataFrame:
    """Baseline and bound rows, drawn beside the fronts and never chosen."""
    return ops if ops.empty else ops[is_reference(ops)]


def reference_role(policy: str) -> str:
    """'bound' for a reference that reads the labels (the oracle), else 'baseline'."""
    from eebench.policies import POLICIES

    try:
        reads_labels = bool(POLICIES.get(policy).needs_labels)
    except KeyError:  # a policy this installation does not know: a run from elsewhere
        reads_labels = policy == "oracle"
    return "bound" if reads_labels else "baseline"


def front_for_display(
    ops: pd.DataFrame,
    cost: str,
    quality: str,
    by: Sequence[str],
    split: str,
    ignore: Sequence[str] = (),
) -> pd.DataFrame:
    """The front per ``by`` group as a figure shows it on ``split``: found on val, and for the
    test split drawn at the test values of the same operating points (see
    :func:`eebench.evaluation.pareto.front_chosen_on_val`). ``ignore``: identity columns not to
    match val and test on (``cost_source`` where one row per point was kept). Empty when the run
    has no val rows."""
    ops = ops.dropna(subset=[cost, quality])
    if ops.empty or not (ops["split"] == "val").any():
        return ops.iloc[0:0]
    keys = [k for k in identity_columns(ops) if k not in ("split", *by, *ignore)]
    if split == "val":
        val = ops[ops["split"] == "val"]
        groups = val.groupby(list(by), sort=False) if by else [((), val)]
        frames = [pareto_front(grp, cost, quality) for _, grp in groups]
        return pd.concat(frames, ignore_index=True) if frames else val.iloc[0:0]
    return front_chosen_on_val(ops, cost, quality, by=by, keys=[*by, *keys])


def policy_label(policy: str, confidence: str) -> str:
    """'threshold (max_softmax)' unless the confidence measure is already in the policy name."""
    if not confidence or confidence in policy:
        return policy
    return f"{policy} ({confidence})"


def unique_points(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per operating point (the table repeats each point once per cost source)."""
    if ops.empty:
        return ops
    keys = [k for k in OP_KEYS if k in ops.columns]
    return ops.drop_duplicates(subset=keys).reset_index(drop=True)


def calibrated(ops: pd.DataFrame) -> pd.DataFrame:
    """Operating points chosen by a calibration target (not plain sweep points)."""
    if ops.empty:
        return ops
    return ops[(ops["calibration"] != "sweep") & (ops["calibration"] != "")]


def exit_fraction_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.startswith("exit_frac_") and c[10:].isdigit()]
    return sorted(cols, key=lambda c: int(c[10:]))


def pick_split(df: pd.DataFrame, preferred: str = "test") -> tuple[pd.DataFrame, str]:
    """Rows of the preferred split, or of whichever split exists (a partial run may lack test)."""
    if df.empty:
        return df, preferred
    if (df["split"] == preferred).any():
        return df[df["split"] == preferred], preferred
    other = str(df["split"].iloc[0])
    return df[df["split"] == other], other


def cumulative_macs(stage_costs: pd.DataFrame) -> pd.DataFrame:
    """Analytic MACs to reach each exit: all stages <= i plus all exit heads <= i.

    Returns columns run, model, exit, cumulative_macs.
    """
    cols = ["run", "model", "exit", "cumulative_macs"]
    if stage_costs.empty:
        return pd.DataFrame(columns=cols)
    macs = stage_costs[
        (stage_costs["metric"] == "macs") & (stage_costs["source_kind"] == "analytic")
    ]
    rows = []
    for (run, model), grp in macs.groupby(["run", "model"], sort=False):
        stage = grp[grp["part"] == "stage"].groupby("index")["value"].sum()
        head = grp[grp["part"] == "exit"].groupby("index")["value"].sum()
        if head.empty:
            continue
        for i in sorted(int(j) for j in head.index):
            total = stage[stage.index <= i].sum() + head[head.index <= i].sum()
            rows.append((run, model, i, float(total)))
    return pd.DataFrame(rows, columns=cols)


def per_exit_accuracy(exits: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of every exit on its own (each sample classified by that exit)."""
    if exits.empty:
        return pd.DataFrame(columns=["run", "model", "exit", "accuracy", "n"])
    grp = exits.groupby(["run", "model", "exit"], sort=False)["correct"]
    out = grp.agg(accuracy="mean", n="size").reset_index()
    out["exit"] = out["exit"].astype(int)
    return out


def overthinking(exits: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Fraction of samples that an earlier exit gets right but the final exit gets wrong.

    With ``by`` (e.g. ``difficulty``), the fraction is given per value of that column.
    """
    keys = ["run", "model"] + ([by] if by else [])
    cols = [*keys, "overthinking", "final_wrong", "n"]
    if exits.empty:
        return pd.DataFrame(columns=cols)
    df = exits.copy()
    df["correct"] = df["correct"].astype(float) > 0.5
    df["exit"] = df["exit"].astype(int)
    last = df.groupby(["run", "model"])["exit"].transform("max")
    df["is_final"] = df["exit"] == last
    sample_keys = ["run", "model", "sample_id"]
    final = df[df["is_final"]].set_index(sample_keys)["correct"]
    earlier = df[~df["is_final"]].groupby(sample_keys)["correct"].any()
    per_sample = pd.DataFrame({"final_correct": final})
    per_sample["earlier_correct"] = earlier.reindex(per_sample.index).fillna(False).astype(bool)
    per_sample["overthinking"] = per_sample["earlier_correct"] & ~per_sample["final_correct"]
    per_sample["final_wrong"] = ~per_sample["final_correct"]
    per_sample = per_sample.reset_index()
    if by:
        meta = df[df["is_final"]][[*sample_keys, by]]
        per_sample = per_sample.merge(meta, on=sample_keys, how="left")
    out = (
        per_sample.groupby(keys, sort=False)
        .agg(
            overthinking=("overthinking", "mean"),
            final_wrong=("final_wrong", "mean"),
            n=("overthinking", "size"),
        )
        .reset_index()
    )
    return out[cols]


def difficulty_bins(values: pd.Series, max_levels: int = 6) -> pd.Series:
    """Categorical difficulty as is; a continuous one in quantile bins (labelled by range)."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > max_levels:
        return pd.qcut(numeric, q=4, duplicates="drop").astype(str)
    return values.astype(str)


def part_order(part: str, index: int) -> tuple[int, int]:
    """Execution order: stage 0, exit 0, stage 1, exit 1, ..."""
    return int(index), 0 if part == "stage" else 1


def latency_summary(samples: pd.DataFrame, stage_costs: pd.DataFrame) -> pd.DataFrame:
    """Per measured part: median and quartiles, from the raw samples where they exist.

    Falls back to the statistics in ``stage_costs`` (median +- IQR / 2) for parts
    whose raw samples are not in the run.
    """
    keys = ["run", "model", "part", "index", "backend", "threads", "batch_size"]
    cols = [*keys, "median_ms", "q25_ms", "q75_ms", "n", "from_samples"]
    rows = []
    if not samples.empty:
        s = samples.dropna(subset=["ms"])
        for key, grp in s.groupby(keys, sort=False):
            ms = grp["ms"].to_numpy(float)
            q25, med, q75 = np.percentile(ms, [25, 50, 75])
            rows.append((*key, med, q25, q75, len(ms), True))
    have = {r[: len(keys)] for r in rows}
    if not stage_costs.empty:
        meas = stage_costs[stage_costs["source_kind"] == "measured"]
        wide = meas.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
        for key, row in wide.iterrows():
            if key in have or pd.isna(row.get("latency_median_ms", np.nan)):
                continue
            med = float(row["latency_median_ms"])
            half = float(row.get("latency_iqr_ms", np.nan)) / 2
            half = 0.0 if np.isnan(half) else half
            rows.append((*key, med, med - half, med + half, np.nan, False))
    out = pd.DataFrame(rows, columns=cols)
    if not out.empty:
        out["index"] = out["index"].astype(int)
    return out


def source_details(stage_costs: pd.DataFrame) -> dict[str, str]:
    """For each cost source, how it was obtained (device, threads, batch size) in words."""
    out: dict[str, str] = {}
    if stage_costs.empty:
        return out
    for source, grp in stage_costs.groupby("source", sort=False):
        kind = str(grp["source_kind"].iloc[0])
        if kind == "measured":
            bits = []
            for col, name in (
                ("device", "device"),
                ("threads", "threads"),
                ("batch_size", "batch"),
            ):
                vals = sorted({str(_intish(v)) for v in grp[col] if str(v) not in ("", "nan")})
                if vals:
                    bits.append(f"{name} {'/'.join(vals)}")
            out[str(source)] = ", ".join(bits)
        elif kind == "estimated":
            out[str(source)] = "estimated from a hardware profile, not measured"
    return out


def _intish(v: object) -> object:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v

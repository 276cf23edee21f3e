"""The report's energy tables: net energy per stage and head with gross beside it, the meter
and device behind every number, and the energy validation of operating points.

Net energy (idle power of the same run subtracted) is the primary figure, as in the cost
vectors; gross (idle included) is shown beside it so a reader sees how much of a part's
energy is the device idling. Each row names its meter (``measured:<backend>+<meter>:<domain>``
or ``estimated:<profile>...``) and device, and how the meter was read (update period, calls
per window), so a number from a coarse meter is recognisable.
"""

from __future__ import annotations

import pandas as pd

from eebench.report.data import RunData, combined
from eebench.report.tables import fmt_num

ENERGY_METRICS = (
    "energy_net_mj",
    "energy_net_ci_low_mj",
    "energy_net_ci_high_mj",
    "energy_gross_mj",
    "idle_power_w",
    "energy_update_period_ms",
    "energy_calls_per_window",
)


def _interval(value: float, low: float, high: float) -> str:
    text = fmt_num(value)
    if text and fmt_num(low) and fmt_num(high):
        return f"{text} [{fmt_num(low)}, {fmt_num(high)}]"
    return text


def energy_table(runs: list[RunData]) -> pd.DataFrame:
    """Per model, part, backend and meter: net energy (95% interval), gross, idle power."""
    costs = combined(runs, "stage_costs")
    if costs.empty or "metric" not in costs.columns:
        return pd.DataFrame()
    rows = costs[costs["metric"].isin(ENERGY_METRICS)]
    if rows.empty:
        return pd.DataFrame()
    keys = ["run", "model", "backend", "device", "source", "threads", "batch_size", "part", "index"]
    wide = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(ENERGY_METRICS)).reset_index()
    wide["order"] = wide["part"].map({"stage": 0, "exit": 1}).fillna(2)
    wide = wide.sort_values(["run", "model", "backend", "source", "index", "order"])
    out = pd.DataFrame(
        {
            "run": wide["run"],
            "model": wide["model"],
            "part": wide["part"] + " " + wide["index"].astype(int).astype(str),
            "backend": wide["backend"],
            "device": wide["device"],
            "threads": wide["threads"].map(lambda v: fmt_num(v, 6)),
            "batch size": wide["batch_size"].map(lambda v: fmt_num(v, 6)),
            "net energy [mJ/sample] (95% CI)": [
                _interval(v, lo, hi)
                for v, lo, hi in zip(
                    wide["energy_net_mj"],
                    wide["energy_net_ci_low_mj"],
                    wide["energy_net_ci_high_mj"],
                    strict=True,
                )
            ],
            "gross energy [mJ/sample]": wide["energy_gross_mj"].map(fmt_num),
            "idle power [W]": wide["idle_power_w"].map(fmt_num),
            "meter (source)": wide["source"],
            "meter update period [ms]": wide["energy_update_period_ms"].map(fmt_num),
            "calls per window": wide["energy_calls_per_window"].map(lambda v: fmt_num(v, 9)),
        }
    )
    return out.drop(columns="run") if out["run"].nunique() == 1 else out.reset_index(drop=True)


def energy_validation_table(runs: list[RunData]) -> pd.DataFrame:
    """Calibrated operating points: predicted vs measured net energy of a true early-exit run."""
    val = combined(runs, "validation")
    if val.empty or "measured_energy_mj" not in val.columns:
        return pd.DataFrame()
    val = val[val["measured_energy_mj"].notna()]
    if val.empty:
        return pd.DataFrame()
    out = pd.DataFrame(
        {
            "run": val["run"],
            "model": val["model"],
            "backend": val["backend"],
            "policy": val["policy"],
            "calibration": val["calibration"],
            "predicted net [mJ/sample] (from measured parts)": val["predicted_energy_mj"].map(
                fmt_num
            ),
            "measured net [mJ/sample] (true early exit, 95% CI)": [
                _interval(v, lo, hi)
                for v, lo, hi in zip(
                    val["measured_energy_mj"],
                    val["measured_energy_ci_low_mj"],
                    val["measured_energy_ci_high_mj"],
                    strict=True,
                )
            ],
            "measured gross [mJ/sample]": val["measured_energy_gross_mj"].map(fmt_num),
            "measured / predicted": val["energy_ratio"].map(fmt_num),
            "meter (source)": val["energy_source"],
        }
    )
    return out.drop(columns="run") if out["run"].nunique() == 1 else out.reset_index(drop=True)

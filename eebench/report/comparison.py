"""A two-run report's comparison: what changed from run A to run B, per model, operating point and
part, with the ratio's interval and the verdict of :func:`eebench.results.compare.compare_runs`
(the block-bootstrap test ``eebench compare`` runs; nothing is re-tested here), and a figure of
the changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eebench.report.data import RunData
from eebench.report.figures import ReportFigure, _set_log
from eebench.report.render import Section

BAND = 0.10
ALPHA = 0.05
ACCURACY_BAND = 0.01
VERDICT_COLORS = {
    "regression": "#c0392b",
    "improvement": "#1e8449",
    "within band": "#7f8c8d",
    "not significant": "#b7950b",
}


def compare_table(runs: list[RunData]) -> pd.DataFrame:
    """``compare_runs(A, B)`` of the report's first two runs (empty for a one-run report)."""
    from eebench.results.compare import compare_runs

    if len(runs) != 2:
        return pd.DataFrame()
    return compare_runs(
        runs[0].path, runs[1].path, band=BAND, alpha=ALPHA, accuracy_band=ACCURACY_BAND
    )


def _ratio_text(row: pd.Series) -> str:
    if pd.isna(row.get("ratio")):
        return ""
    if pd.isna(row.get("ci_low")):
        return f"{row['ratio']:.3f}"
    return f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def changes_display(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model, operating point or part and metric: A, B, B/A with its interval (latency)
    or the change in points (accuracy, exit shares), and the verdict."""
    if table.empty:
        return pd.DataFrame()
    rows = []
    for _, r in table.iterrows():
        kind = r["kind"]
        if kind == "latency" or kind == "machine":
            a = "" if pd.isna(r["a"]) else f"{r['a']:.4g}"
            b = "" if pd.isna(r["b"]) else f"{r['b']:.4g}"
            change = _ratio_text(r)
            probe = r.get("machine_ratio")
            if kind == "latency" and probe is not None and not pd.isna(probe):
                change += f" (÷ probe {probe:.3g})"
            what = "median latency [ms] (measured)"
        else:
            a = "" if pd.isna(r["a"]) else f"{100 * r['a']:.2f}"
            b = "" if pd.isna(r["b"]) else f"{100 * r['b']:.2f}"
            change = "" if pd.isna(r["change"]) else f"{100 * r['change']:+.2f} pp"
            if kind == "accuracy" and not pd.isna(r.get("p_value")):
                change += f" (p = {r['p_value']:.3g})"
            what = f"{r['metric']} [%]"
        rows.append(
            {
                "model": r["model"],
                "operating point or part": r["item"],
                "metric": what,
                "A": a,
                "B": b,
                "B/A [interval] or change": change,
                "verdict": r["verdict"],
            }
        )
    out = pd.DataFrame(rows)
    # exit shares that did not move and accuracies that did not change say nothing: counted in
    # the intro instead; verdicts that matter first
    keep = ~(_unmoved_exit_share(table) | _unchanged_accuracy(table)).to_numpy()
    out = out[keep]
    rank = out["verdict"].map(VERDICT_ORDER).fillna(len(VERDICT_ORDER))
    return (
        out.assign(_r=rank)
        .sort_values("_r", kind="mergesort")
        .drop(columns="_r")
        .reset_index(drop=True)
    )


VERDICT_ORDER = {"regression": 0, "improvement": 1, "not significant": 2, "changed": 3}


def _unmoved_exit_share(table: pd.DataFrame) -> pd.Series:
    return (table["kind"] == "exit_fraction") & (table["verdict"] == "same")


def _unchanged_accuracy(table: pd.DataFrame) -> pd.Series:
    return (table["kind"] == "accuracy") & (table["change"] == 0)


def comparison_sections(runs: list[RunData], table: pd.DataFrame) -> list[Section]:
    if table.empty:
        return []
    same = int(_unmoved_exit_share(table).sum())
    unchanged = int(_unchanged_accuracy(table).sum())
    levels = table.loc[table["kind"] == "latency", "ci_level"].dropna()
    level = f"{levels.iloc[0]:.2%}" if len(levels) else "Bonferroni-adjusted"
    intro = (
        f"A = {runs[0].label}, B = {runs[1].label}, as 'eebench compare A B' judges them. "
        f"Latency: ratio of medians B/A with its {level} interval (circular block bootstrap of each "
        f"run's raw samples, Bonferroni over the parts, divided by the machine-speed probe where "
        f"both runs timed the same one through the parts' backend: 'B/A' is then relative to the "
        f"machine, and the probe rows show the machine's own change, or 'different probes'); a regression needs the whole interval above {1 + BAND:g}, an "
        f"improvement below {1 / (1 + BAND):.3g}. Accuracy at the calibrated test points: change "
        f"in percentage points, two-proportion z-test, band ±{100 * ACCURACY_BAND:g} point "
        f"({unchanged} point(s) with the same test accuracy in both runs are not listed). "
        f"Exit shares are listed where they moved more than {100 * ACCURACY_BAND:g} point "
        f"({same} did not)."
    )
    n_reg = int((table["verdict"] == "regression").sum())
    n_imp = int((table["verdict"] == "improvement").sum())
    title = f"Changes from A to B: {n_reg} regression(s), {n_imp} improvement(s)"
    return [Section(title, intro, changes_display(table))]


def changes_figure(runs: list[RunData], table: pd.DataFrame) -> ReportFigure:
    """Latency ratios B/A per part with their intervals (one panel per model, one log scale for
    all), and accuracy changes per calibrated point: a forest plot, coloured by verdict."""
    from eebench.report.figures import NotDrawable

    lat = table[(table["kind"] == "latency") & table["ratio"].notna()]
    acc_all = table[(table["kind"] == "accuracy") & table["change"].notna()]
    acc = acc_all[acc_all["change"] != 0]  # unchanged points are counted, not drawn
    if lat.empty and acc_all.empty:
        raise NotDrawable("the two runs share no measured part and no calibrated point")
    models = list(dict.fromkeys([*lat["model"], *acc_all["model"]]))
    n_lat = [int((lat["model"] == m).sum()) for m in models]
    n_acc = [int((acc["model"] == m).sum()) for m in models]
    height = 1.2 + 0.24 * sum(max(a, c, 1) for a, c in zip(n_lat, n_acc))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, max(3.0, height)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        len(models), 2, height_ratios=[max(a, c, 1) for a, c in zip(n_lat, n_acc)]
    )
    lo_all = np.nanmin([*lat["ci_low"], *lat["ratio"], 1 / (1 + BAND)]) if len(lat) else 0.8
    hi_all = np.nanmax([*lat["ci_high"], *lat["ratio"], 1 + BAND]) if len(lat) else 1.25
    span = (lo_all / 1.05, hi_all * 1.05)
    acc_max = max(0.5, float(np.nanmax(np.abs(100 * acc["change"]))) * 1.15) if len(acc) else 1.0
    first_lat = first_acc = None
    for k, model in enumerate(models):
        ax = fig.add_subplot(grid[k, 0], sharex=first_lat)
        first_lat = first_lat or ax
        sub = lat[lat["model"] == model]
        ax.axvspan(1 / (1 + BAND), 1 + BAND, color="grey", alpha=0.15, linewidth=0)
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, (_, r) in enumerate(sub.iterrows()):
            color = VERDICT_COLORS.get(str(r["verdict"]), "black")
            lo = r["ci_low"] if not pd.isna(r["ci_low"]) else r["ratio"]
            hi = r["ci_high"] if not pd.isna(r["ci_high"]) else r["ratio"]
            ax.plot([lo, hi], [y, y], color=color, linewidth=2)
            ax.plot([r["ratio"]], [y], "o", color=color, markersize=5)
        ax.set_yticks(range(len(sub)), [str(i).split(" (")[0] for i in sub["item"]])
        ax.set_ylim(len(sub) - 0.5 if len(sub) else 0.5, -0.5)
        _set_log(ax)
        ax.set_xlim(*span)
        ax.set_ylabel(model, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        if k < len(models) - 1:
            ax.tick_params(axis="x", labelbottom=False)
        else:
            ax.set_xlabel(
                "Median latency B/A [ratio] (measured; ÷ the machine-speed probe's B/A where\n"
                "both runs timed it; the compare test's interval; log scale)"
            )
        ax2 = fig.add_subplot(grid[k, 1], sharex=first_acc)
        first_acc = first_acc or ax2
        sub = acc[acc["model"] == model]
        ax2.axvspan(-100 * ACCURACY_BAND, 100 * ACCURACY_BAND, color="grey", alpha=0.15, lw=0)
        ax2.axvline(0.0, color="black", linewidth=0.8)
        for y, (_, r) in enumerate(sub.iterrows()):
            color = VERDICT_COLORS.get(str(r["verdict"]), "black")
            ax2.plot([100 * r["change"]], [y], "o", color=color, markersize=5)
        ax2.set_yticks(range(len(sub)), [_short_point(i) for i in sub["item"]])
        same = int(((acc_all["model"] == model) & (acc_all["change"] == 0)).sum())
        if same:
            ax2.text(
                0.5,
                0.02 if len(sub) else 0.5,
                f"{same} calibrated point(s) unchanged",
                transform=ax2.transAxes,
                ha="center",
                va="bottom" if len(sub) else "center",
                fontsize=8,
                color="dimgrey",
            )
        ax2.set_ylim(len(sub) - 0.5 if len(sub) else 0.5, -0.5)
        ax2.set_xlim(-acc_max, acc_max)
        ax2.tick_params(axis="y", labelsize=8)
        if k < len(models) - 1:
            ax2.tick_params(axis="x", labelbottom=False)
        else:
            ax2.set_xlabel("Test accuracy B - A [percentage points]")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", color=c, linestyle="-", label=v)
        for v, c in VERDICT_COLORS.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    title = f"What changed from A ({runs[0].label}) to B ({runs[1].label})"
    fig.suptitle(title)
    return ReportFigure(
        "changes",
        title,
        (
            "Left: each measured part's median latency ratio B/A with its interval (the compare "
            f"test's), grey band ±{100 * BAND:g}% (no verdict inside). Right: test accuracy change "
            "at each calibrated operating point, grey band ±1 point. Colour: the verdict."
        ),
        fig,
    )


def _short_point(item: str) -> str:
    text = str(item)
    return text if len(text) <= 42 else text[:40] + "…"

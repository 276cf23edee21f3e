"""Early exit under load in the report: p99 latency vs QPS per batching strategy and deployment
mode against the plain network, and the largest QPS that holds the latency bound.

Both read the ``serving`` table (MLCommons LoadGen's Server runs: the target QPS list and the
search probes). A point LoadGen did not judge VALID is drawn hollow: its percentile may not be
claimed (too few queries for the early-stopping rule) or broke the bound.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd

from eebench.report.data import RunData, combined
from eebench.report.figures import NotDrawable, Palette, ReportFigure, _grid, _new_figure

PLAIN = "plain"


def _server_rows(runs: list[RunData]) -> pd.DataFrame:
    df = combined(runs, "serving")
    if df.empty:
        raise NotDrawable("no serving runs (the suite has no 'serving:' section)")
    df = df[df["scenario"] == "Server"].copy()
    if df.empty:
        raise NotDrawable("no Server-scenario runs in the serving table")
    for col in ("target_qps", "achieved_qps", "latency_p99_ms", "latency_bound_ms"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["valid"] = df["loadgen_valid"].astype(str).str.lower().isin(("true", "1"))
    return df


def serving_curves(runs: list[RunData], pal: Palette) -> ReportFigure:
    """p99 latency (LoadGen, measured) vs target QPS, one panel per model and backend."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    df = _server_rows(runs)
    df["series"] = df["strategy"] + " · " + df["mode"]
    panels = list(dict.fromkeys(zip(df["model"], df["backend"])))
    strategies = sorted(df["strategy"].unique(), key=lambda s: (s == PLAIN, s))
    colors = dict(zip(strategies, sns.color_palette("colorblind", len(strategies))))
    colors[PLAIN] = (0.15, 0.15, 0.15)
    modes = sorted(df["mode"].unique())
    styles = dict(zip(modes, ("-", "--", ":", "-.")))
    nrows, ncols = _grid(len(panels), 2)
    fig, axes = _new_figure(nrows, ncols, 5.0, 3.4)
    for ax, (model, backend) in zip(axes.flat, panels):
        sub = df[(df["model"] == model) & (df["backend"] == backend)]
        for (strategy, mode), s in sub.groupby(["strategy", "mode"], sort=False):
            s = s.sort_values("target_qps")
            c = colors[strategy]
            ax.plot(
                s["target_qps"],
                s["latency_p99_ms"],
                linestyle=styles[mode],
                color=c,
                linewidth=2.2 if strategy == PLAIN else 1.4,
                label=f"{strategy} · {mode}",
            )
            valid = s["valid"].to_numpy(bool)
            ax.scatter(s["target_qps"][valid], s["latency_p99_ms"][valid], color=c, s=18)
            ax.scatter(
                s["target_qps"][~valid],
                s["latency_p99_ms"][~valid],
                facecolors="none",
                edgecolors=c,
                s=18,
            )
        bounds = sub["latency_bound_ms"].dropna().unique()
        for b in bounds:
            ax.axhline(
                b, color="red", linewidth=0.8, linestyle=":", label=f"latency bound {b:g} ms"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, no crowded minor-tick labels
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{model} on {backend}", fontsize=9)
        ax.set_xlabel("Target QPS (Server scenario, Poisson arrivals)")
        ax.set_ylabel("p99 latency [ms]\n(measured by LoadGen)")
    # one legend for every panel, below them (inside a panel it would hide curves)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    legend_cols = min(3 * ncols, max(1, len(handles) // 4 + 1))
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="outside lower center",
        ncols=legend_cols,
        fontsize=7,
        title="strategy · mode",
        title_fontsize=7,
    )
    legend_rows = -(-len(handles) // legend_cols)
    fig.set_figheight(fig.get_figheight() + 0.16 * legend_rows + 0.3)  # panels keep their height
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    title = "Early exit under load: p99 latency vs QPS per strategy and mode, vs the plain network"
    fig.suptitle(textwrap.fill(title, width=50 * ncols))
    return ReportFigure(
        "serving_p99_vs_qps",
        title,
        (
            "MLCommons LoadGen Server runs of the calibrated operating point for each batching "
            "strategy and deployment mode, and the plain network (no exits, thick dark line) on "
            "the same batches. Filled: LoadGen judged the run VALID; hollow: it did not (the "
            "percentile may not be claimed or broke the bound). Dotted red: the latency bound."
        ),
        fig,
    )


def max_qps_table(runs: list[RunData]) -> pd.DataFrame:
    """The largest QPS within the bound per model, backend, strategy and mode, with the plain
    network's beside it (same model and backend; same mode where the plain network ran in it,
    else per stage) and their ratio."""
    try:
        df = _server_rows(runs)
    except NotDrawable:
        return pd.DataFrame()
    if "max_qps_within_bound" not in df.columns:
        return pd.DataFrame()
    df = df[df["search"].astype(str).str.lower().isin(("true", "1"))].copy()
    if df.empty:
        return pd.DataFrame()
    df["max_qps_within_bound"] = pd.to_numeric(df["max_qps_within_bound"], errors="coerce")
    keys = ["run", "model", "backend", "mode", "strategy"]
    best = df.groupby(keys, sort=False).agg(
        max_qps=("max_qps_within_bound", "first"),
        bound_ms=("latency_bound_ms", "first"),
        percentile=("percentile", "first"),
        at_upper_end=("max_qps_at_upper_end", "first"),
        probes=("target_qps", "size"),
    )
    best = best.reset_index()
    # each row against the plain network of its own mode where it ran there (compiled: through
    # the compiled parts, so the saving is early exit's, not the compiler's), else per stage
    plain = best[best["strategy"] == PLAIN].set_index(["run", "model", "backend", "mode"])
    plain = plain["max_qps"]
    best["plain_max_qps"] = [
        float(plain[k]) if k in plain.index else float(plain.get((*k[:3], "per-stage"), np.nan))
        for k in zip(best["run"], best["model"], best["backend"], best["mode"])
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        best["vs_plain"] = best["max_qps"] / best["plain_max_qps"]
    return best


def max_qps_display(runs: list[RunData]) -> pd.DataFrame:
    """:func:`max_qps_table` as display strings with units in the headers."""
    from eebench.report.tables import fmt_num

    t = max_qps_table(runs)
    if t.empty:
        return t
    out = pd.DataFrame(
        {
            "model": t["model"],
            "backend": t["backend"],
            "mode": t["mode"],
            "strategy": t["strategy"],
            "max QPS within bound (measured, LoadGen Server)": [
                ("< lowest probed" if np.isnan(q) else fmt_num(q, 4))
                + (" (upper end)" if u else "")
                for q, u in zip(t["max_qps"], t["at_upper_end"].astype(str).str.lower() == "true")
            ],
            "bound": [f"p{p * 100:g} <= {b:g} ms" for p, b in zip(t["percentile"], t["bound_ms"])],
            "plain network max QPS": [fmt_num(v, 4) for v in t["plain_max_qps"]],
            "vs plain": [fmt_num(v, 3) for v in t["vs_plain"]],
            "probes": t["probes"],
        }
    )
    if len({str(r) for r in t["run"]}) > 1:
        out.insert(0, "run", t["run"])
    return out

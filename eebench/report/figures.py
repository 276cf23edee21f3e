"""The report's figures: one function per figure, drawn with seaborn on matplotlib's Agg canvas.

Each function takes the runs of a report and returns a :class:`ReportFigure`,
or raises :class:`NotDrawable` with the reason the runs cannot show it (a run
without validation, a partial run without operating points, ...), so the
report can say what is missing instead of showing an empty frame.

Figures never use pyplot (no global figure state): each is a
``matplotlib.figure.Figure`` on a ``FigureCanvasAgg``, styled inside an
``rc_context`` so nothing leaks into the caller's matplotlib settings.
Every axis says what its numbers are: analytic MACs, measured latency on a
named backend, or an estimate from a named hardware profile.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from eebench.report.data import RunData, combined
from eebench.report.derive import (
    calibrated,
    choice_points,
    cumulative_macs,
    difficulty_bins,
    exit_fraction_columns,
    front_for_display,
    latency_summary,
    overthinking,
    part_order,
    per_exit_accuracy,
    pick_split,
    policy_label,
    reference_points,
    reference_role,
    source_details,
    unique_points,
)
from eebench.suites.summary import target_group

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MACS_LABEL = "MACs (analytic; FLOPs = 2 x MACs)"
RUN_LINESTYLES = ("-", "--", ":", "-.")
ESTIMATED_FACE = "#f7f1e3"


class NotDrawable(Exception):
    """The runs hold no data for this figure; the message says which data is missing."""


@dataclass
class ReportFigure:
    """A drawn figure with the title and caption the HTML and Markdown pages show."""

    name: str
    title: str
    caption: str
    figure: Any = field(repr=False)  # matplotlib.figure.Figure

    def png(self, dpi: int = 100) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()


@dataclass
class Palette:
    """Colours and line styles shared by every figure, so a family or model looks the same throughout."""

    families: dict[str, tuple]
    models: dict[str, tuple]
    runs: list[str]

    @classmethod
    def for_runs(cls, runs: list[RunData]) -> Palette:
        import seaborn as sns

        ops = combined(runs, "operating_points")
        exits = combined(runs, "exits")
        costs = combined(runs, "stage_costs")
        families = sorted({f for f in ops["family"] if f})
        models = sorted({m for df in (ops, exits, costs) for m in df["model"] if m})
        fam_colors = sns.color_palette("colorblind", max(len(families), 1))
        model_colors = sns.color_palette(
            "tab10" if len(models) <= 10 else "husl", max(len(models), 1)
        )
        family_colors = dict(zip(families, fam_colors))
        model_colors_by_name = dict(zip(models, model_colors))
        family_of = ops.dropna(subset=["family"]).groupby("model")["family"].first().to_dict()
        if families and sorted(family_of) == models and len(set(family_of.values())) == len(models):
            # one model per family: a model wears its family's colour, so the family-coloured
            # figures and the model-coloured ones agree
            model_colors_by_name = {m: family_colors[family_of[m]] for m in models}
        return cls(
            families=family_colors,
            models=model_colors_by_name,
            runs=[r.label for r in runs],
        )

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    def linestyle(self, run: str) -> str:
        return (
            RUN_LINESTYLES[self.runs.index(run) % len(RUN_LINESTYLES)] if run in self.runs else "-"
        )

    def family(self, name: str) -> tuple:
        return self.families.get(name, (0.4, 0.4, 0.4))


def _rc() -> dict:
    import seaborn as sns

    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update(
        {"figure.dpi": 100, "savefig.dpi": 100, "legend.fontsize": 8, "legend.title_fontsize": 8}
    )
    return rc


def _new_figure(nrows: int, ncols: int, w: float, h: float) -> tuple[Figure, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return (n + ncols - 1) // ncols, ncols


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def wants_log(values: pd.Series) -> bool:
    """A log axis where the positive values span more than 30x."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    v = v[v > 0]
    return bool(len(v) and v.max() / v.min() > 30)


def _set_log(ax, axis: str = "x") -> None:
    """Log scale with plain-number labels on the decades only (no '3x10^4' minor labels that
    collide with their neighbours)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    # 1-2-5 steps: a span of less than a decade still gets labels to read the scale by
    which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    which.set_major_formatter(fmt)
    which.set_minor_formatter(NullFormatter())


def _maybe_log(ax, values: pd.Series, axis: str = "x") -> None:
    if wants_log(values):
        _set_log(ax, axis)


def _macs_axis(ax) -> None:
    """MAC counts as 10 k / 2 M / 1 G rather than a 1e7 offset; no minor labels on a log axis."""
    from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

    if ax.get_xscale() != "log":
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(EngFormatter(sep=" "))
    ax.xaxis.set_minor_formatter(NullFormatter())


def fit_titles(fig) -> None:
    """Wrap the figure's title and every panel title to the width they have, so none is
    clipped at the figure's edge."""
    import textwrap

    width_in = fig.get_figwidth()
    sup = fig._suptitle
    if sup is not None:
        chars = max(20, int(width_in * 72 / (sup.get_fontsize() * 0.62)))
        sup.set_text(textwrap.fill(sup.get_text(), chars))
    for ax in fig.axes:
        title = ax.title
        if not title.get_text():
            continue
        pos = ax.get_position()
        chars = max(12, int(pos.width * width_in * 72 / (title.get_fontsize() * 0.62)))
        lines = [textwrap.fill(line, chars) for line in title.get_text().split("\n")]
        title.set_text("\n".join(lines))


_BIG_INT = re.compile(r"\d{5,}")


def pretty(text: str) -> str:
    """Large integers inside labels (e.g. 'budget-13030000') in engineering form ('budget-13.0 M')."""
    return _BIG_INT.sub(lambda m: _eng(float(m.group())), text)


def _eng(value: float) -> str:
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:g}"


def point_label(policy: str, confidence: str, calibration: str) -> str:
    return f"{policy_label(policy, confidence)} · {pretty(calibration)}"


def _source_title(source: str, details: dict[str, str]) -> str:
    kind, _, name = source.partition(":")
    extra = details.get(source, "")
    if kind == "estimated":
        return f"estimated: {name}\n(from a hardware profile, not measured)"
    if kind == "measured":
        return f"measured: {name}" + (f"\n({extra})" if extra else "")
    return source


def _legend_outside(ax, handles=None, labels=None, title: str | None = None) -> None:
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ax.legend(
        handles,
        labels,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
        borderaxespad=0,
    )


def _figure_legend(fig, handles: list, labels: list[str], title: str | None = None) -> None:
    """One legend for all panels, right of them (constrained layout makes room)."""
    if handles:
        fig.legend(handles, labels, title=title, loc="outside right center", frameon=False)


REFERENCE_MARKERS = {"bound": "^", "baseline": "X"}
POLICY_MARKERS = {"oracle": "^", "final-only": "s", "aggregation": "X"}


def _reference_marker(policy: str, role: str) -> str:
    return POLICY_MARKERS.get(policy, REFERENCE_MARKERS[role])


def _tradeoff_panel(
    ax,
    pts: pd.DataFrame,
    cost: str,
    pal: Palette,
    front: pd.DataFrame | None = None,
    log: bool | None = None,
) -> list:
    """Sweep points, calibrated points (stars), baselines and bounds (their own markers, never on a
    front) and, per family and run, the Pareto front chosen on val (``front``, at the values of
    the split shown)."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    style = "run" if pal.multi_run else "model"
    choices = choice_points(pts)
    sweep = choices[choices["calibration"].isin(["sweep", ""])]
    shown = sweep if not sweep.empty else choices
    if not shown.empty:
        sns.scatterplot(
            data=shown,
            x=cost,
            y="accuracy_pct",
            hue="family",
            style=style,
            palette=pal.families,
            alpha=0.45,
            s=20,
            linewidth=0,
            ax=ax,
            legend="brief",
        )
    cal = calibrated(choices)
    for fam, grp in cal.groupby("family"):
        ax.scatter(
            grp[cost],
            grp["accuracy_pct"],
            marker="*",
            s=120,
            color=pal.family(fam),
            edgecolor="black",
            linewidth=0.6,
            zorder=5,
        )
    refs = reference_points(pts)
    roles: dict[str, str] = {}
    for (policy, fam), grp in refs.groupby(["policy", "family"]):
        role = roles.setdefault(str(policy), reference_role(str(policy)))
        ax.scatter(
            grp[cost],
            grp["accuracy_pct"],
            marker=_reference_marker(str(policy), role),
            s=60,
            facecolor="none" if role == "bound" else pal.family(fam),
            edgecolor=pal.family(fam) if role == "bound" else "black",
            linewidth=1.2 if role == "bound" else 0.5,
            zorder=6,
        )
    if front is not None:
        for (run, fam), grp in front.groupby(["run", "family"]):
            grp = grp.sort_values(cost)
            ax.step(
                grp[cost],
                grp["accuracy_pct"],
                where="post",
                color=pal.family(fam),
                linestyle=pal.linestyle(run),
                linewidth=1.5,
                marker="o",  # a one-point front is still seen
                markersize=3,
                zorder=4,
            )
    if wants_log(pts[cost]) if log is None else log:
        _set_log(ax)
    extra = [
        Line2D(
            [],
            [],
            marker="*",
            linestyle="",
            markersize=10,
            color="grey",
            markeredgecolor="black",
            label="calibrated point (val)",
        )
    ]
    for policy, role in sorted(roles.items()):
        bound = role == "bound"
        extra.append(
            Line2D(
                [],
                [],
                marker=_reference_marker(policy, role),
                linestyle="",
                markersize=7,
                color="grey",
                markerfacecolor="none" if bound else "grey",
                markeredgecolor="grey" if bound else "black",
                label=f"{policy} ({role}{', reads labels' if bound else ''})",
            )
        )
    if front is not None and not front.empty:
        for run in pal.runs if pal.multi_run else pal.runs[:1]:
            name = (
                f"Pareto front chosen on val ({run})"
                if pal.multi_run
                else "Pareto front per family (val)"
            )
            extra.append(Line2D([], [], color="grey", linestyle=pal.linestyle(run), label=name))
    return extra


def _swatches(palette: dict, order: list[str]) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="s", linestyle="", markersize=8, color=palette[h]) for h in order]


# ---------------------------------------------------------------------- figures
def accuracy_vs_macs(runs: list[RunData], pal: Palette) -> ReportFigure:
    ops = unique_points(combined(runs, "operating_points"))
    ops = ops.dropna(subset=["expected_macs", "accuracy"]).copy() if not ops.empty else ops
    if ops.empty:
        raise NotDrawable("no operating points with expected MACs (operating_points table empty)")
    ops["accuracy_pct"] = 100 * ops["accuracy"]
    pts, split = pick_split(ops)
    # one row per point was kept whatever its cost source: match val and test without it
    front = front_for_display(
        ops, "expected_macs", "accuracy_pct", ["run", "family"], split, ignore=["cost_source"]
    )
    fig, axes = _new_figure(1, 1, 7.5, 4.6)
    ax = axes[0, 0]
    extra = _tradeoff_panel(ax, pts, "expected_macs", pal, front)
    _macs_axis(ax)
    ax.set_xlabel(f"Expected {MACS_LABEL} per sample")
    ax.set_ylabel(f"Top-1 accuracy [%] ({split} split)")
    handles, labels = ax.get_legend_handles_labels()
    _legend_outside(ax, handles + extra, labels + [h.get_label() for h in extra])
    title = f"Accuracy vs expected MACs ({split} split; analytic cost)"
    fig.suptitle(title)
    return ReportFigure(
        "accuracy_vs_macs",
        title,
        (
            "Every operating point of every policy (small dots) with the Pareto front per family"
            + (" and run" if pal.multi_run else "")
            + ", found on the val split and drawn at the same operating points' "
            f"{split} values; stars are the points chosen by calibration on val. The oracle (a "
            "bound: it reads the labels) and the aggregation and final-only baselines have their "
            "own markers and are never on a front. MACs are counted analytically from the "
            "architecture (1 MAC = one multiply-add)."
        ),
        fig,
    )


def accuracy_vs_latency(runs: list[RunData], pal: Palette) -> ReportFigure:
    ops = combined(runs, "operating_points")
    if "cost_source" not in ops.columns or "expected_latency_ms" not in ops.columns:
        raise NotDrawable(
            "operating points carry no expected latency (no measured or estimated stage costs)"
        )
    ops = ops.dropna(subset=["expected_latency_ms", "accuracy"])
    ops = ops[ops["cost_source"] != ""].copy()
    ops["accuracy_pct"] = 100 * ops["accuracy"]
    pts, split = pick_split(ops)
    if pts.empty:
        raise NotDrawable("no operating point has an expected latency")
    sources = sorted(pts["cost_source"].unique(), key=lambda s: (not s.startswith("measured"), s))
    details = source_details(combined(runs, "stage_costs"))
    nrows, ncols = _grid(len(sources))
    fig, axes = _new_figure(nrows, ncols, 4.6, 3.9)
    extra: list = []
    log = wants_log(pts["expected_latency_ms"])  # one scale type for every panel
    for ax, source in zip(axes.flat, sources):
        sub = pts[pts["cost_source"] == source]
        front = front_for_display(
            ops[ops["cost_source"] == source],
            "expected_latency_ms",
            "accuracy_pct",
            ["run", "family"],
            split,
        )
        extra = _tradeoff_panel(ax, sub, "expected_latency_ms", pal, front, log=log)
        ax.set_title(_source_title(source, details), fontsize=9)
        ax.set_xlabel(f"Expected latency per sample [ms]\n({source})")
        ax.set_ylabel(f"Top-1 accuracy [%] ({split} split)")
        if source.startswith("estimated"):
            ax.set_facecolor(ESTIMATED_FACE)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _figure_legend(fig, handles + extra, labels + [h.get_label() for h in extra])
    _hide_unused(axes, len(sources))
    title = f"Accuracy vs expected latency, per cost source ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "accuracy_vs_latency",
        title,
        (
            "One panel per cost source. 'measured' panels use per-stage latencies timed on this "
            "machine's backend; 'estimated' panels (shaded) use a hardware profile's estimate and are "
            "not measurements. Lines: Pareto front per family, found on val and drawn at the same "
            f"points' {split} values; stars: calibrated points (chosen on val). Hollow triangle: "
            "the oracle, a bound (it reads the labels); square and cross: the final-only and "
            "aggregation baselines; none of them is ever on a front."
        ),
        fig,
    )


def anytime_curves(runs: list[RunData], pal: Palette) -> ReportFigure:
    import seaborn as sns

    exits, split = pick_split(combined(runs, "exits"))
    acc = per_exit_accuracy(exits)
    if acc.empty:
        raise NotDrawable("no exit record (exits table empty)")
    cum = cumulative_macs(combined(runs, "stage_costs"))
    data = acc.merge(cum, on=["run", "model", "exit"], how="left")
    data["accuracy_pct"] = 100 * data["accuracy"]
    use_macs = data["cumulative_macs"].notna().all()
    x = "cumulative_macs" if use_macs else "exit"
    fig, axes = _new_figure(1, 1, 7.0, 4.4)
    ax = axes[0, 0]
    sns.lineplot(
        data=data,
        x=x,
        y="accuracy_pct",
        hue="model",
        palette=pal.models,
        style="run" if pal.multi_run else None,
        markers=True,
        dashes=pal.multi_run,
        marker=None if pal.multi_run else "o",
        ax=ax,
    )
    if not pal.multi_run:  # the exit's number is its marker: no labels to collide
        for _, row in data.iterrows():
            ax.scatter(
                [row[x]],
                [row["accuracy_pct"]],
                marker=f"${int(row['exit'])}$",
                s=70,
                color="black",
                zorder=6,
            )
    if use_macs:
        _maybe_log(ax, data[x])
        _macs_axis(ax)
        ax.set_xlabel(f"Cumulative {MACS_LABEL} to reach the exit")
    else:
        ax.set_xlabel("Exit index (no analytic MACs in the run)")
    ax.set_ylabel(f"Top-1 accuracy of the exit [%] ({split} split)")
    _legend_outside(ax)
    title = f"Anytime accuracy: every exit on its own ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "anytime",
        title,
        (
            "Accuracy if every sample left at that exit, against the analytic MACs spent to reach "
            "it (all stages and exit heads up to and including the exit); the digit on each point "
            "is the exit index (0 = earliest)."
        ),
        fig,
    )


def _heatmap(ax, matrix: np.ndarray, rows: list[str], cols: list[str], vmax: float = 100.0):
    """Cells coloured by value (0..vmax, one scale for every panel) and labelled with it."""
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for (i, j), v in np.ndenumerate(matrix):
        if np.isnan(v):
            continue
        ax.text(
            j,
            i,
            f"{v:.0f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > 0.6 * vmax else "black",
        )
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.grid(False)
    return image


def exit_distributions(runs: list[RunData], pal: Palette) -> ReportFigure:
    ops = calibrated(unique_points(combined(runs, "operating_points")))
    pts, split = pick_split(ops)
    pts = choice_points(pts)
    cols = exit_fraction_columns(pts)
    if pts.empty or not cols:
        raise NotDrawable("no calibrated operating points with exit fractions")
    pts = pts.copy()
    pts["row"] = [
        policy_label(p, c) + (f" · {r}" if pal.multi_run else "")
        for p, c, r in zip(pts["policy"], pts["confidence"], pts["run"])
    ]
    pts["target"] = pts["calibration"].map(target_group)
    models = list(dict.fromkeys(pts["model"]))
    targets = sorted(pts["target"].unique())
    rows_per_model = [pts[pts["model"] == m]["row"].nunique() for m in models]
    width = 2.6 + 1.8 * len(targets) + 0.35 * len(cols)
    height = 1.3 + sum(0.2 * n + 0.55 for n in rows_per_model)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(width, 12.0), height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), len(targets), squeeze=False, height_ratios=rows_per_model)
    image = None
    for r, model in enumerate(models):
        sub = pts[pts["model"] == model]
        rows = sorted(sub["row"].unique())
        n_exits = max(int(c[10:]) for c in cols if sub[c].notna().any()) + 1
        for c, target in enumerate(targets):
            ax = axes[r, c]
            cell = sub[sub["target"] == target].drop_duplicates("row").set_index("row")
            matrix = np.full((len(rows), n_exits), np.nan)
            for i, row in enumerate(rows):
                if row in cell.index:
                    matrix[i] = [
                        100 * float(cell.loc[row, f"exit_frac_{j}"]) for j in range(n_exits)
                    ]
            image = _heatmap(ax, matrix, rows, [str(j) for j in range(n_exits)])
            if r == 0:
                ax.set_title(f"target: {pretty(target)}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{model}\npolicy", fontsize=8)
            else:
                ax.set_yticks(range(len(rows)), [""] * len(rows))
                ax.set_ylabel("")
            ax.set_xlabel("Exit index")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=f"Samples leaving at the exit [%] ({split})")
    title = f"Exit distribution at the calibrated operating points ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "exit_distribution",
        title,
        (
            "Share of samples [%] leaving at each exit (columns; exit 0 = earliest), for each "
            "policy (rows) at the "
            "thresholds its calibration target (panel columns) chose on val, one row of panels per "
            "model; an empty row: the policy has no point for that target. Baselines are left out: "
            "final-only and aggregation leave every sample at the final exit, the oracle at the "
            "first right one."
        ),
        fig,
    )


def overthinking_figure(runs: list[RunData], pal: Palette) -> ReportFigure:
    import seaborn as sns

    exits, split = pick_split(combined(runs, "exits"))
    ov = overthinking(exits)
    if ov.empty:
        raise NotDrawable("no exit record (exits table empty)")
    ov["percent"] = 100 * ov["overthinking"]
    has_difficulty = (
        "difficulty" in exits.columns
        and exits["difficulty"].astype(str).str.strip().ne("").any()
        and exits["difficulty"].notna().any()
    )
    fig, axes = _new_figure(1, 2 if has_difficulty else 1, 4.8, 3.8)
    ax = axes[0, 0]
    # models on the y axis: long names read horizontally and never collide
    if pal.multi_run:
        sns.barplot(errorbar=None, data=ov, y="model", x="percent", hue="run", orient="h", ax=ax)
    else:
        sns.barplot(
            errorbar=None,
            data=ov,
            y="model",
            x="percent",
            hue="model",
            palette=pal.models,
            orient="h",
            ax=ax,
            legend=False,
        )
    for bars in ax.containers:  # the value at each bar's end: a 0 is seen, not missing
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xlim(0, max(float(ov["percent"].max()), 0.1) * 1.2)
    ax.set_ylabel("Model")
    ax.set_xlabel(f"Overthinking [% of {split} samples]")
    ax.set_title("per model", fontsize=9)
    if pal.multi_run:
        _legend_outside(ax, title="run")
    if has_difficulty:
        ex = exits[exits["difficulty"].notna() & (exits["difficulty"].astype(str) != "")].copy()
        ex["difficulty_bin"] = difficulty_bins(ex["difficulty"])
        by = overthinking(ex, by="difficulty_bin")
        by["percent"] = 100 * by["overthinking"]
        by["series"] = by["model"] + (" · " + by["run"] if pal.multi_run else "")
        ax2 = axes[0, 1]
        palette = pal.models if not pal.multi_run else None
        sns.barplot(
            errorbar=None,
            data=by,
            x="difficulty_bin",
            y="percent",
            hue="series",
            palette=palette,
            order=sorted(by["difficulty_bin"].unique(), key=_level_key),
            ax=ax2,
        )
        top = max(float(ov["percent"].max()), float(by["percent"].max()), 0.1) * 1.2
        ax.set_xlim(0, top)  # one scale for both panels
        ax2.set_ylim(0, top)
        ax2.set_xlabel("Sample difficulty (from the dataset's metadata; 0 = easiest)")
        ax2.set_ylabel(f"Overthinking [% of the level's {split} samples]")
        ax2.set_title("per difficulty", fontsize=9)
        _legend_outside(ax2, title="model · run" if pal.multi_run else "model")
    title = f"Overthinking: an earlier exit is right, the final exit is wrong ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "overthinking",
        title,
        (
            "Share of samples that at least one earlier exit classifies correctly while the final "
            "exit gets them wrong: accuracy an early-exit policy can win back."
        ),
        fig,
    )


def _exit_per_sample(exits: pd.DataFrame, point: pd.Series) -> pd.DataFrame | None:
    """Each sample's exit at a threshold point, recomputed from the exit record's confidences;
    None unless the recomputed exit mix equals the point's own (a policy the record's columns
    cannot replay, such as patience or a learned gate, is never guessed)."""
    from eebench.evaluation import exit_indices

    measure = str(point["confidence"])
    if point["policy"] != "threshold" or measure not in exits.columns:
        return None
    wide = exits.pivot_table(index="sample_id", columns="exit", values=measure, aggfunc="first")
    scores = wide.to_numpy(float)
    if measure == "entropy":  # the record keeps the entropy; the policy's score is 1 - it
        scores = 1.0 - scores
    try:
        th = [float(t) for t in str(point["thresholds"]).strip("()[] ").split(",") if t.strip()]
    except ValueError:
        return None
    e = scores.shape[1]
    th = np.asarray((th + [th[-1]] * e)[:e] if th else [], float)
    if th.size != e or np.isnan(scores).any():
        return None
    taken = exit_indices(scores, th[None, :])[0]
    frac = np.bincount(taken, minlength=e) / len(taken)
    expected = [float(point.get(f"exit_frac_{i}", np.nan)) for i in range(e)]
    if not np.allclose(frac, expected, atol=1e-6):
        return None
    return pd.DataFrame({"sample_id": wide.index, "exit": taken, "num_exits": e})


def adaptiveness(runs: list[RunData], pal: Palette) -> ReportFigure:
    """Exit depth vs per-sample difficulty at each model's calibrated point: easy samples should
    leave early."""
    exits = combined(runs, "exits")
    if "difficulty" not in exits.columns or exits["difficulty"].astype(str).eq("").all():
        raise NotDrawable("the dataset gives no per-sample difficulty (no 'difficulty' column)")
    exits, split = pick_split(exits[exits["difficulty"].astype(str) != ""])
    ops = unique_points(calibrated(choice_points(combined(runs, "operating_points"))))
    ops = ops[ops["split"] == split]
    rows, chosen = [], []
    for (run, model), grp in ops.groupby(["run", "model"], sort=False):
        grp = grp[grp["policy"] == "threshold"]
        grp = grp.assign(_acc=grp["calibration"].str.contains("of-final")).sort_values(
            "_acc", ascending=False, kind="mergesort"
        )
        rec = exits[(exits["run"] == run) & (exits["model"] == model)]
        for _, point in grp.iterrows():
            taken = _exit_per_sample(rec, point)
            if taken is None:
                continue
            meta = rec.drop_duplicates("sample_id")[["sample_id", "difficulty"]]
            taken = taken.merge(meta, on="sample_id")
            taken["depth"] = taken["exit"] / max(int(taken["num_exits"].iloc[0]) - 1, 1)
            taken["series"] = model + (f" · {run}" if pal.multi_run else "")
            taken["model"] = model
            rows.append(taken)
            chosen.append(
                f"{model}: {policy_label(point['policy'], point['confidence'])} · "
                f"{pretty(str(point['calibration']))}"
            )
            break
    if not rows:
        raise NotDrawable(
            "no calibrated threshold point whose exits the record's confidences reproduce"
        )
    data = pd.concat(rows, ignore_index=True)
    data["level"] = difficulty_bins(data["difficulty"])
    levels = sorted(data["level"].unique(), key=_level_key)
    fig, axes = _new_figure(1, 1, 7.6, 4.2)
    ax = axes[0, 0]
    xs = np.arange(len(levels))
    labels: list[tuple[float, float, str, Any]] = []  # (x, y, text, colour) at each line's end
    for series, grp in data.groupby("series", sort=False):
        stats = grp.groupby("level")["depth"].agg(["mean", "std", "size"]).reindex(levels)
        half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["size"].clip(lower=1))
        color = pal.models.get(str(grp["model"].iloc[0]), None)
        ax.errorbar(xs, stats["mean"], yerr=half, marker="o", capsize=3, color=color, lw=1.5)
        last = int(np.flatnonzero(stats["mean"].notna().to_numpy())[-1])
        labels.append((float(xs[last]), float(stats["mean"].iloc[last]), str(series), color))
    # direct labels, spread apart vertically where lines end close together
    gap = 0.07
    placed: list[float] = []
    for x, y, text, color in sorted(labels, key=lambda item: item[1]):
        y_text = max(y, placed[-1] + gap) if placed else y
        placed.append(y_text)
        ax.annotate(
            text,
            (x, y),
            xytext=(x + 0.15, y_text),
            textcoords="data",
            va="center",
            fontsize=8,
            color=color,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6} if y_text != y else None,
        )
    ax.set_xticks(xs, levels)
    ax.set_xlim(-0.3, len(levels) - 1 + 0.3 + 0.12 * len(levels) + 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Sample difficulty (the dataset's level; 0 = easiest)")
    ax.set_ylabel(f"Mean exit depth [0 = first exit, 1 = final] ({split})")
    title = f"Adaptiveness: exit depth vs sample difficulty ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "adaptiveness",
        title,
        (
            "Mean depth of the exit each sample leaves at (exit index / last index), per "
            "difficulty level, with a 95% interval (normal approximation); an adaptive model "
            "sends easy samples out early and hard ones deep. Points: "
            + "; ".join(chosen)
            + " (chosen on val; exits recomputed from the record's confidences and checked "
            "against the point's exit mix)."
        ),
        fig,
    )


def _level_key(level: str) -> tuple:
    try:
        return (0, float(str(level).strip("([").split(",")[0]))
    except ValueError:
        return (1, str(level))


def predicted_vs_measured(runs: list[RunData], pal: Palette) -> ReportFigure:
    import seaborn as sns

    val = combined(runs, "validation").dropna(
        subset=["predicted_latency_ms", "measured_latency_ms"]
    )
    if val.empty:
        raise NotDrawable("no validation runs (validation table empty)")
    val = val.copy()
    if pal.multi_run:
        val["series"] = val["model"] + " · " + val["backend"]
        kw = {"hue": "series", "style": "run"}
    else:
        kw = {"hue": "model", "style": "backend", "palette": pal.models}
    fig, axes = _new_figure(1, 1, 6.4, 4.6)
    ax = axes[0, 0]
    ci = ("predicted_latency_ci_low_ms", "predicted_latency_ci_high_ms")
    ci_y = ("measured_latency_ci_low_ms", "measured_latency_ci_high_ms")
    if set(ci + ci_y) <= set(val.columns):  # 95% intervals of both means, under the markers
        ax.errorbar(
            val["predicted_latency_ms"],
            val["measured_latency_ms"],
            xerr=[
                (val["predicted_latency_ms"] - val[ci[0]]).clip(lower=0).fillna(0),
                (val[ci[1]] - val["predicted_latency_ms"]).clip(lower=0).fillna(0),
            ],
            yerr=[
                (val["measured_latency_ms"] - val[ci_y[0]]).clip(lower=0).fillna(0),
                (val[ci_y[1]] - val["measured_latency_ms"]).clip(lower=0).fillna(0),
            ],
            fmt="none",
            ecolor="grey",
            elinewidth=0.8,
            zorder=1,
        )
    sns.scatterplot(data=val, x="predicted_latency_ms", y="measured_latency_ms", s=45, ax=ax, **kw)
    both = pd.concat([val["predicted_latency_ms"], val["measured_latency_ms"]]).dropna()
    lo, hi = float(both.min()), float(both.max())
    # geometric spacing from just below the smallest point: the axes may be logarithmic, and a
    # line reaching far below the data would stretch them over empty decades
    line = np.geomspace(max(lo / 1.25, 1e-9), hi * 1.25, 50)
    ax.plot(
        line, line, color="black", linestyle="--", linewidth=1, label="y = x (prediction exact)"
    )
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.15, label="±10%")
    _maybe_log(ax, both)
    _maybe_log(ax, both, axis="y")
    ax.set_xlabel(
        "Predicted mean latency per sample [ms]\n(measured stage, head and decision times x exit mix)"
    )
    ax.set_ylabel("Measured mean latency per sample [ms]\n(true early-exit run, measured)")
    _legend_outside(ax)
    ratio = val["ratio"] if "ratio" in val else pd.Series(dtype=float)
    outside = int((ratio.sub(1.0).abs() > 0.10).sum())
    title = "Predicted vs measured latency of true early-exit runs"
    fig.suptitle(title)
    return ReportFigure(
        "predicted_vs_measured",
        title,
        (
            "Each point is a calibrated operating point run with true early exit on a backend: "
            "mean measured vs mean predicted latency per sample, both timed by the same host "
            "clock in the same loop; bars are 95% intervals. Measured/predicted ranges "
            f"{ratio.min():.2f}-{ratio.max():.2f} (median {ratio.median():.2f}); {outside} of "
            f"{len(ratio)} points lie outside ±10%, and the validation table names the part "
            "that dominates each of their gaps."
        ),
        fig,
    )


def energy_figure(runs: list[RunData], pal: Palette) -> ReportFigure:
    ops = combined(runs, "operating_points")
    if "expected_energy_mj" not in ops.columns:
        raise NotDrawable("no energy data (no profile or meter gave energy)")
    pts, split = pick_split(ops)
    pts = pts.dropna(subset=["expected_energy_mj"]).copy()
    cal = choice_points(calibrated(pts))
    if cal.empty:
        raise NotDrawable("no calibrated operating point has an expected energy")
    plain = pts[pts["policy"] == "final-only"]
    src = "energy_source" if "energy_source" in pts.columns else "cost_source"
    for df in (cal, plain):
        df["source"] = df[src].where(df[src] != "", df.get("cost_source", ""))
    cal = cal.drop_duplicates(
        subset=["run", "model", "policy", "confidence", "calibration", "source"]
    )
    cal["row"] = [
        f"{m} · {policy_label(p, c)}" + (f" · {r}" if pal.multi_run else "")
        for m, p, c, r in zip(cal["model"], cal["policy"], cal["confidence"], cal["run"])
    ]
    cal["target"] = cal["calibration"].map(target_group)
    sources = sorted(cal["source"].unique(), key=lambda s: (s.startswith("estimated"), s))
    targets = sorted(cal["target"].unique())
    rows = sorted(cal["row"].unique())
    nrows = len(sources)
    height = 1.4 + nrows * (0.22 * len(rows) + 0.8)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 + 3.2 * len(targets), height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, len(targets), squeeze=False, sharex="row", sharey=True)
    for r, source in enumerate(sources):
        sub = cal[cal["source"] == source]
        top = float(sub["expected_energy_mj"].max())
        base = plain[plain["source"] == source]
        top = max(top, float(base["expected_energy_mj"].max()) if len(base) else 0.0)
        for c, target in enumerate(targets):
            ax = axes[r, c]
            cell = sub[sub["target"] == target].drop_duplicates("row").set_index("row")
            ys = np.arange(len(rows))
            vals = np.array(
                [
                    float(cell.loc[k, "expected_energy_mj"]) if k in cell.index else np.nan
                    for k in rows
                ]
            )
            colors = [pal.models.get(k.split(" · ")[0], (0.4, 0.4, 0.4)) for k in rows]
            ax.barh(ys, np.nan_to_num(vals), color=colors, height=0.7)
            for y, v in zip(ys, vals):
                if not np.isnan(v):
                    ax.text(v + 0.01 * top, y, fmt_energy(v), va="center", fontsize=7)
            for model, grp in base.groupby("model"):  # the plain network of each model: a line
                mine = [y for y, k in zip(ys, rows) if k.split(" · ")[0] == model]
                if mine:
                    e = float(grp["expected_energy_mj"].iloc[0])
                    ax.plot([e, e], [min(mine) - 0.4, max(mine) + 0.4], color="black", lw=1.2)
            ax.set_yticks(ys, rows, fontsize=7)
            ax.set_ylabel("Model · policy" if c == 0 else "")
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.set_xlim(0, top * 1.3)
            ax.grid(axis="y", visible=False)
            if r == 0:
                ax.set_title(f"target: {pretty(target)}", fontsize=9)
            net = "" if source.startswith("estimated") else ", net of idle"
            ax.set_xlabel(f"Energy per inference [mJ{net}]\n({source})", fontsize=8)
            if source.startswith("estimated"):
                ax.set_facecolor(ESTIMATED_FACE)
    title = f"Energy per inference at the calibrated points ({split} split)"
    fig.suptitle(title)
    return ReportFigure(
        "energy",
        title,
        (
            "Expected energy per sample (exit distribution x per-stage energy) of each model and "
            "policy at the thresholds each calibration target (panel columns) chose on val, one row "
            "of panels per energy source, value at the bar's end; the black line is the model's "
            "plain network (final-only). Measured energy is net of the idle power measured in the "
            "same run; 'estimated:<profile>' (shaded) comes from a hardware profile, not a "
            "measurement."
        ),
        fig,
    )


def fmt_energy(value: float) -> str:
    return f"{value:.3g}"


def backend_comparison(runs: list[RunData], pal: Palette) -> ReportFigure:
    summary = latency_summary(combined(runs, "latency_samples"), combined(runs, "stage_costs"))
    # the machine-speed probe is a reference for 'compare', not a part of the model: left out
    summary = summary[summary["part"] != "probe"] if not summary.empty else summary
    if summary.empty:
        raise NotDrawable("no measured stage latencies (no backend was measured)")
    batch = summary["batch_size"].min()
    summary = summary[summary["batch_size"] == batch]
    per_threads = summary.groupby("threads")["backend"].nunique()
    threads = per_threads[per_threads == per_threads.max()].index.min()
    other = sorted(int(t) for t in per_threads.index if t != threads)
    data = summary[summary["threads"] == threads].copy()
    data["series"] = data["backend"] + ((" · " + data["run"]) if pal.multi_run else "")
    models = list(dict.fromkeys(data["model"]))
    series = sorted(data["series"].unique())
    colors = _series_colors(data, pal)
    fig, axes = _new_figure(len(models), 1, 7.6, 2.9)
    for ax, model in zip(axes.flat, models):
        sub = data[data["model"] == model]
        parts = sorted(
            {(p, int(i)) for p, i in zip(sub["part"], sub["index"])}, key=lambda t: part_order(*t)
        )
        pos = {p: k for k, p in enumerate(parts)}
        width = 0.8 / len(series)
        for j, s in enumerate(series):
            ss = sub[sub["series"] == s]
            if ss.empty:
                continue
            xs = (
                np.array([pos[(p, int(i))] for p, i in zip(ss["part"], ss["index"])])
                + (j - (len(series) - 1) / 2) * width
            )
            med = ss["median_ms"].to_numpy(float)
            ax.bar(xs, med, width, color=colors[s], label=s)
            yerr = np.vstack(
                [med - ss["q25_ms"].to_numpy(float), ss["q75_ms"].to_numpy(float) - med]
            )
            ax.errorbar(
                xs,
                med,
                yerr=np.clip(yerr, 0, None),
                fmt="none",
                ecolor="black",
                capsize=2,
                linewidth=0.8,
            )
        ax.set_xticks(range(len(parts)), [f"{p} {i}" for p, i in parts])
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("Part of the model (stage = backbone segment, exit = classifier head)")
        ax.set_ylabel("Median latency per call [ms]\n(measured; bars: IQR)")
        _legend_outside(ax, title="backend" + (" · run" if pal.multi_run else ""))
    title = f"Per-stage latency by backend (measured; threads = {int(threads)}, batch size = {int(batch)})"
    fig.suptitle(title)
    note = f" Other thread counts measured but not shown: {other}." if other else ""
    return ReportFigure(
        "backend_comparison",
        title,
        (
            "Median of the raw latency samples of each stage and exit head on each backend, with the "
            "inter-quartile range as error bars; all backends at the same thread count and batch size."
            + note
        ),
        fig,
    )


def _series_colors(data: pd.DataFrame, pal: Palette) -> dict[str, tuple]:
    """One hue per backend; with several runs, lighter shades of it for the later runs."""
    import seaborn as sns

    backends = sorted(data["backend"].unique())
    base = dict(zip(backends, sns.color_palette("deep", len(backends))))
    out = {}
    for series, backend, run in zip(data["series"], data["backend"], data["run"]):
        k = pal.runs.index(run) if run in pal.runs else 0
        a = 0.55 * k / max(len(pal.runs) - 1, 1)
        out[series] = tuple(c * (1 - a) + a for c in base[backend])
    return out


def _serving_curves(runs: list[RunData], pal: Palette) -> ReportFigure:
    from eebench.report.serving import serving_curves  # it imports this module

    return serving_curves(runs, pal)


FigureFn = Callable[[list[RunData], Palette], ReportFigure]

# the report's figures, in page order
FIGURES: tuple[tuple[str, FigureFn], ...] = (
    ("accuracy_vs_macs", accuracy_vs_macs),
    ("accuracy_vs_latency", accuracy_vs_latency),
    ("anytime", anytime_curves),
    ("exit_distribution", exit_distributions),
    ("adaptiveness", adaptiveness),
    ("overthinking", overthinking_figure),
    ("predicted_vs_measured", predicted_vs_measured),
    ("energy", energy_figure),
    ("backend_comparison", backend_comparison),
)

# figures of optional suite sections: (name, the table that holds the section, function); drawn
# only for runs that have the section, so a suite without it is not told a figure is missing
OPTIONAL_FIGURES: tuple[tuple[str, str, FigureFn], ...] = (
    ("serving_p99_vs_qps", "serving", _serving_curves),
)


def draw_figures(runs: list[RunData]) -> tuple[list[ReportFigure], dict[str, str]]:
    """Every figure the runs can show, and for the others the reason they are left out."""
    import matplotlib as mpl

    pal = Palette.for_runs(runs)
    drawn, missing = [], {}
    with mpl.rc_context(_rc()):
        for name, fn in FIGURES:
            try:
                drawn.append(fn(runs, pal))
            except NotDrawable as why:
                missing[name] = str(why)
            else:
                fit_titles(drawn[-1].figure)
        for name, table, fn in OPTIONAL_FIGURES:
            if combined(runs, table).empty:
                continue
            try:
                drawn.append(fn(runs, pal))
            except NotDrawable as why:
                missing[name] = str(why)
    return drawn, missing

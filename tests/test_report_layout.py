"""Every figure of a real tiny run is readable: after drawing, no legend or tick label overlaps
another, none covers an axes' data area, and every text lies inside the figure.

The boxes come from matplotlib's own renderer (``artist.get_window_extent(renderer)``), the
pixels the PNG holds. The check is shown to fail on a figure built to break each rule.
"""

from __future__ import annotations

import itertools
from html import escape as html_escape

import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eebench.report import build_report, draw_figures, load_runs
from eebench.report.comparison import changes_figure, compare_table
from eebench.report.figures import FIGURES
from eebench.report.headline import headlines
from eebench.report.tables import validation_table
from eebench.suites.runner import RunOptions, run_suite
from eebench.suites.summary import target_group

SUITE = {
    "name": "layout",
    "dataset": {
        "name": "synthetic",
        "seed": 0,
        "options": {"num_classes": 4, "samples_per_class": 60, "size": 16, "levels": 3},
    },
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 3, "lr": 0.02, "batch_size": 32},
        },
        {
            "name": "branchynet-lenet",
            "id": "lenet",
            "config": {},
            "training": {"scheme": "joint", "epochs": 3, "lr": 0.01, "batch_size": 32},
        },
    ],
    "policies": [
        {
            "name": "threshold",
            "confidence": ["max_softmax", "entropy"],
            "thresholds": {"start": 0, "stop": 1, "num": 21},
        },
        {"name": "patience", "confidence": ["max_softmax"], "thresholds": [1, 2]},
    ],
    "baselines": ["oracle", "final-only", "aggregation"],
    "calibration": {"accuracy_within": [0.02], "budget_fractions": [0.7]},
    "backends": ["torch-cpu", "simulated:jetson-orin-nano-8gb-15w"],
    "measurement": {"warmup": 1, "min_repeats": 12, "min_time_s": 0.0, "max_time_s": 0.3},
    "validation": {"samples": 16, "repeats": 1},
}

PAD = 1.0  # pixels: boxes that only touch do not overlap


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The tiny suite run twice from the same checkpoints (the second for the comparison)."""
    root = tmp_path_factory.mktemp("layout")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    opts = dict(out_root=root / "results", cache_root=root / "cache", progress=False, report=False)
    a = run_suite(str(path), RunOptions(run_id="a", **opts))
    b = run_suite(str(path), RunOptions(run_id="b", **opts))
    return a, b


def _overlap(a, b) -> bool:
    return a.x0 + PAD < b.x1 and b.x0 + PAD < a.x1 and a.y0 + PAD < b.y1 and b.y0 + PAD < a.y1


def _inside(box, frame) -> bool:
    return (
        box.x0 >= frame.x0 - PAD
        and box.y0 >= frame.y0 - PAD
        and box.x1 <= frame.x1 + PAD
        and box.y1 <= frame.y1 + PAD
    )


def _tick_labels(ax, renderer) -> list[tuple[str, object]]:
    out = []
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:  # log axes label minors
            for label in (tick.label1, tick.label2):
                if label.get_visible() and label.get_text().strip() and tick.get_visible():
                    out.append((f"{name} tick '{label.get_text()}'", label, name))
    return [
        (what, label.get_window_extent(renderer), name)
        for what, label, name in out
        if _in_view(ax, label, name)
    ]


def _in_view(ax, label, name: str) -> bool:
    """A tick outside the axis' view limits is not drawn by matplotlib."""
    x, y = label.get_position()
    lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
    v = x if name == "x" else y
    return lo - 1e-9 * max(1.0, abs(hi)) <= v <= hi + 1e-9 * max(1.0, abs(hi))


def layout_problems(fig: Figure) -> list[str]:
    """Every breach of the layout rules in ``fig``, in words (empty: readable)."""
    fig.canvas.draw()  # lays the figure out as savefig does
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    data_areas = [(ax, ax.get_window_extent(renderer)) for ax in axes]
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in axes)] if lg]
    legend_boxes = [
        (f"legend '{lg.get_title().get_text()}'", lg.get_window_extent(renderer)) for lg in legends
    ]
    for what, box in legend_boxes:
        if not _inside(box, frame):
            problems.append(f"{what} runs off the figure")
        for ax, area in data_areas:
            if _overlap(box, area):
                problems.append(
                    f"{what} covers the data area of '{ax.get_title() or ax.get_ylabel()}'"
                )
    for (w1, b1), (w2, b2) in itertools.combinations(legend_boxes, 2):
        if _overlap(b1, b2):
            problems.append(f"{w1} overlaps {w2}")
    texts = []
    for ax in axes:
        ticks = _tick_labels(ax, renderer)
        name = ax.get_title() or ax.get_ylabel()
        for what, box, _ in ticks:
            if not _inside(box, frame):
                problems.append(f"{name}: {what} lies outside the figure")
            for _other, area in data_areas:
                if _overlap(box, area):
                    problems.append(f"{name}: {what} covers a data area")
            for lw, lb in legend_boxes:
                if _overlap(box, lb):
                    problems.append(f"{name}: {what} is under {lw}")
        texts += [(f"{name}: {w}", box) for w, box, _ in ticks]
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            if not text.get_text():
                continue
            box = text.get_window_extent(renderer)
            texts.append((f"{name}: '{text.get_text()[:40]}'", box))
            if not _inside(box, frame):
                problems.append(f"{name}: '{text.get_text()[:40]}' is clipped by the figure edge")
    sup = fig._suptitle
    if sup is not None:
        box = sup.get_window_extent(renderer)
        texts.append((f"title '{sup.get_text()[:40]}'", box))
        if not _inside(box, frame):
            problems.append(f"title '{sup.get_text()[:40]}' is clipped by the figure edge")
    # no text on another: tick labels of one axis or of neighbouring panels, titles, axis labels
    for (w1, b1), (w2, b2) in itertools.combinations(texts, 2):
        if _overlap(b1, b2):
            problems.append(f"{w1} overlaps {w2}")
    return problems


def test_every_figure_of_a_real_run_is_laid_out_readably(two_runs):
    a, b = two_runs
    runs = load_runs([a])
    drawn, missing = draw_figures(runs)
    assert missing == {}, missing  # the tiny run can show every figure, adaptiveness included
    assert {f.name for f in drawn} == {name for name, _ in FIGURES}
    for fig in drawn:
        assert layout_problems(fig.figure) == [], fig.name


def test_two_run_figures_and_the_changes_figure_are_readable(two_runs):
    runs = load_runs(list(two_runs))
    drawn, _ = draw_figures(runs)
    changes = changes_figure(runs, compare_table(runs))
    for fig in [*drawn, changes]:
        assert layout_problems(fig.figure) == [], fig.name


def test_the_check_fails_on_a_figure_that_breaks_each_rule():
    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k in range(8):
        ax.plot([0, 1], [k, k + 1], label=f"a long series name number {k}")
    ax.legend(loc="center")  # over the lines
    ax.set_xticks([0, 0.01, 0.02], ["30000000", "40000000", "50000000"])  # crowded labels
    ax.set_title("a title far too long to fit a three inch wide figure, clipped at both ends")
    problems = layout_problems(fig)
    assert any("covers the data area" in p for p in problems)
    assert any("overlaps" in p and "x tick '4" in p for p in problems)
    assert any("clipped by the figure edge" in p for p in problems)

    side = Figure(figsize=(4, 2), layout="constrained")
    FigureCanvasAgg(side)
    left, right = side.subplots(1, 2)
    left.set_title("target: budgeted-batch-1.39e+05-macs")
    right.set_title("target: budgeted-batch-1.42e+05-macs")
    assert any("overlaps" in p and "budgeted-batch" in p for p in layout_problems(side))


def test_report_opens_with_the_answer_and_keeps_the_environment_for_the_appendix(
    two_runs, tmp_path
):
    a, _ = two_runs
    files = build_report([a], tmp_path / "report")
    html = files.html.read_text(encoding="utf-8")
    assert (
        html.index("The answer")
        < html.index("<figure")
        < html.index("Appendix: runs and environment")
    )
    found = headlines(load_runs([a]))
    kinds = {h.source: h.kind for h in found}
    assert kinds == {
        "measured:torch-cpu,threads=1,batch=1": "measured",
        "estimated:jetson-orin-nano-8gb-15w": "estimated",
    }
    ops = load_runs([a])[0].table("operating_points")
    targets = {target_group(c) for c in ops["calibration"] if c not in ("sweep", "baseline", "")}
    for h in found:
        assert html_escape(h.sentence) in html
        assert len(h.table) == len(targets)  # one row per calibration target
    # the validation table names the confidence measure: no two rows look alike
    shown = validation_table(load_runs([a]))
    assert shown["policy"].str.contains(r"\((?:max_softmax|entropy)\)").any()
    keys = ["model", "backend", "policy", "calibration", "batch size", "threads"]
    assert not shown.duplicated(subset=keys).any()
    measured = next(h for h in found if h.kind == "measured").table
    # the true early-exit run's mean latency and its speedup over the plain network, with intervals
    ci = r"^[0-9.]+ \[[0-9.]+, [0-9.]+\]$"
    assert measured["latency [ms/sample] (true early exit, 95% CI)"].str.match(ci).all()
    assert measured["speedup over plain network [x] (95% CI)"].str.match(ci).all()


@pytest.mark.parametrize("panels", [1, 6])
def test_serving_curves_stay_readable_with_every_strategy_and_two_modes(monkeypatch, panels):
    """One panel with five strategies in two modes once hid its curves under the legend and cut
    the title at both ends; the legend now sits below the panels and the title wraps."""
    import eebench.report.serving as serving

    rows = []
    for p in range(panels):
        for strategy in ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup", "plain"):
            for mode in ("per-stage", "compiled"):
                for q in (200.0, 1000.0, 3000.0, 8000.0):
                    rows.append(
                        {
                            "model": f"model-{p // 2}",
                            "backend": ("torch-cpu", "onnxruntime")[p % 2],
                            "strategy": strategy,
                            "mode": mode,
                            "target_qps": q,
                            "latency_p99_ms": 2.0 + q / 100,
                            "latency_bound_ms": 50.0,
                            "valid": q < 8000,
                        }
                    )
    monkeypatch.setattr(serving, "_server_rows", lambda runs: pd.DataFrame(rows))
    fig = serving.serving_curves([], None).figure
    assert layout_problems(fig) == []
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert "regroup · compiled" in labels and "latency bound 50 ms" in labels

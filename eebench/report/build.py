"""``build_report``: runs in, an HTML page, a Markdown summary and PNG figures out.

The report never writes into a run folder except that run's ``report/``
subfolder, so a report cannot damage the results it describes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eebench import __version__
from eebench.errors import ResultsError
from eebench.report.data import RunData, load_runs
from eebench.report.energy import energy_table, energy_validation_table
from eebench.report.estimates import estimates_intro, estimates_table
from eebench.report.figures import NotDrawable, draw_figures
from eebench.report.headline import headlines
from eebench.report.latency import latency_table
from eebench.report.render import RenderedFigure, ReportContent, Section, to_html, to_markdown
from eebench.report.serving import max_qps_display
from eebench.report.tables import (
    cluster_nodes_table,
    environment_table,
    operating_points_table,
    skipped_table,
    validation_table,
)
from eebench.results.bundle import atomic_write_bytes, now_iso

# the report is meant to be shared (CI artifacts, a web folder): readable by others
FILE_MODE = 0o644
HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"


@dataclass(frozen=True)
class ReportFiles:
    """What ``build_report`` wrote."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    missing: dict[str, str]


def _write(path: Path, data: bytes) -> Path:
    atomic_write_bytes(path, data)
    os.chmod(path, FILE_MODE)
    return path


def check_output_folder(out: Path, runs: list[RunData]) -> None:
    """Refuse an output folder inside a run other than that run's ``report/`` subfolder."""
    out_r = out.resolve()
    for run in runs:
        root = run.path.resolve()
        if out_r == root or root in out_r.parents:
            allowed = root / "report"
            if not (out_r == allowed or allowed in out_r.parents):
                raise ResultsError(
                    f"--out {out}: is inside the run folder {run.path}; a report may only be written "
                    f"to {allowed} (the default) or outside the run"
                )
    if out.exists() and not out.is_dir():
        raise ResultsError(
            f"--out {out}: exists and is not a folder; choose a folder for the report"
        )


def report_content(runs: list[RunData]) -> ReportContent:
    """Draw the figures and build the tables for ``runs`` (nothing written yet)."""
    from eebench.report.comparison import changes_figure, compare_table, comparison_sections

    drawn, missing = draw_figures(runs)
    figures = [
        RenderedFigure(f.name, f.title, f.caption, f.png(), f"fig{i + 1:02d}-{f.name}.png")
        for i, f in enumerate(drawn)
    ]
    for f in drawn:  # free the figures' memory once rendered
        f.figure.clear()
    try:
        changes = compare_table(runs)
    except ResultsError as why:  # two runs with nothing in common: the rest is still shown
        changes = pd.DataFrame()
        missing["changes"] = str(why)
    comparison, comparison_figures = comparison_sections(runs, changes), []
    if not changes.empty:
        try:
            fig = changes_figure(runs, changes)
            comparison_figures.append(
                RenderedFigure(fig.name, fig.title, fig.caption, fig.png(), "fig00-changes.png")
            )
            fig.figure.clear()
        except NotDrawable as why:
            missing["changes"] = str(why)
    sections = [
        Section(
            "Calibrated operating points",
            "Thresholds chosen on val for each calibration target, with val and test side by "
            "side; MACs are analytic, latencies per cost source (measured or estimated).",
            operating_points_table(runs),
        ),
        Section(
            "Measured latency per stage and exit head",
            "Every measured statistic with its sample count and 95% interval (order statistics "
            "for the median and percentiles, a block bootstrap for the mean). 'noisy': the "
            "median's interval is wider than the run's target (2% unless the suite says "
            "otherwise); a percentile the sample count cannot support (64 samples for p90, 662 "
            "for p99: MLPerf LoadGen's rule) says 'insufficient samples' instead of a number.",
            latency_table(runs),
        ),
        Section(
            "Validation: true early-exit runs",
            "Calibrated operating points run with true early exit: mean measured vs mean "
            "predicted latency per sample, each with its 95% interval, both timed by the clock "
            "in the 'clock' column in the same per-sample loop. The prediction weights the "
            "measured stage, head (with its host copy) and decision times by the point's exit "
            "mix; 'measured / predicted' is the quotient of the two means as shown. Where a "
            "point misses ±10%, the 'outside ±10%' column names the part that dominates the gap.",
            validation_table(runs),
        ),
        Section(
            "Energy per stage and exit head",
            "Net energy per sample (idle power measured in the same run subtracted; the figure "
            "the cost vectors use) with its 95% interval, gross energy (idle included) beside "
            "it, and the meter and device every number comes from: RAPL for CPU backends, NVML "
            "for CUDA, the board input rail on a Jetson; estimated:<profile> where no meter of "
            "the device was readable. Each window spans many meter updates.",
            energy_table(runs),
        ),
        Section(
            "Energy validation: true early-exit runs",
            "Net energy per sample of each calibrated operating point run with true early exit, "
            "measured with the backend's meter, vs predicted from the parts' net energy (the "
            "prediction leaves out the exit decisions).",
            energy_validation_table(runs),
        ),
        Section(
            "Estimated from hardware profiles",
            estimates_intro(runs),
            estimates_table(runs),
        ),
        Section(
            "Early exit under load: max QPS within the latency bound",
            "MLCommons LoadGen Server search per batching strategy and deployment mode: the "
            "largest probed QPS that LoadGen judged VALID (percentile within the bound, enough "
            "queries for its early-stopping rule), beside the plain network's (no exits, same "
            "batches; in the mode's own deployment where it ran there, else per stage). "
            "'upper end': the search's highest rate held, the maximum may be higher.",
            max_qps_display(runs),
        ),
        Section(
            "Skipped on this machine",
            "Steps or targets that could not run here, with the reason recorded by the run.",
            skipped_table(runs),
        ),
    ]
    nodes = cluster_nodes_table(runs)
    if not nodes.empty:  # a run made on one machine has no nodes to show
        sections.append(
            Section(
                "Cluster nodes",
                "Where a cluster run's units ran (eebench run --cluster): each node's devices, "
                "CPU and eebench code, and its device-bound units (every measured number of a "
                "placed backend comes from the node holding its device).",
                nodes,
            )
        )
    return ReportContent(
        runs=runs,
        figures=figures,
        missing=missing,
        environment=environment_table(runs),
        sections=sections,
        generated=now_iso(),
        version=__version__,
        headlines=headlines(runs),
        comparison=comparison,
        comparison_figures=comparison_figures,
    )


def build_report(run_paths: list[Path | str], out: Path | str | None = None) -> ReportFiles:
    """Write ``report.html`` (self-contained), ``report.md`` and the PNG figures to ``out``.

    ``out`` defaults to ``<first run>/report``. Raises ResultsError for a missing
    run, a damaged table (naming the file) or an output folder inside a run.
    """
    runs = load_runs(list(run_paths))
    out_dir = Path(out) if out is not None else runs[0].path / "report"
    check_output_folder(out_dir, runs)
    content = report_content(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = [
        _write(out_dir / fig.filename, fig.png)
        for fig in [*content.comparison_figures, *content.figures]
    ]
    html_path = _write(out_dir / HTML_NAME, to_html(content).encode("utf-8"))
    md_path = _write(out_dir / MARKDOWN_NAME, to_markdown(content).encode("utf-8"))
    return ReportFiles(html_path, md_path, tuple(pngs), dict(content.missing))

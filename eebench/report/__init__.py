"""Reports: seaborn figures and tables of one or more runs, as HTML (self-contained) and Markdown."""

from eebench.report.build import ReportFiles, build_report, check_output_folder, report_content
from eebench.report.data import RunData, combined, load_run, load_runs
from eebench.report.figures import FIGURES, NotDrawable, ReportFigure, draw_figures
from eebench.report.render import ReportContent, to_html, to_markdown

__all__ = [
    "FIGURES",
    "NotDrawable",
    "ReportContent",
    "ReportFigure",
    "ReportFiles",
    "RunData",
    "build_report",
    "check_output_folder",
    "combined",
    "draw_figures",
    "load_run",
    "load_runs",
    "report_content",
    "to_html",
    "to_markdown",
]

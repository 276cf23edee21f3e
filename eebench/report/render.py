"""Rendering a report to one self-contained HTML page and a Markdown summary.

The HTML page embeds its figures as base64 PNG and its style inline: it opens
offline, from a mail attachment or a CI artifact, with nothing to fetch. The
Markdown summary references PNG files written beside it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

from eebench.report.data import RunData
from eebench.report.headline import Headline, headline_intro

NUMBERS_LEGEND = (
    (
        "analytic",
        "counted from the architecture: MACs (1 MAC = one multiply-add; FLOPs = 2 x MACs), "
        "parameters, bytes. Independent of the machine.",
    ),
    (
        "measured:<backend>",
        "timed on the machine of the run, on that backend, with the thread count "
        "and batch size given; statistics come from the raw samples.",
    ),
    (
        "estimated:<profile>",
        "predicted from a hardware profile (peaks, bandwidth, power); not a measurement.",
    ),
)

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.scroll{overflow-x:auto}
.warn{background:#fff4e5;border-left:5px solid #e67e22;padding:.6em 1em;margin:.8em 0}
.note{color:#555;font-size:.9em}figure{margin:1em 0 2em 0}
.answer{background:#eef6ee;border-left:5px solid #2e7d32;padding:.6em 1em;margin:.8em 0}
.estimated{background:#f7f1e3;border-left:5px solid #b08d57;padding:.3em 1em;margin:.8em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.9em;margin-top:.3em}
"""


@dataclass
class Section:
    """A table with its heading and a sentence saying what it shows."""

    title: str
    intro: str
    table: pd.DataFrame


@dataclass
class RenderedFigure:
    name: str
    title: str
    caption: str
    png: bytes
    filename: str


@dataclass
class ReportContent:
    """Everything a page shows, shared by the HTML and Markdown renderers."""

    runs: list[RunData]
    figures: list[RenderedFigure]
    missing: dict[str, str]
    environment: pd.DataFrame
    sections: list[Section] = field(default_factory=list)
    generated: str = ""
    headlines: list[Headline] = field(default_factory=list)
    comparison: list[Section] = field(default_factory=list)
    comparison_figures: list[RenderedFigure] = field(default_factory=list)
    version: str = ""

    def warnings(self) -> list[str]:
        out = []
        for run in self.runs:
            if run.is_partial:
                out.append(
                    f"Run {run.label} is {run.status.upper()}"
                    + (f" ({run.reason})" if run.reason else "")
                    + ": only the steps that finished are shown."
                )
            out.extend(f"Run {run.label}: {note}." for note in run.notes)
        return out


def _e(text: object) -> str:
    return html.escape(str(text))


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _html_figure(fig: RenderedFigure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f'<figure id="{_e(fig.name)}"><h3>{_e(fig.title)}</h3>'
        f'<img src="data:image/png;base64,{data}" alt="{_e(fig.title)}">'
        f"<figcaption>{_e(fig.caption)}</figcaption></figure>"
    )


def _html_headline(content: ReportContent) -> list[str]:
    """The answer first: one sentence per device, then a table per cost source, measured apart
    from estimated."""
    if not content.headlines:
        return [
            "<h2>The answer</h2>",
            '<p class="note">(no calibrated operating points in these runs: nothing to '
            "recommend)</p>",
        ]
    parts = ["<h2>The answer</h2>", f"<p>{_e(headline_intro())}</p>", '<div class="answer"><ul>']
    parts += [f"<li>{_e(h.sentence)}</li>" for h in content.headlines]
    parts.append("</ul></div>")
    for kind, title in (
        ("measured", "Measured on this machine"),
        ("estimated", "Estimated from hardware profiles (not measurements)"),
    ):
        group = [h for h in content.headlines if h.kind == kind]
        if not group:
            continue
        parts.append(f"<h3>{_e(title)}</h3>")
        for h in group:
            run = f"{h.run}: " if len(content.runs) > 1 else ""
            box = ' class="estimated"' if kind == "estimated" else ""
            parts.append(f"<div{box}><p><b>{_e(run + h.source)}</b></p>")
            parts.append(_html_table(h.table) + "</div>")
    return parts


def to_html(content: ReportContent) -> str:
    runs = ", ".join(r.label for r in content.runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>eebench report: {_e(runs)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>eebench report</h1>",
        f'<p class="note">Runs: {_e(runs)}. Generated {_e(content.generated)} by eebench '
        f'{_e(content.version)}. Environment of each run: <a href="#appendix">appendix</a>.</p>',
    ]
    parts += [f'<div class="warn">{_e(w)}</div>' for w in content.warnings()]
    parts += _html_headline(content)
    for section in content.comparison:
        parts.append(f"<h2>{_e(section.title)}</h2><p>{_e(section.intro)}</p>")
        parts.append(
            _html_table(section.table)
            if not section.table.empty
            else '<p class="note">(nothing in common)</p>'
        )
    parts += [_html_figure(fig) for fig in content.comparison_figures]
    parts.append("<h2>Reading the numbers</h2><ul>")
    parts += [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in NUMBERS_LEGEND]
    parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    if content.figures:
        parts.append(
            "<ul>"
            + "".join(
                f'<li><a href="#{_e(f.name)}">{_e(f.title)}</a></li>' for f in content.figures
            )
            + "</ul>"
        )
    parts += [_html_figure(fig) for fig in content.figures]
    for section in content.sections:
        parts.append(f"<h2>{_e(section.title)}</h2><p>{_e(section.intro)}</p>")
        parts.append(
            _html_table(section.table)
            if not section.table.empty
            else '<p class="note">(none in these runs)</p>'
        )
    if content.missing:
        parts.append("<h2>Not shown</h2><ul>")
        parts += [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in content.missing.items()]
        parts.append("</ul>")
    parts.append('<h2 id="appendix">Appendix: runs and environment</h2>')
    parts.append(_html_table(content.environment))
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = [
        "| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)
    ]
    return "\n".join([head, rule, *rows])


def _md_headline(content: ReportContent) -> list[str]:
    lines = ["## The answer", ""]
    if not content.headlines:
        return [*lines, "(no calibrated operating points in these runs: nothing to recommend)", ""]
    lines += [headline_intro(), ""]
    lines += [f"- {h.sentence}" for h in content.headlines]
    lines.append("")
    for kind, title in (
        ("measured", "Measured on this machine"),
        ("estimated", "Estimated from hardware profiles (not measurements)"),
    ):
        group = [h for h in content.headlines if h.kind == kind]
        if not group:
            continue
        lines += [f"### {title}", ""]
        for h in group:
            run = f"{h.run}: " if len(content.runs) > 1 else ""
            lines += [f"**{run}{h.source}**", "", markdown_table(h.table), ""]
    return lines


def to_markdown(content: ReportContent) -> str:
    runs = ", ".join(r.label for r in content.runs)
    lines = [
        "# eebench report",
        "",
        f"Runs: {runs}. Generated {content.generated} by eebench {content.version}. "
        "Environment of each run: see the appendix.",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in content.warnings()]
    lines.append("")
    lines += _md_headline(content)
    for section in content.comparison:
        lines += [f"## {section.title}", "", section.intro, ""]
        lines += [
            markdown_table(section.table) if not section.table.empty else "(nothing in common)",
            "",
        ]
    for fig in content.comparison_figures:
        lines += [f"### {fig.title}", "", f"![{fig.title}]({fig.filename})", "", fig.caption, ""]
    lines += ["## Reading the numbers", ""]
    lines += [f"- **{k}**: {v}" for k, v in NUMBERS_LEGEND]
    lines += ["", "## Figures", ""]
    for fig in content.figures:
        lines += [f"### {fig.title}", "", f"![{fig.title}]({fig.filename})", "", fig.caption, ""]
    for section in content.sections:
        lines += [f"## {section.title}", "", section.intro, ""]
        lines += [
            markdown_table(section.table) if not section.table.empty else "(none in these runs)",
            "",
        ]
    if content.missing:
        lines += ["## Not shown", ""]
        lines += [f"- **{k}**: {v}" for k, v in content.missing.items()]
        lines.append("")
    lines += ["## Appendix: runs and environment", "", markdown_table(content.environment)]
    return "\n".join(lines) + "\n"

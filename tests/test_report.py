"""The report on tiny synthetic runs: self-contained HTML, Markdown with PNGs, labelled figures."""

import base64
import hashlib
import html
import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from synthetic_run import make_run, tamper

from eebench.cli import main
from eebench.errors import ResultsError
from eebench.report import FIGURES, build_report, draw_figures, load_runs
from eebench.report.derive import cumulative_macs, overthinking, pareto_front
from eebench.report.figures import Palette, backend_comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    """Collects what a self-contained page must (images, figure titles) and must not (fetches) hold."""

    def __init__(self):
        super().__init__()
        self.images, self.figures, self.external = [], [], []
        self._stack, self._text = [], []
        self.headings = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._stack.append(tag)
        if tag == "figure":
            self.figures.append({"title": "", "caption": "", "images": 0})
        if tag == "img":
            self.images.append(attrs)
            if self.figures:
                self.figures[-1]["images"] += 1
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value.startswith(("http:", "https:", "//")) or (tag in ("script", "link") and value):
                self.external.append((tag, value))
        self._text = []

    def handle_data(self, data):
        self._text.append(data)

    def handle_endtag(self, tag):
        text = "".join(self._text).strip()
        if tag in ("h1", "h2", "h3"):
            self.headings.append(text)
        if self.figures and tag == "h3" and "figure" in self._stack:
            self.figures[-1]["title"] = text
        if self.figures and tag == "figcaption":
            self.figures[-1]["caption"] = text
        if self._stack:
            self._stack.pop()
        self._text = []


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _section_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after the heading that starts with ``heading``."""
    start = text.index(heading)
    table = text[text.index("<tbody>", start) : text.index("</tbody>", start)]
    rows = []
    for tr in table.split("<tr>")[1:]:
        rows.append([html.unescape(c.split("</td>")[0]) for c in tr.split("<td>")[1:]])
    return rows


def tree_digest(run: Path) -> dict[str, str]:
    """Every file of a run except its report/ folder, with its hash."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and "report" not in p.relative_to(run).parts
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("results"), "r1")


@pytest.fixture(scope="module")
def tiny_report(tiny_run):
    """The report of the tiny run through the CLI with the default --out."""
    before = tree_digest(tiny_run)
    code = main(["report", str(tiny_run)])
    return {"code": code, "before": before, "dir": tiny_run / "report"}


def test_report_command_writes_into_the_runs_report_folder_only(tiny_run, tiny_report):
    assert tiny_report["code"] == 0
    assert (tiny_report["dir"] / "report.html").exists()
    assert (tiny_report["dir"] / "report.md").exists()
    assert tree_digest(tiny_run) == tiny_report["before"]


def test_html_is_self_contained_with_every_figure_embedded_and_titled(tiny_report):
    page = parse(tiny_report["dir"] / "report.html")
    pngs = [img for img in page.images if img.get("src", "").startswith("data:image/png;base64,")]
    assert len(pngs) == len(page.images) == len(FIGURES)
    for img in pngs:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert img.get("alt")
    assert page.external == []
    assert len(page.figures) == len(FIGURES)
    for fig in page.figures:
        assert fig["images"] == 1 and fig["title"] and fig["caption"]
    titles = " ".join(f["title"] for f in page.figures)
    for expected in (
        "expected MACs",
        "expected latency",
        "Anytime",
        "Exit distribution",
        "Overthinking",
        "Predicted vs measured",
        "Energy",
        "by backend",
    ):
        assert expected in titles


def test_html_opens_with_the_answer_and_keeps_the_environment_for_the_appendix(tiny_report):
    text = (tiny_report["dir"] / "report.html").read_text(encoding="utf-8")
    first_figure = text.index("<figure")
    appendix = text.index("Appendix: runs and environment")
    assert text.index("The answer") < first_figure < appendix
    for fact in ("Synthetic CPU @ 2.0GHz", "0123456789abcdef", "2.3.0"):
        assert text.index(fact) > appendix
    page = parse(tiny_report["dir"] / "report.html")
    assert {
        "The answer",
        "Measured on this machine",
        "Estimated from hardware profiles (not measurements)",
        "Appendix: runs and environment",
        "Calibrated operating points",
        "Validation: true early-exit runs",
        "Skipped on this machine",
    } <= set(page.headings)
    assert "no CUDA device on this machine" in text  # the skipped backend and why
    assert (
        "within-1%-of-final" in text and "test accuracy [%]" in text and "val accuracy [%]" in text
    )


def test_markdown_references_png_files_beside_it(tiny_report):
    out = tiny_report["dir"]
    md = (out / "report.md").read_text(encoding="utf-8")
    refs = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(refs) == len(FIGURES)
    for ref in refs:
        assert (out / ref).read_bytes().startswith(PNG_MAGIC)
    assert "| field |" in md and "Synthetic CPU @ 2.0GHz" in md
    assert "FLOPs = 2 x MACs" in md


def test_every_axis_is_labelled_with_what_its_numbers_are(tiny_run):
    figures, missing = draw_figures(load_runs([tiny_run]))
    assert missing == {}
    for fig in figures:
        assert fig.figure._suptitle is not None and fig.figure._suptitle.get_text() == fig.title
        for ax in fig.figure.axes:
            if not ax.get_visible():
                continue
            xl, yl = ax.get_xlabel(), ax.get_ylabel()
            # a panel that shares its neighbour's rows (no tick labels of its own) needs no label
            shows_y = any(t.get_text() and t.get_visible() for t in ax.get_yticklabels())
            shows_x = any(t.get_text() and t.get_visible() for t in ax.get_xticklabels())
            assert (xl or not shows_x) and (yl or not shows_y), f"{fig.name}: unlabelled axis"
            if "MACs" in xl:
                assert "analytic; FLOPs = 2 x MACs" in xl
            if "latency" in xl.lower() or "latency" in yl.lower():
                assert any(w in xl + yl for w in ("measured", "estimated:")), (
                    f"{fig.name}: {xl} / {yl}"
                )
    by_name = {f.name: f for f in figures}
    panels = [  # titles may be wrapped to their panel's width
        " ".join(ax.get_title().split())
        for ax in by_name["accuracy_vs_latency"].figure.axes
        if ax.get_visible()
    ]
    assert any(t.startswith("measured: torch-cpu") for t in panels)
    assert any(t.startswith("estimated: jetson-orin-nano") and "not measured" in t for t in panels)
    energy_labels = [ax.get_xlabel() for ax in by_name["energy"].figure.axes if ax.get_visible()]
    assert all("estimated:jetson-orin-nano" in xl for xl in energy_labels)
    # the exits table has a difficulty column: overthinking is also shown per difficulty
    assert sum(ax.get_visible() for ax in by_name["overthinking"].figure.axes) == 2


def test_multi_run_report_compares_runs_side_by_side(tmp_path):
    a = make_run(tmp_path / "results", "cpu-a", commit="aaaaaaaaaa11")
    b = make_run(
        tmp_path / "results",
        "cpu-b",
        latency_seed=3,
        commit="bbbbbbbbbb22",
        latency_scale={("sdn-s", "stage", 1, "torch-cpu"): 1.5},
    )
    files = build_report([a, b], tmp_path / "side-by-side")
    assert files.html.parent == tmp_path / "side-by-side"
    page = parse(files.html)
    assert len(page.images) == len(FIGURES) + 1  # and the figure of the changes
    text = files.html.read_text(encoding="utf-8")
    for fact in ("quick/cpu-a", "quick/cpu-b", "aaaaaaaaaa11", "bbbbbbbbbb22"):
        assert fact in text
    # what changed, not stacked rows: compare's verdict on the slowed stage, A, B and the ratio
    assert page.headings[page.headings.index("The answer") + 3].startswith("Changes from A to B")
    assert text.index("Changes from A to B") < text.index("<h2>Figures</h2>")
    changes = _section_rows(text, "Changes from A to B")
    slowed = [r for r in changes if r[0] == "sdn-s" and r[1].startswith("stage 1 on torch-cpu")]
    assert len(slowed) == 1 and slowed[0][-1] == "regression"
    a_ms, b_ms = float(slowed[0][3]), float(slowed[0][4])
    ratio = float(slowed[0][5].split(" ")[0])
    assert 1.3 < b_ms / a_ms < 1.7 and 1.3 < ratio < 1.7
    runs = load_runs([a, b])
    backend = backend_comparison(runs, Palette.for_runs(runs)).figure
    legend = [
        t.get_text() for ax in backend.axes if ax.get_legend() for t in ax.get_legend().get_texts()
    ]
    assert "torch-cpu · quick/cpu-a" in legend and "torch-cpu · quick/cpu-b" in legend


def test_partial_run_is_flagged_and_shows_what_exists(tmp_path):
    # killed after the first model's exit record and its analytic + torch-cpu + onnxruntime costs
    run = make_run(tmp_path / "results", "killed", partial_after=4)
    files = build_report([run], tmp_path / "out")
    text = files.html.read_text(encoding="utf-8")
    assert "is PARTIAL" in text and "interrupted" in text
    page = parse(files.html)
    titles = " ".join(f["title"] for f in page.figures)
    assert len(page.images) == 3
    assert "Anytime" in titles and "Overthinking" in titles and "by backend" in titles
    assert "accuracy_vs_macs" in files.missing and "predicted_vs_measured" in files.missing
    assert "Not shown" in page.headings
    assert "**Warning:**" in (tmp_path / "out" / "report.md").read_text()


def test_run_with_no_finished_step_still_gets_a_flagged_page(tmp_path):
    run = make_run(tmp_path / "results", "empty", partial_after=0)
    files = build_report([run], tmp_path / "out")
    page = parse(files.html)
    assert page.images == [] and len(files.missing) == len(FIGURES)
    assert "is PARTIAL" in files.html.read_text(encoding="utf-8")


def test_output_inside_a_run_is_refused_except_its_report_folder(tiny_run, tmp_path):
    with pytest.raises(ResultsError, match="inside the run folder"):
        build_report([tiny_run], tiny_run / "parts")
    assert main(["report", str(tiny_run), "--out", str(tiny_run)]) == 2


def test_damaged_table_fails_the_report_naming_the_file(tmp_path, capsys):
    run = make_run(tmp_path / "results", "r1")
    bad = tamper(run, "operating_points")
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "checksum mismatch" in err
    assert not (tmp_path / "out" / "report.html").exists()


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------- derived quantities
def test_pareto_front_keeps_only_undominated_points():
    pts = pd.DataFrame({"cost": [1, 2, 2, 3, 4, 5], "acc": [50, 70, 60, 65, 80, 80]})
    front = pareto_front(pts, "cost", "acc")
    assert list(zip(front["cost"], front["acc"])) == [(1, 50), (2, 70), (4, 80)]


def test_cumulative_macs_adds_every_stage_and_head_up_to_the_exit():
    rows = [
        ("stage", 0, 100),
        ("exit", 0, 1),
        ("stage", 1, 200),
        ("exit", 1, 2),
        ("stage", 2, 400),
        ("exit", 2, 4),
    ]
    costs = pd.DataFrame(
        [
            {
                "run": "r",
                "model": "m",
                "part": p,
                "index": i,
                "metric": "macs",
                "value": v,
                "source_kind": "analytic",
            }
            for p, i, v in rows
        ]
    )
    cum = cumulative_macs(costs)
    assert list(cum["cumulative_macs"]) == [101, 303, 707]


def test_overthinking_counts_samples_an_earlier_exit_gets_right_and_the_final_gets_wrong():
    # sample a: exit0 right, final wrong -> overthinking; b: all right; c: all wrong; d: only final right
    correct = {"a": [1, 0, 0], "b": [1, 1, 1], "c": [0, 0, 0], "d": [0, 0, 1]}
    exits = pd.DataFrame(
        [
            {
                "run": "r",
                "model": "m",
                "sample_id": s,
                "exit": e,
                "correct": c[e],
                "difficulty": "hard" if s in "ac" else "easy",
            }
            for s, c in correct.items()
            for e in range(3)
        ]
    )
    ov = overthinking(exits)
    assert ov.loc[0, "overthinking"] == 0.25 and ov.loc[0, "final_wrong"] == 0.5
    by = overthinking(exits, by="difficulty").set_index("difficulty")
    assert by.loc["hard", "overthinking"] == 0.5 and by.loc["easy", "overthinking"] == 0.0


def test_report_reads_manifest_environment_generically(tiny_run):
    runs = load_runs([tiny_run, tiny_run])
    assert runs[0].label != runs[1].label  # the same run twice still gets two columns
    assert json.loads((tiny_run / "manifest.json").read_text())["status"] == "complete"


def test_run_with_only_required_columns_and_no_measurements(tmp_path):
    """A CPU-less, profile-less run: analytic costs and operating points without optional columns."""
    from eebench.results import RunWriter

    w = RunWriter.create(tmp_path / "results", "minimal", {}, {"cpu": "x"}, run_id="r1")
    costs = pd.DataFrame(
        [
            {
                "model": "m",
                "part": p,
                "index": i,
                "metric": "macs",
                "value": v,
                "unit": "MAC",
                "source_kind": "analytic",
                "source": "analytic",
                "backend": "",
                "device": "",
                "threads": 0,
                "batch_size": 1,
            }
            for p, i, v in [("stage", 0, 10), ("exit", 0, 1), ("stage", 1, 20), ("exit", 1, 1)]
        ]
    )
    ops = pd.DataFrame(
        [
            {
                "model": "m",
                "family": "f",
                "split": "test",
                "policy": "threshold",
                "confidence": "max_softmax",
                "thresholds": str(t),
                "calibration": "sweep",
                "accuracy": a,
                "expected_macs": c,
            }
            for t, a, c in [(0.5, 0.7, 12), (0.9, 0.8, 25)]
        ]
    )
    w.finish_step("costs", {"stage_costs": costs, "operating_points": ops})
    w.assemble()
    w.close("complete")
    files = build_report([w.path], tmp_path / "out")
    assert [p.name for p in files.figures] == ["fig01-accuracy_vs_macs.png"]
    for name in ("accuracy_vs_latency", "backend_comparison", "energy", "predicted_vs_measured"):
        assert name in files.missing
    assert "is PARTIAL" not in files.html.read_text(encoding="utf-8")


def test_a_run_writing_its_own_report_while_closing_is_not_called_partial(tmp_path):
    """The runner builds the report after every step finished and the tables were assembled,
    before it marks the manifest complete: that run is complete; one still running is not."""
    from eebench.report.data import RunData

    closing = {"status": "partial", "reason": "in progress", "steps_finished": True}
    closing["tables"] = {"exits": "exits.csv"}
    run = RunData("r", tmp_path, closing, {})
    assert (run.status, run.reason, run.is_partial) == ("complete", "", False)
    running = {"status": "partial", "reason": "in progress", "tables": {}}
    assert RunData("r", tmp_path, running, {}).is_partial
    killed = {**closing, "reason": "interrupted during report"}
    assert RunData("r", tmp_path, killed, {}).status == "partial"

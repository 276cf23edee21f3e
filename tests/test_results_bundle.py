import json

import pandas as pd
import pytest

from eebench.errors import ResultsError
from eebench.results import ChecksumError, Run, RunWriter, list_runs


def _costs(model: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": [model],
            "part": ["stage"],
            "index": [0],
            "metric": ["macs"],
            "value": [123.0],
            "unit": ["MAC"],
            "source_kind": ["analytic"],
            "source": ["analytic"],
            "backend": [""],
            "device": [""],
            "threads": [0],
            "batch_size": [1],
        }
    )


def test_run_is_never_overwritten(tmp_path):
    RunWriter.create(tmp_path, "quick", {}, {}, run_id="r1")
    with pytest.raises(ResultsError, match="never overwritten"):
        RunWriter.create(tmp_path, "quick", {}, {}, run_id="r1")


def test_steps_assemble_into_checksummed_tables(tmp_path):
    w = RunWriter.create(tmp_path, "quick", {"name": "quick"}, {"cpu": "x"}, run_id="r1")
    w.finish_step("costs:a", {"stage_costs": _costs("a")})
    w.finish_step("costs:b", {"stage_costs": _costs("b")})
    w.assemble()
    w.close("complete")
    run = Run.open(w.path)
    assert run.status == "complete"
    assert list(run.table("stage_costs")["model"]) == ["a", "b"]
    assert run.verify() == []


def test_tampered_table_is_reported_not_used(tmp_path):
    w = RunWriter.create(tmp_path, "quick", {}, {}, run_id="r1")
    w.finish_step("costs:a", {"stage_costs": _costs("a")})
    w.assemble()
    w.close("complete")
    path = w.path / "stage_costs.csv"
    path.write_text(path.read_text().replace("123.0", "999.0"))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        Run.open(w.path).table("stage_costs")
    listing = list_runs(tmp_path)
    assert "checksum mismatch" in listing.loc[0, "reason"]


def test_resume_keeps_finished_steps_and_detects_damaged_parts(tmp_path):
    w = RunWriter.create(tmp_path, "quick", {}, {}, run_id="r1")
    w.finish_step("costs:a", {"stage_costs": _costs("a")})
    w.finish_step("costs:b", {"stage_costs": _costs("b")})
    w.release()  # killed here (the process is gone): manifest says partial
    assert json.loads((w.path / "manifest.json").read_text())["status"] == "partial"
    r = RunWriter.resume(w.path, environment={})
    assert r.has_step("costs:a") and r.has_step("costs:b") and not r.has_step("costs:c")
    (w.path / "parts" / "costs_b.stage_costs.csv").write_text("garbage")
    assert not r.has_step("costs:b")
    r.close("complete")
    with pytest.raises(ResultsError, match="already complete"):
        RunWriter.resume(w.path, environment={})

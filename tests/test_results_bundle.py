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


# ---------------------------------------------------------------------- lock, leftovers, names
def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _partial(tmp_path):
    w = RunWriter.create(tmp_path, "quick", {"name": "quick"}, {}, run_id="r1")
    w.finish_step("costs:a", {"stage_costs": _costs("a")})
    w.release()
    return w.path


def _write_lock(run, pid: int, host: str | None = None) -> None:
    import socket

    (run / ".lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_lock_of_a_live_process_refuses_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    from eebench.errors import RunLocked

    run = _partial(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run, holder.pid)
        before = _files(run)
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on host"):
            RunWriter.check_resume(run)
        with pytest.raises(RunLocked, match="another process is working on this run"):
            RunWriter.resume(run, environment={})
        assert _files(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_lock_on_another_host_is_refused(tmp_path):
    from eebench.errors import RunLocked

    run = _partial(tmp_path)
    _write_lock(run, 1, host="some-other-machine")
    with pytest.raises(RunLocked, match="some-other-machine.*remove .*\\.lock"):
        RunWriter.resume(run, environment={})


def test_stale_lock_is_taken_over_with_a_message(tmp_path):
    import os

    run = _partial(tmp_path)
    dead = _dead_pid()
    _write_lock(run, dead)
    messages: list[str] = []
    r = RunWriter.resume(run, environment={}, log=messages.append)
    assert any(f"stale lock of pid {dead}" in m for m in messages), messages
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    r.release()
    assert not (run / ".lock").exists()


def test_two_writers_cannot_hold_one_run(tmp_path):
    from eebench.errors import RunLocked

    run = _partial(tmp_path)
    first = RunWriter.resume(run, environment={})
    with pytest.raises(RunLocked):
        RunWriter.resume(run, environment={})
    first.release()
    RunWriter.resume(run, environment={}).release()


def test_resume_removes_temp_leftovers_of_its_own_bundle(tmp_path):
    run = _partial(tmp_path)
    other = RunWriter.create(tmp_path, "quick", {"name": "quick"}, {}, run_id="r2")
    other.release()
    leftovers = [run / ".manifest.json.k1.tmp", run / "parts" / ".costs_b.stage_costs.csv.k2.tmp"]
    for p in leftovers:
        p.write_text("half")
    foreign = other.path / ".manifest.json.k3.tmp"
    foreign.write_text("half")
    keep = run / "parts" / "notes.tmp"  # not a temp file of an atomic write (no leading dot)
    keep.write_text("mine")
    r = RunWriter.resume(run, environment={})
    assert not any(p.exists() for p in leftovers)
    assert foreign.exists() and keep.exists()
    assert sorted(r.manifest["resumed"][-1]["removed_temp_files"]) == sorted(
        str(p.relative_to(run)) for p in leftovers
    )
    assert r.has_step("costs:a")
    r.release()


def test_results_clean_lists_temp_leftovers_of_unheld_runs(tmp_path, capsys):
    from eebench import cli

    run = _partial(tmp_path)
    tmp = run / "parts" / ".x.csv.abc.tmp"
    tmp.write_text("half")
    assert cli.main(["results", "clean", "--root", str(tmp_path)]) == 0
    assert f"would remove {tmp}" in capsys.readouterr().out and tmp.exists()
    assert cli.main(["results", "clean", "--root", str(tmp_path), "--yes"]) == 0
    assert not tmp.exists() and (run / "manifest.json").exists()


@pytest.mark.parametrize("run_id", ["../../escaped", "a/b", "..", ".", "", "x y", "é"])
def test_run_id_is_a_plain_name(tmp_path, run_id):
    with pytest.raises(ResultsError, match="plain name"):
        RunWriter.create(tmp_path / "out", "quick", {}, {}, run_id=run_id)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_run_id_with_dots_dashes_and_underscores_is_accepted(tmp_path):
    w = RunWriter.create(tmp_path, "quick", {}, {}, run_id="v1.2_try-3")
    assert w.path == tmp_path / "quick" / "v1.2_try-3"
    w.release()


def test_suite_name_of_dots_cannot_escape(tmp_path):
    w = RunWriter.create(tmp_path / "out", "..", {}, {}, run_id="r1")
    assert w.path.parent.parent == tmp_path / "out"
    w.release()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", "all done", "field 'steps' is a str, expected an object"),
        ("tables", [], "field 'tables' is a list, expected an object"),
        ("status", "finished", "field 'status' is 'finished', expected one of"),
        ("steps", {"costs:a": "done"}, "field 'steps.costs:a' is not a step record"),
    ],
)
def test_hand_edited_manifest_is_a_message(tmp_path, capsys, field, value, message):
    from eebench import cli

    w = RunWriter.create(tmp_path, "quick", {}, {}, run_id="r1")
    w.release()
    manifest = json.loads((w.path / "manifest.json").read_text())
    manifest[field] = value
    (w.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResultsError, match=message):
        Run.open(w.path)
    code = cli.main(["report", str(w.path), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err

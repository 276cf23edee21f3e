"""A run never lies about its state: identity-checked resume, ``complete`` only after the report,
errors of the operating system as messages, checks before the run folder exists."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from eebench import cli
from eebench.errors import ResumeRefused
from eebench.results import Run
from eebench.suites import runner as runner_mod
from eebench.suites.runner import RunOptions, run_suite

SMALL = {
    "name": "small",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 300}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 3, "lr": 0.02, "batch_size": 32},
        },
    ],
    "policies": [
        {"name": "threshold", "confidence": ["max_softmax"], "thresholds": {"num": 11}},
    ],
    "baselines": ["final-only"],
    "calibration": {"accuracy_within": [0.05], "budget_fractions": [0.9]},
    "backends": ["torch-cpu", "simulated:jetson-orin-nano-8gb-15w"],
    "measurement": {
        "warmup": 1,
        "min_repeats": 3,
        "min_time_s": 0.0,
        "max_time_s": 0.3,
        "energy": False,
    },
    "validation": {"samples": 8, "repeats": 1},
}


def _suite(folder: Path, data: dict, name: str = "small.yaml") -> Path:
    p = folder / name
    p.write_text(yaml.safe_dump(data))
    return p


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _kill_at(monkeypatch, method: str) -> None:
    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod.SuiteRunner, method, killed)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A suite file, a warm checkpoint cache and a run killed in its policy step (kept pristine:
    tests copy it)."""
    root = tmp_path_factory.mktemp("integrity")
    suite = _suite(root, SMALL)
    mp = pytest.MonkeyPatch()
    _kill_at(mp, "_policies")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_suite(
                str(suite),
                RunOptions(
                    out_root=root / "pristine",
                    cache_root=root / "cache",
                    run_id="killed",
                    progress=False,
                    report=False,
                ),
            )
    finally:
        mp.undo()
    return root, suite


@pytest.fixture
def killed(base, tmp_path):
    """A private copy of the killed run: (suite file, run folder, results root)."""
    root, suite = base
    out = tmp_path / "results"
    shutil.copytree(root / "pristine", out)
    run = out / "small" / "killed"
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["run_options"]["cache"] = str(root / "cache")
    (run / "manifest.json").write_text(json.dumps(manifest))
    return suite, run, out


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- identity
def test_killed_run_is_partial_with_the_resume_command(killed):
    suite, run, _ = killed
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    assert "interrupted during the work after step 'estimate:bl:" in manifest["reason"]
    assert "5 finished steps are kept" in manifest["reason"]
    assert f"continue with: eebench run {suite} --resume " in manifest["reason"]
    assert len(manifest["identity"]["suite_sha256"]) == 64
    assert not (run / ".lock").exists(), "the lock is released when the process stops"


def test_resume_with_another_suite_is_refused_and_nothing_written(killed, tmp_path, capsys):
    _, run, out = killed
    other = json.loads(json.dumps(SMALL))
    other["name"] = "other"
    other_path = _suite(tmp_path, other, "other.yaml")
    before = _snapshot(out)
    code, _, err = _cli(capsys, "run", str(other_path), "--resume", str(run))
    assert code == 2 and "Traceback" not in err
    assert "another suite" in err and 'name: "small" → "other"' in err
    assert f"New run: eebench run {other_path} --out {out}" in err
    assert _snapshot(out) == before


def test_resume_with_an_edited_suite_lists_the_changed_fields(killed, capsys):
    suite, run, out = killed
    edited = json.loads(json.dumps(SMALL))
    edited["calibration"]["budget_fractions"] = [0.5]
    edited["measurement"]["warmup"] = 2
    suite.write_text(yaml.safe_dump(edited))
    before = _snapshot(out)
    try:
        code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run))
    finally:
        suite.write_text(yaml.safe_dump(SMALL))
    assert code == 2
    assert "edited version of its suite" in err
    assert "calibration.budget_fractions[0]: 0.9 → 0.5" in err
    assert "measurement.warmup: 1 → 2" in err
    assert _snapshot(out) == before


def test_resume_with_other_backends_is_an_edited_suite(killed, capsys):
    suite, run, out = killed
    before = _snapshot(out)
    code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run), "--backend", "torch-cpu")
    assert code == 2 and "backends[1]" in err and "<absent>" in err
    assert _snapshot(out) == before


def test_resume_across_commits_needs_force_and_is_recorded(killed, capsys):
    suite, run, _ = killed
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["identity"]["git_commit"] = "0" * 40
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(run)
    with pytest.raises(ResumeRefused, match=r"(?s)git_commit: 0{40} → .*--force-resume"):
        run_suite(str(suite), RunOptions(resume=run, progress=False, report=False))
    assert _snapshot(run) == before
    run_suite(str(suite), RunOptions(resume=run, progress=False, report=False, force_resume=True))
    after = json.loads((run / "manifest.json").read_text())
    assert after["status"] == "complete"
    assert after["resumed"][-1]["forced"]["from"]["git_commit"] == "0" * 40


def test_resume_uses_the_cache_recorded_in_the_run(killed, monkeypatch, tmp_path):
    suite, run, out = killed
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a relative default would land here
    run_suite(str(suite), RunOptions(resume=run, progress=False, report=False))
    assert Run.open(run).status == "complete"
    assert not list(cwd.iterdir()) and not (out / "cache").exists()


# ---------------------------------------------------------------------- status is a truth
def test_complete_is_written_after_the_report(killed, monkeypatch):
    suite, run, _ = killed
    seen = []

    def report(paths, out):
        seen.append(json.loads((Path(paths[0]) / "manifest.json").read_text())["status"])
        raise RuntimeError("figure backend broke")

    monkeypatch.setattr("eebench.report.build_report", report)
    with pytest.raises(RuntimeError, match="figure backend"):
        run_suite(str(suite), RunOptions(resume=run, progress=False))
    assert seen == ["partial"], "the run must not be complete while its report is written"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["steps_finished"] is True
    assert "the report failed: RuntimeError: figure backend broke" in manifest["reason"]
    assert "the tables are complete" in manifest["reason"]


def test_kill_during_report_then_resume_writes_only_the_report(killed, monkeypatch, capsys):
    suite, run, _ = killed
    _kill_at(monkeypatch, "_report")
    code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run))
    assert code == 130
    assert "interrupted during the report" in err and f"--resume {run}" in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["steps_finished"] is True
    tables = {p.name: p.read_bytes() for p in run.glob("*.csv")}
    parts = _snapshot(run / "parts")
    steps = dict(manifest["steps"])
    monkeypatch.undo()

    def no_steps(self):
        raise AssertionError("a resume of a run with every step finished must not run steps")

    monkeypatch.setattr(runner_mod.SuiteRunner, "_run_steps", no_steps)
    monkeypatch.setattr(runner_mod.SuiteRunner, "_preflight", no_steps)
    code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run))
    assert code == 0, err
    after = json.loads((run / "manifest.json").read_text())
    assert after["status"] == "complete" and after["steps"] == steps
    assert (run / "report" / "report.html").exists() and (run / "report" / "report.md").exists()
    assert _snapshot(run / "parts") == parts
    assert {p.name: p.read_bytes() for p in run.glob("*.csv")} == tables


# ---------------------------------------------------------------------- operating-system errors
def test_full_file_system_gives_a_message_and_a_resumable_run(killed, monkeypatch, capsys):
    suite, run, _ = killed
    from eebench.results import bundle

    real = bundle.atomic_write_bytes

    def full(path, data):
        if "policies" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(bundle, "atomic_write_bytes", full)
    code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run), "--no-report")
    assert code == 2 and "Traceback" not in err
    assert "No space left on device at " in err and "the file system is full" in err
    assert "--resume" in err and f"eebench run {suite} --resume {run}" in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "partial" and "No space left on device" in manifest["reason"]
    monkeypatch.undo()
    code, _, err = _cli(capsys, "run", str(suite), "--resume", str(run), "--no-report")
    assert code == 0, err
    assert Run.open(run).status == "complete" and len(Run.open(run).table("operating_points"))


def test_out_naming_a_file_is_refused(tmp_path, base, capsys):
    _, suite = base
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(target))
    assert code == 2 and "Traceback" not in err
    assert f"--out {target}: not a folder" in err
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(target / "sub"))
    assert code == 2 and f"({target} is a file)" in err
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("err_no", "option", "fix"),
    [
        (errno.EROFS, "--out", "the file system is read-only"),
        (errno.EACCES, "--out", "permission denied"),
        (errno.EROFS, "--cache", "the file system is read-only"),
    ],
)
def test_unwritable_out_or_cache_is_a_message(
    base, tmp_path, monkeypatch, capsys, err_no, option, fix
):
    root, suite = base
    target = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(target)):
            raise OSError(err_no, os.strerror(err_no), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = target if option == "--out" else tmp_path / "results"
    cache = target if option == "--cache" else root / "cache"
    code, _, err = _cli(
        capsys, "run", str(suite), "--out", str(out), "--cache", str(cache), "--no-report"
    )
    assert code == 2 and "Traceback" not in err
    assert fix in err and f"{option} (now {target})" in err
    assert not target.exists() and not (tmp_path / "results").exists()


# ---------------------------------------------------------------------- checks before the run
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["dataset"]["options"].update(limt=10), "dataset"),
        (lambda d: d["models"][0]["config"].update(widht=4), "models[0].config"),
        (lambda d: d["models"][0].update(checkpoint="missing.pt"), "models[0].checkpoint"),
    ],
)
def test_bad_dataset_model_or_checkpoint_leaves_no_folder(tmp_path, capsys, edit, field):
    data = json.loads(json.dumps(SMALL))
    edit(data)
    suite = _suite(tmp_path, data)
    out = tmp_path / "results"
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"{suite}: {field}" in err
    assert not out.exists(), "a bad suite must not leave a folder behind"


def test_checkpoint_of_another_architecture_is_refused_up_front(base, tmp_path, capsys):
    root, _ = base
    ckpt = next((root / "cache" / "checkpoints").glob("*.pt"))
    data = json.loads(json.dumps(SMALL))
    data["models"][0]["checkpoint"] = str(ckpt)
    data["models"][0]["config"] = {"width": 8}
    suite = _suite(tmp_path, data)
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(tmp_path / "results"))
    assert code == 2 and "models[0].checkpoint" in err and "width" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "run_id", ["../../escaped", "a/b", "..", ".", "x y", "/abs", "semi;colon", "a" * 129]
)
def test_run_id_must_be_a_plain_name(base, tmp_path, capsys, run_id):
    _, suite = base
    out = tmp_path / "deep" / "results"
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(out), "--run-id", run_id)
    assert code == 2 and "--run-id" in err and "plain name" in err
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escaped").exists()


# ---------------------------------------------------------------------- leftovers
def test_interrupted_first_manifest_write_is_resumable_and_cleanable(base, tmp_path, capsys):
    _, suite = base
    out = tmp_path / "results"
    folder = out / "small" / "r1"
    folder.mkdir(parents=True)
    (folder / ".manifest.json.abc123.tmp").write_text('{"schema_ver')
    code, stdout, _ = _cli(capsys, "results", "list", "--root", str(out))
    assert code == 0 and "incomplete" in stdout and str(folder) in stdout
    code, _, err = _cli(capsys, "run", str(suite), "--out", str(out), "--run-id", "r1")
    assert code == 2 and "interrupted while being created" in err and "results clean" in err
    code, stdout, _ = _cli(capsys, "results", "clean", "--root", str(out))
    assert code == 0 and f"would remove {folder}/" in stdout and folder.exists()
    code, _, err = _cli(
        capsys,
        "run",
        str(suite),
        "--resume",
        str(folder),
        "--no-report",
        "--cache",
        str(base[0] / "cache"),
    )
    assert code == 0, err
    assert Run.open(folder).status == "complete"
    assert not list(folder.glob(".*.tmp"))


def test_results_clean_removes_incomplete_runs_only_with_yes(tmp_path, capsys):
    out = tmp_path / "results"
    folder = out / "small" / "r2"
    folder.mkdir(parents=True)
    (folder / ".manifest.json.zz.tmp").write_text("")
    code, stdout, _ = _cli(capsys, "results", "clean", "--root", str(out), "--yes")
    assert code == 0 and f"removing {folder}/" in stdout
    assert not folder.exists()
    code, stdout, _ = _cli(capsys, "results", "clean", "--root", str(out))
    assert "nothing to clean" in stdout

"""Every bad input gets a message and exit code 2, never a traceback: a table of cases.

Each case builds its input (a suite file, a damaged run folder, an option
naming a file, ...) in a temporary folder, runs the ``eebench`` command line
on it and records the exit code, the last line of the error output (the
message a user sees) and whether a traceback escaped. The suite cases also
check that no run folder was left behind. Where this process may mount file
systems (root), a 256 KiB tmpfs gives a real full file system (the run must
stay resumable: the tmpfs is then enlarged and the run resumed) and a
read-only tmpfs a real read-only one.

    nice -n 5 python benchmarks/bad_inputs.py [--subprocess]

``--subprocess`` runs each command as its own process (slower: torch is
imported every time) instead of calling ``eebench.cli.main`` in this one.
Exit code 0 when every case exits with 2 and without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]

SUITE = {
    "name": "bad",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 300}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 2, "lr": 0.02, "batch_size": 32},
        }
    ],
    "policies": [{"name": "threshold", "thresholds": {"num": 11}}],
    "baselines": ["final-only"],
    "backends": ["torch-cpu"],
    "measurement": {"warmup": 1, "min_repeats": 3, "min_time_s": 0.0, "max_time_s": 0.2},
    "validation": {"samples": 8, "repeats": 1},
}


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # makes the input under a folder, returns argv
    out_must_not_exist: bool = False


def _suite(
    folder: Path, edit: Callable[[dict], None] | None = None, text: str | None = None
) -> str:
    data = json.loads(json.dumps(SUITE))
    if edit is not None:
        edit(data)
    p = folder / "suite.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data))
    return str(p)


def _raw(replace: dict[str, str]) -> Callable[[Path], list[str]]:
    """A suite whose YAML text has snippets replaced (for .inf/.nan literals, ${VAR}, ...)."""

    def build(folder: Path) -> list[str]:
        text = yaml.safe_dump(SUITE)
        for old, new in replace.items():
            assert old in text, old
            text = text.replace(old, new, 1)
        return ["run", _suite(folder, text=text), "--out", str(folder / "out")]

    return build


def _edited(edit: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    return lambda f: ["run", _suite(f, edit), "--out", str(f / "out")]


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _run_folder(folder: Path, suite: dict | None = None, status: str = "partial") -> Path:
    from eebench.results import RunWriter

    w = RunWriter.create(folder / "out", "bad", suite or {"name": "bad"}, {}, run_id="r1")
    w.release()
    if status != "partial":
        w.close(status)
    return w.path


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        run = _run_folder(folder)
        m = json.loads((run / "manifest.json").read_text())
        edit(m)
        (run / "manifest.json").write_text(json.dumps(m))
        return ["report", str(run), "--out", str(folder / "report")]

    return build


def _resume_of(make: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    return lambda f: ["run", _suite(f), "--resume", str(make(f)), *extra]


def _locked(folder: Path) -> Path:
    import socket

    run = _run_folder(folder)
    (run / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return run


def _file(folder: Path, name: str = "a-file", data: bytes = b"x") -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


def _folder(folder: Path, name: str, with_file: bool = False) -> Path:
    p = folder / name
    p.mkdir()
    if with_file:
        _file(p, "notes.txt")
    return p


def _broken_manifest(folder: Path) -> list[str]:
    run = _run_folder(folder)
    (run / "manifest.json").write_text("{")
    return ["report", str(run)]


CASES: list[Case] = [
    Case("suite file missing", lambda f: ["run", str(f / "nope.yaml")]),
    Case("built-in suite name typo", lambda f: ["run", "quik"]),
    Case("suite is a folder", lambda f: ["run", str(_folder(f, "s.yaml"))]),
    Case("suite not valid YAML", lambda f: ["run", _suite(f, text="name: [unclosed\n")]),
    Case("suite not UTF-8", lambda f: ["run", str(_file(f, "s.yaml", b"name: \xff\xfe\n"))]),
    Case("suite top level is a list", lambda f: ["run", _suite(f, text="- a\n- b\n")]),
    Case("suite without models", _edited(lambda d: d.pop("models")), True),
    Case("unknown key models[0].confg", _edited(_set(("models", 0, "confg"), {})), True),
    Case("wrong type min_repeats", _edited(_set(("measurement", "min_repeats"), "many")), True),
    Case("unknown model name", _edited(_set(("models", 0, "name"), "big-litle")), True),
    Case("unknown backend", _edited(_set(("backends", 0), "torch-cpuu")), True),
    Case("unknown hardware profile", _edited(_set(("backends", 0), "simulated:orin")), True),
    Case("unknown policy", _edited(_set(("policies", 0, "name"), "treshold")), True),
    Case(
        "unknown confidence measure",
        _edited(_set(("policies", 0, "confidence"), ["max_softmx"])),
        True,
    ),
    Case("unknown dataset", _edited(_set(("dataset", "name"), "digit")), True),
    Case("lr: .inf", _raw({"lr: 0.02": "lr: .inf"}), True),
    Case(
        "thresholds [.nan, .inf]",
        _raw({"  thresholds:\n    num: 11": "  thresholds: [.nan, .inf]"}),
        True,
    ),
    Case("min_time_s: .inf", _raw({"min_time_s: 0.0": "min_time_s: .inf"}), True),
    Case(
        "patience thresholds [0]",
        _edited(lambda d: d["policies"].append({"name": "patience", "thresholds": [0]})),
        True,
    ),
    Case(
        "patience thresholds [-2]",
        _edited(lambda d: d["policies"].append({"name": "patience", "thresholds": [-2]})),
        True,
    ),
    Case("budget fraction 1.5", _edited(_set(("calibration",), {"budget_fractions": [1.5]})), True),
    Case(
        "min_time_s above max_time_s",
        _edited(_set(("measurement", "min_time_s"), 9.0)),
        True,
    ),
    Case("${VAR} not set", _raw({"limit: 300": "limit: ${EEBENCH_SURELY_UNSET}"}), True),
    Case("training key typo (epoch)", _edited(_set(("models", 0, "training", "epoch"), 2)), True),
    Case("dataset option typo (limt)", _edited(_set(("dataset", "options"), {"limt": 9})), True),
    Case("model config typo (widht)", _edited(_set(("models", 0, "config"), {"widht": 4})), True),
    Case("model config wrong type", _edited(_set(("models", 0, "config"), {"width": "w"})), True),
    Case("checkpoint file missing", _edited(_set(("models", 0, "checkpoint"), "/nope.pt")), True),
    Case(
        "checkpoint not a checkpoint",
        lambda f: [
            "run",
            _suite(f, _set(("models", 0, "checkpoint"), str(_file(f, "c.pt", b"garbage")))),
            "--out",
            str(f / "out"),
        ],
        True,
    ),
    Case("--out names a file", lambda f: ["run", _suite(f), "--out", str(_file(f))]),
    Case("--out below a file", lambda f: ["run", _suite(f), "--out", str(_file(f) / "x")]),
    Case("--cache names a file", lambda f: ["run", _suite(f), "--cache", str(_file(f))]),
    Case("--out not writable (/sys)", lambda f: ["run", _suite(f), "--out", "/sys/eebench-out"]),
    Case("--run-id ../../escaped", lambda f: ["run", _suite(f), "--run-id", "../../escaped"]),
    Case("--run-id a/b", lambda f: ["run", _suite(f), "--run-id", "a/b"]),
    Case("--run-id ..", lambda f: ["run", _suite(f), "--run-id", ".."]),
    Case("--backend typo", lambda f: ["run", _suite(f), "--backend", "onnx"]),
    Case("--force-resume without --resume", lambda f: ["run", _suite(f), "--force-resume"]),
    Case("--resume of a missing folder", lambda f: ["run", _suite(f), "--resume", str(f / "no")]),
    Case(
        "--resume of a folder that is no run",
        _resume_of(lambda f: _folder(f, "d", with_file=True)),
    ),
    Case("--resume of a complete run", _resume_of(lambda f: _run_folder(f, status="complete"))),
    Case("--resume with another suite", _resume_of(lambda f: _run_folder(f, {"name": "other"}))),
    Case(
        "--resume with an edited suite",
        _resume_of(lambda f: _run_folder(f, {**SUITE, "backends": ["torch-cpu", "onnxruntime"]})),
    ),
    Case("--resume of a run a live process holds", _resume_of(_locked)),
    Case("report: manifest steps is a string", _manifest_edit(_set(("steps",), "all"))),
    Case("report: manifest status unknown", _manifest_edit(_set(("status",), "done"))),
    Case("report: manifest schema version", _manifest_edit(_set(("schema_version",), 99))),
    Case("report: manifest not JSON", _broken_manifest),
    Case("report: no such run", lambda f: ["report", str(f / "nope")]),
    Case("compare: no such run", lambda f: ["compare", str(f / "a"), str(f / "b")]),
]


def _mounted(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return res.returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


def _call(argv: list[str], in_process: bool) -> tuple[int, str, bool]:
    """(exit code, stderr, traceback escaped)."""
    if not in_process:
        env = dict(os.environ, EEBENCH_ROOT=str(REPO))
        res = subprocess.run(
            [sys.executable, "-m", "eebench.cli", *argv], capture_output=True, text=True, env=env
        )
        return res.returncode, res.stderr, "Traceback" in res.stderr
    from eebench import cli

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except BaseException:  # noqa: BLE001 (this is what the table is for)
            return -1, err.getvalue() + traceback.format_exc(), True
    return code, err.getvalue(), False


def _message(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    start = next((i for i, x in enumerate(lines) if x.startswith("eebench")), len(lines) - 1)
    text = " / ".join(x.strip() for x in lines[start:]) if lines else ""
    return text if len(text) <= 260 else text[:257] + "..."


def real_file_system_cases(work: Path, in_process: bool) -> list[dict]:
    """A full and a read-only tmpfs, when this process may mount them."""
    rows = []
    full = work / "fullfs"
    if not _mounted(full, "size=192k"):
        return [{"case": "full / read-only tmpfs", "exit": "", "message": "skipped: cannot mount"}]
    try:
        suite = _suite(work)
        argv = ["run", suite, "--out", str(full), "--cache", str(work / "cache"), "--no-report"]
        code, err, tb = _call(argv + ["--run-id", "full"], in_process)
        rows.append(_row("--out on a full file system (192 KiB tmpfs)", code, err, tb))
        subprocess.run(["mount", "-o", "remount,size=64m", str(full)], check=True)
        run = full / "bad" / "full"
        code2, err2, tb2 = _call(["run", suite, "--resume", str(run), "--no-report"], in_process)
        status = json.loads((run / "manifest.json").read_text()).get("status")
        rows.append(
            {
                "case": "  ... resumed after freeing space",
                "exit": code2,
                "message": f"status {status}" + (f"; {_message(err2)}" if code2 else ""),
                "traceback": tb2,
            }
        )
    finally:
        _umount(full)
    ro = work / "rofs"
    if _mounted(ro, "ro,size=64k"):
        try:
            code, err, tb = _call(["run", _suite(work), "--out", str(ro / "out")], in_process)
            rows.append(_row("--out on a read-only file system", code, err, tb))
        finally:
            _umount(ro)
    return rows


def _row(name: str, code: int, err: str, tb: bool) -> dict:
    return {"case": name, "exit": code, "message": _message(err), "traceback": tb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subprocess", action="store_true", help="one process per case")
    ap.add_argument("--no-mount", action="store_true", help="skip the tmpfs cases")
    args = ap.parse_args()
    os.environ.setdefault("EEBENCH_ROOT", str(REPO))
    rows = []
    with tempfile.TemporaryDirectory(prefix="eebench-bad-") as tmp:
        for i, case in enumerate(CASES):
            folder = Path(tmp) / f"c{i}"
            folder.mkdir()
            argv = case.build(folder)
            code, err, tb = _call(argv, not args.subprocess)
            row = _row(case.name, code, err, tb)
            if case.out_must_not_exist and (folder / "out").exists():
                row["message"] += " [LEFT A FOLDER BEHIND]"
            rows.append(row)
        if not args.no_mount and os.geteuid() == 0:
            work = Path(tmp) / "fs"
            work.mkdir()
            rows += real_file_system_cases(work, not args.subprocess)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 300):
        print(table.to_markdown(index=False))
    bad = table[
        (table["traceback"] == True)  # noqa: E712
        | ~table["exit"].isin([2, 0])
        | table["message"].str.contains("LEFT A FOLDER")
    ]
    print(f"\n{len(table)} cases; {len(bad)} without a clean message and exit code 2")
    return 0 if bad.empty else 1


if __name__ == "__main__":
    sys.exit(main())

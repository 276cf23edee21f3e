"""Kill ``eebench run`` with SIGKILL at seeded random moments, resume, compare with an intact run.

A run must survive ``kill -9`` anywhere: every finished step is in the bundle
before the next one starts, and ``--resume`` redoes only what is missing. This
soak checks it end to end on a small suite (digits, one cascade, torch-cpu and
a simulated profile, validation and the report on):

1. an uninterrupted reference run, whose log is timestamped line by line to
   find when each step ran (the phases: start-up and checks, every step, the
   tables and the report);
2. ``--kills`` runs, each with a fresh checkpoint cache (so training is a step
   that can be killed too), killed at a position drawn (seeded) inside one
   phase: the run's log says when the phase begins, and its length is the
   reference run's scaled to this run's pace. The phases are visited in turn,
   so the kills are spread over every step;
3. each killed run is resumed (``eebench run SUITE --resume RUN``; a run killed
   before its folder existed is started again) and its deterministic tables are
   compared with the reference: the exit record (``exits``), the operating
   points' thresholds, accuracy, exit fractions and expected MACs, and the
   analytic stage costs. Measured and estimated latencies differ between any
   two runs and are not compared.

It prints one row per kill: the moment (seconds after the start), the step
that was running (read from the killed run's manifest, not from the plan), the
resume's exit code, the run's final status and whether the tables are
identical. Not part of the test run (minutes of CPU); run it with::

    nice -n 5 python benchmarks/soak_kill.py [--kills 10] [--seed 0] [--snapshot]

``--snapshot`` runs a copy of the eebench package made at the start: in a
checkout where commits land while the soak runs, a resume would otherwise be
refused (rightly) as a resume across commits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
# the runs' working folder: outside the checkout, so that ``python -m eebench.cli`` imports the
# package from PYTHONPATH (the snapshot) rather than from the current folder
CWD = Path(tempfile.gettempdir())

SUITE = {
    "name": "soak",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 400}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 8},
            "training": {"scheme": "cascade", "epochs": 6, "lr": 0.02, "batch_size": 32},
        }
    ],
    "policies": [
        {"name": "threshold", "confidence": ["max_softmax", "entropy"], "thresholds": {"num": 21}},
        {"name": "patience", "thresholds": [1]},
    ],
    "baselines": ["oracle", "final-only"],
    "calibration": {"accuracy_within": [0.02], "budget_fractions": [0.8]},
    "backends": ["torch-cpu", "simulated:jetson-orin-nano-8gb-15w"],
    "measurement": {
        "warmup": 2,
        "min_repeats": 5,
        "min_time_s": 0.1,
        "max_time_s": 0.6,
        "energy": False,
    },
    "validation": {"samples": 30, "repeats": 1},
}

# the deterministic columns of each compared table (missing ones are skipped)
OP_COLUMNS = ("model", "split", "policy", "confidence", "calibration", "thresholds", "accuracy")
OP_VALUES = ("accuracy", "expected_macs")


@dataclass
class Phase:
    name: str
    start: float
    end: float
    # the log line that begins the phase (None: the process start)
    marker: str | None = None


@dataclass
class Outcome:
    kill: int
    at_s: float
    planned: str
    step: str
    resume_rc: int | None
    status: str
    identical: str
    note: str = ""


def _env(pythonpath: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["EEBENCH_ROOT"] = str(REPO)  # suites and hardware profiles of this checkout
    env["PYTHONUNBUFFERED"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "eebench.cli", *args]


def reference_run(suite: Path, out: Path, cache: Path, env: dict[str, str]) -> list[Phase]:
    """Run the suite uninterrupted; its timestamped log gives the phases."""
    proc = subprocess.Popen(
        _cmd("run", str(suite), "--out", str(out), "--cache", str(cache), "--run-id", "ref")
        + ["--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=CWD,
    )
    t0 = time.monotonic()
    marks: list[tuple[float, str, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - t0
        text = line.strip()
        if text.startswith("run ") and not marks:
            marks.append((now, "start-up and checks", "run "))
        elif text.startswith("done "):
            key = text.split()[1]
            marks.append((now, key, f"done {key} "))
    rc = proc.wait()
    end = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"the reference run failed (exit code {rc}); nothing to compare with")
    phases, prev, marker = [], 0.0, None
    for at, name, line in marks:
        phases.append(Phase(name, prev, at, marker))
        prev, marker = at, line
    phases.append(Phase("tables and report", prev, end, marker))
    return phases


# kills land within this share of a phase (its length scaled to the run's pace): steps run
# faster or slower than in the reference as the machine's load changes
INSIDE = 0.8


def kill_plan(phases: list[Phase], kills: int, seed: int) -> list[tuple[Phase, float]]:
    """(phase, position in it from 0 to 1) per kill: the phases visited in turn (shuffled,
    seeded), the position drawn uniformly."""
    rng = np.random.default_rng(seed)
    order = list(range(len(phases)))
    plan = []
    for k in range(kills):
        if k % len(order) == 0:
            rng.shuffle(order)
        plan.append((phases[order[k % len(order)]], float(rng.uniform(0.0, 1.0))))
    return plan


def killed_run(
    cmd: list[str], env: dict[str, str], phase: Phase, position: float
) -> tuple[float, bool]:
    """Start ``cmd``, wait for ``phase`` to begin (its log line), SIGKILL at ``position`` of it.

    The phase's length is the reference run's, scaled by this run's pace (when the phase began
    here vs there). Returns (seconds from the start to the kill, whether the run ended first).
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=CWD
    )
    t0 = time.monotonic()
    began = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if phase.marker is not None and line.strip().startswith(phase.marker):
                began.set()
        began.set()  # the output ended: the run is over

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if phase.marker is not None:
        began.wait()
    start = time.monotonic()
    pace = (start - t0) / phase.start if phase.start > 1.0 else 1.0
    length = max(phase.end - phase.start, 0.05) * min(max(pace, 0.25), 4.0)
    delay = position * INSIDE * length
    while time.monotonic() - start < delay and proc.poll() is None:
        time.sleep(0.005)
    ended = proc.poll() is not None
    if not ended:
        os.kill(proc.pid, signal.SIGKILL)
    at = time.monotonic() - t0
    proc.wait()
    reader.join(timeout=5)
    return at, ended


def state_of(run: Path, phases: list[Phase]) -> str:
    """The phase that was running when the run died, from what its bundle holds."""
    mf = run / "manifest.json"
    if not run.exists():
        return "start-up and checks (no run folder)"
    if not mf.exists():
        return "creating the run folder"
    manifest = json.loads(mf.read_text())
    if manifest.get("steps_finished"):
        return "report"
    done = set(manifest.get("steps", {}))
    steps = [p.name for p in phases[1:-1]]
    return next((s for s in steps if s not in done), "tables")


def deterministic_tables(run: Path) -> dict[str, pd.DataFrame]:
    exits = pd.read_csv(run / "exits.csv")
    exits = exits.sort_values(list(exits.columns[:5])).reset_index(drop=True)
    ops = pd.read_csv(run / "operating_points.csv")
    cols = [c for c in OP_COLUMNS if c in ops.columns]
    cols += [c for c in ops.columns if c.startswith("exit_frac_")]
    cols += [c for c in OP_VALUES if c in ops.columns and c not in cols]
    ops = ops[cols].drop_duplicates().sort_values(cols).reset_index(drop=True)
    costs = pd.read_csv(run / "stage_costs.csv")
    costs = costs[costs["source_kind"] == "analytic"][["model", "part", "index", "metric", "value"]]
    costs = costs.sort_values(["model", "part", "index", "metric"]).reset_index(drop=True)
    return {"exits": exits, "operating_points": ops, "analytic stage_costs": costs}


def compare(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> str:
    diffs = []
    for name in a:
        try:
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
        except AssertionError:
            diffs.append(name)
    return "yes" if not diffs else "no: " + ", ".join(diffs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="keep the runs here (default: a temp folder)")
    ap.add_argument("--snapshot", action="store_true", help="run a copy of the package")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="eebench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    pythonpath = None
    if args.snapshot:
        pythonpath = work / "code"
        shutil.copytree(REPO / "eebench", pythonpath / "eebench", dirs_exist_ok=True)
    env = _env(pythonpath)
    suite = work / "soak.yaml"
    suite.write_text(yaml.safe_dump(SUITE))

    t = time.perf_counter()
    phases = reference_run(suite, work / "ref", work / "cache-ref", env)
    ref_s = time.perf_counter() - t
    reference = deterministic_tables(work / "ref" / "soak" / "ref")
    print(f"reference run: {ref_s:.1f} s wall; phases (s after start):")
    for p in phases:
        print(f"  {p.start:6.2f} - {p.end:6.2f}  {p.name}")

    outcomes = []
    for k, (phase, position) in enumerate(kill_plan(phases, args.kills, args.seed), 1):
        out, cache, run_id = work / f"k{k}", work / f"cache-k{k}", f"k{k}"
        run = out / "soak" / run_id
        cmd = _cmd("run", str(suite), "--out", str(out), "--cache", str(cache), "--run-id", run_id)
        at, finished_first = killed_run(cmd + ["--no-progress"], env, phase, position)
        planned = f"{phase.name} at {position * INSIDE:.0%}"
        step = "finished before the kill" if finished_first else state_of(run, phases)
        note = ""
        if (run / "manifest.json").exists() and json.loads((run / "manifest.json").read_text()).get(
            "status"
        ) == "complete":
            rc = None
            note = "complete before the kill; nothing to resume"
        else:
            if run.exists():
                cmd = _cmd("run", str(suite), "--resume", str(run), "--no-progress")
            else:  # killed before the folder existed: nothing was written, start again
                cmd = _cmd("run", str(suite), "--out", str(out), "--run-id", run_id)
                cmd += ["--cache", str(cache), "--no-progress"]
                note = "started again (no folder)"
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=CWD)
            rc = res.returncode
            if rc != 0:
                note = (res.stderr.strip().splitlines() or ["?"])[-1][:160]
        status = "?"
        identical = "no run"
        if (run / "manifest.json").exists():
            status = json.loads((run / "manifest.json").read_text()).get("status", "?")
            if status == "complete":
                identical = compare(reference, deterministic_tables(run))
        outcomes.append(Outcome(k, at, planned, step, rc, status, identical, note))
        print(f"  kill {k}: {at:.2f} s, {step}: resume exit {rc}, {status}, identical {identical}")

    table = pd.DataFrame([vars(o) for o in outcomes]).rename(
        columns={
            "at_s": "kill at (s)",
            "planned": "planned phase",
            "step": "running when killed",
            "resume_rc": "resume exit",
            "identical": "identical tables",
        }
    )
    print()
    print(table.to_markdown(index=False, floatfmt=".2f"))
    print(f"\nruns kept under {work}")
    return 0 if all(o.identical == "yes" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

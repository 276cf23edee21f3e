"""Acceptance of ``eebench compare`` as a CI gate: no false alarms, and a real slowdown caught.

Protocol, per pair ``i``: three back-to-back runs of the same commit of a small,
measurement-focused suite (``tests/suites/compare-acceptance.yaml``: two of the
quick suite's models on torch-cpu, training cached so only measurement repeats),
each a fresh ``eebench run`` process:

* ``A_i`` and ``B_i``: unchanged; ``compare A_i B_i`` is a **self-comparison** and
  must report 0 latency regressions;
* ``C_i``: the same, with the testing hook ``EEBENCH_INJECT_DELAY=MODEL:STAGE:FACTOR``
  (default ``branchynet-resnet14:1:1.3``) slowing one stage down by the factor;
  ``compare B_i C_i`` is an **injected pair** and must flag that stage as a regression.

Acceptance: 0 regressions in every self-comparison, the injected stage detected in
at least 9 of 10 pairs. The summary (counts, per-pair ratios and intervals, the
load average before each run) is printed and written to ``OUT/summary.json`` and
``OUT/summary.md``. On a shared machine, quote the load average with the counts.

Run::

    python benchmarks/compare_acceptance.py --pairs 10
    python benchmarks/compare_acceptance.py --pairs 10 --compare-only   # re-judge stored runs
    python benchmarks/compare_acceptance.py --pairs 4 --backend onnxruntime --out /tmp/ca-ort

``--backend`` measures the suite's models on another backend (a copy of the suite with
only that backend, written to ``OUT/suite.yaml``); use a separate ``--out`` per backend.
Every comparison also reports the median width of its parts' B/A intervals.

In a working tree that changes while it runs (30 runs take 30-60 minutes), run a
snapshot of one commit instead, so that every run measures the same code::

    git archive HEAD | tar -x -C /tmp/snap
    PYTHONPATH=/tmp/snap python /tmp/snap/benchmarks/compare_acceptance.py --pairs 10 \
        --out results/compare-acceptance --cache results/cache

The injected stage measures a little above the factor: the busy wait is sized on the
call's own duration, and the wrapper's clock readings add about a microsecond.

Not an asv benchmark (it runs ``eebench`` 3 x pairs times); asv skips it because it
defines no benchmark class.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "suites" / "compare-acceptance.yaml"


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [float("nan")] * 3


def _run(suite: Path, out: Path, cache: Path, run_id: str, inject: str | None) -> dict[str, Any]:
    """One ``eebench run`` in a fresh process; returns its folder, duration and the load before."""
    folder = out / "compare-acceptance" / run_id
    loads_file = out / "loads.json"
    loads = json.loads(loads_file.read_text()) if loads_file.exists() else {}
    if folder.exists():
        return {"run": str(folder), "reused": True, "load_before": loads.get(run_id)}
    env = dict(os.environ)
    env.pop("EEBENCH_INJECT_DELAY", None)
    if inject:
        env["EEBENCH_INJECT_DELAY"] = inject
    # the eebench that this interpreter imports (a checkout on PYTHONPATH included)
    cmd = [sys.executable, "-c", "import sys; from eebench.cli import main; sys.exit(main())"]
    cmd += ["run", str(suite), "--out", str(out), "--cache", str(cache), "--run-id", run_id]
    cmd += ["--no-report", "--no-progress"]
    load = _loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    loads[run_id] = load
    loads_file.write_text(json.dumps(loads, indent=1))
    return {"run": str(folder), "seconds": time.perf_counter() - t0, "load_before": load}


def _suite_for(suite: Path, backend: str, out: Path) -> Path:
    """A copy of ``suite`` measured on ``backend`` only (in ``out``)."""
    import yaml

    spec = yaml.safe_load(suite.read_text())
    spec["backends"] = [backend]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "suite.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _judge(a: str, b: str, band: float, alpha: float, inject: tuple[str, int] | None) -> dict:
    from eebench.results.compare import IMPROVEMENT, REGRESSION, compare_runs

    table = compare_runs(a, b, band=band, alpha=alpha)
    lat = table[table["kind"] == "latency"]
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "parts": int(len(lat)),
        "regressions": int((lat["verdict"] == REGRESSION).sum()),
        "improvements": int((lat["verdict"] == IMPROVEMENT).sum()),
        "max_ratio": float(lat["ratio"].max()),
        "min_ratio": float(lat["ratio"].min()),
        # how sharp the verdicts are: the median B/A interval (width, and its ends)
        "median_ci_width": float((lat["ci_high"] - lat["ci_low"]).median()),
        "median_ci_low": float(lat["ci_low"].median()),
        "median_ci_high": float(lat["ci_high"].median()),
        "flagged": [
            f"{r.model} {r.item}: {r.ratio:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] {r.verdict}"
            for r in lat.itertuples()
            if r.verdict in (REGRESSION, IMPROVEMENT)
        ],
    }
    if inject is not None:
        model, stage = inject
        hit = lat[(lat["model"] == model) & lat["item"].str.startswith(f"stage {stage} on ")]
        if hit.empty:
            raise SystemExit(f"{model} stage {stage} is not among the compared parts of {a}")
        row = hit.iloc[0]
        out["injected"] = {
            "ratio": float(row["ratio"]),
            "ci_low": float(row["ci_low"]),
            "ci_high": float(row["ci_high"]),
            "verdict": str(row["verdict"]),
        }
        out["detected"] = row["verdict"] == REGRESSION
        out["other_regressions"] = out["regressions"] - int(out["detected"])
    return out


def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--inject", default="branchynet-resnet14:1", help="MODEL:STAGE to slow down")
    p.add_argument("--factor", type=float, default=1.3, help="slowdown of the injected stage")
    p.add_argument("--suite", type=Path, default=SUITE)
    p.add_argument("--backend", help="measure on this backend instead of the suite's")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "compare-acceptance")
    p.add_argument("--cache", type=Path, default=ROOT / "results" / "cache")
    p.add_argument("--band", type=float, default=0.10, help="as eebench compare --band")
    p.add_argument("--alpha", type=float, default=0.05, help="as eebench compare --alpha")
    p.add_argument("--compare-only", action="store_true", help="judge stored runs, run nothing")
    args = p.parse_args(argv)
    model, _, stage = args.inject.rpartition(":")
    inject = (model, int(stage))
    hook = f"{model}:{stage}:{args.factor:g}"
    if args.backend:
        args.suite = _suite_for(args.suite, args.backend, args.out)

    pairs = []
    for i in range(args.pairs):
        ids = [f"pair{i:02d}-a", f"pair{i:02d}-b", f"pair{i:02d}-c-slow"]
        runs = []
        for run_id, slow in zip(ids, (None, None, hook)):
            folder = args.out / "compare-acceptance" / run_id
            if args.compare_only:
                if not folder.exists():
                    raise SystemExit(f"{folder}: no such run; run without --compare-only first")
                runs.append({"run": str(folder), "reused": True})
            else:
                runs.append(_run(args.suite, args.out, args.cache, run_id, slow))
        self_cmp = _judge(runs[0]["run"], runs[1]["run"], args.band, args.alpha, None)
        slow_cmp = _judge(runs[1]["run"], runs[2]["run"], args.band, args.alpha, inject)
        pair = {"pair": i, "runs": runs, "self": self_cmp, "injected": slow_cmp}
        pairs.append(pair)
        print(
            f"pair {i:2d}: self {self_cmp['regressions']} regression(s) "
            f"{self_cmp['improvements']} improvement(s), B/A {self_cmp['min_ratio']:.3f}.."
            f"{self_cmp['max_ratio']:.3f}, median interval width {self_cmp['median_ci_width']:.3f}; "
            f"injected {slow_cmp['injected']['ratio']:.3f} "
            f"[{slow_cmp['injected']['ci_low']:.3f}, {slow_cmp['injected']['ci_high']:.3f}] "
            f"{slow_cmp['injected']['verdict']}, other regressions {slow_cmp['other_regressions']}; "
            f"load {[r.get('load_before') for r in runs]}",
            flush=True,
        )

    clean = sum(pr["self"]["regressions"] == 0 for pr in pairs)
    detected = sum(bool(pr["injected"]["detected"]) for pr in pairs)
    summary = {
        "suite": str(args.suite),
        "hook": f"EEBENCH_INJECT_DELAY={hook}",
        "band": args.band,
        "alpha": args.alpha,
        "pairs": len(pairs),
        "self_comparisons_with_0_regressions": clean,
        "injected_slowdowns_detected": detected,
        "other_regressions_in_injected_pairs": sum(
            pr["injected"]["other_regressions"] for pr in pairs
        ),
        "median_ci_width_self": _median([pr["self"]["median_ci_width"] for pr in pairs]),
        "median_ci_width_injected": _median([pr["injected"]["median_ci_width"] for pr in pairs]),
        "load_before_runs": [r.get("load_before") for pr in pairs for r in pr["runs"]],
        "load_at_end": _loadavg(),
        "details": pairs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        f"# eebench compare acceptance ({len(pairs)} pairs, {summary['hook']})",
        "",
        f"- self-comparisons with 0 regressions: **{clean} of {len(pairs)}** (goal: all)",
        f"- injected 1 stage x{args.factor:g} detected: **{detected} of {len(pairs)}** "
        f"(goal: >= 9 of 10)",
        f"- other parts flagged as regressions in the injected pairs: "
        f"{summary['other_regressions_in_injected_pairs']}",
        f"- median width of the parts' B/A intervals (median over pairs): self "
        f"{summary['median_ci_width_self']:.3f}, injected {summary['median_ci_width_injected']:.3f}",
        f"- load average (1 min) before the runs: "
        f"{min(x[0] for x in summary['load_before_runs'] if x)}.."
        f"{max(x[0] for x in summary['load_before_runs'] if x)}"
        if not args.compare_only
        else "- (stored runs re-judged)",
    ]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = clean == len(pairs) and detected >= 0.9 * len(pairs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

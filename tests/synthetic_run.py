"""A tiny but realistic results bundle, written step by step with RunWriter.

Two models of different families with three exits each; analytic MACs, raw
latency samples on two measured backends, a Jetson estimate with energy, an
exit record with per-sample difficulty, policies swept and calibrated on val
and reported on test (derived from the exit record, as the runner does), and
validation rows. Knobs make a slower stage, a noisy re-run or a partial run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.results import RunWriter

# model -> (family, stage MACs, exit head MACs)
MODELS = {
    "cascade-s": ("cascade", [2.0e6, 6.0e6, 18.0e6], [0.02e6, 0.02e6, 0.02e6]),
    "sdn-s": ("sdn", [4.0e6, 4.0e6, 4.0e6], [0.3e6, 0.2e6, 0.1e6]),
}
BACKENDS = {"torch-cpu": 1.0, "onnxruntime": 0.6}  # relative speed
PROFILE = "jetson-orin-nano"
PROFILE_WATTS = 7.0
THRESHOLDS = np.round(np.linspace(0.3, 1.0, 15), 3)
CONFIDENCES = ("max_softmax", "score_margin")
EXIT_ACCURACY = (0.62, 0.82, 0.92)
DIFFICULTY_PENALTY = {"easy": 0.0, "medium": 0.12, "hard": 0.3}

COST_COLS = [
    "model",
    "part",
    "index",
    "metric",
    "value",
    "unit",
    "source_kind",
    "source",
    "backend",
    "device",
    "threads",
    "batch_size",
]


def _cost_rows(model, part, index, metrics, kind, source, backend="", device="", threads=0):
    return [
        dict(
            model=model,
            part=part,
            index=index,
            metric=m,
            value=float(v),
            unit=u,
            source_kind=kind,
            source=source,
            backend=backend,
            device=device,
            threads=threads,
            batch_size=1,
        )
        for m, (v, u) in metrics.items()
    ]


def _parts(model):
    _, stages, heads = MODELS[model]
    for i in range(len(stages)):
        yield "stage", i, stages[i]
        yield "exit", i, heads[i]


def _base_ms(macs: float, backend: str) -> float:
    return (0.02 + macs / 1e6 * 0.04) * BACKENDS[backend]


def latency_samples(model, backend, rng, n, scale=None):
    rows = []
    for part, index, macs in _parts(model):
        factor = (scale or {}).get((model, part, index, backend), 1.0)
        base = _base_ms(macs, backend) * factor
        ms = base * rng.lognormal(0.0, 0.04, n)
        for k, v in enumerate(ms):
            rows.append(
                dict(
                    model=model,
                    part=part,
                    index=index,
                    backend=backend,
                    device="cpu",
                    threads=1,
                    batch_size=1,
                    sample=k,
                    ms=float(v),
                )
            )
    return pd.DataFrame(rows)


def measured_costs(samples: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, part, index, backend), grp in samples.groupby(
        ["model", "part", "index", "backend"], sort=False
    ):
        ms = grp["ms"].to_numpy()
        q25, med, q75, p90, p99 = np.percentile(ms, [25, 50, 75, 90, 99])
        rows += _cost_rows(
            model,
            part,
            int(index),
            {
                "latency_median_ms": (med, "ms"),
                "latency_p90_ms": (p90, "ms"),
                "latency_p99_ms": (p99, "ms"),
                "latency_iqr_ms": (q75 - q25, "ms"),
                "latency_cv": (ms.std() / ms.mean(), "1"),
                "noisy": (0, "bool"),
            },
            "measured",
            f"measured:{backend}",
            backend,
            "cpu",
            1,
        )
    return pd.DataFrame(rows, columns=COST_COLS)


def exit_record(model, rng, n, with_difficulty=True, exit_accuracy=EXIT_ACCURACY):
    rows = []
    for split in ("val", "test"):
        difficulty = rng.choice(list(DIFFICULTY_PENALTY), size=n, p=[0.5, 0.3, 0.2])
        labels = rng.integers(0, 10, n)
        for s in range(n):
            for e, base in enumerate(exit_accuracy):
                correct = rng.random() < base - DIFFICULTY_PENALTY[difficulty[s]]
                ms = float(np.clip(rng.beta(6, 2) if correct else rng.beta(2, 3), 0.1, 1.0))
                margin = float(ms * rng.uniform(0.3, 1.0))
                row = dict(
                    model=model,
                    split=split,
                    sample_id=f"{split}-{s}",
                    label=int(labels[s]),
                    exit=e,
                    prediction=int(labels[s] if correct else (labels[s] + 1) % 10),
                    correct=int(correct),
                    max_softmax=ms,
                    score_margin=margin,
                    entropy=float(np.clip(1 - ms + rng.normal(0, 0.05), 0, 1)),
                )
                if with_difficulty:
                    row["difficulty"] = difficulty[s]
                rows.append(row)
    return pd.DataFrame(rows)


def _cumulative(values_stage, values_head):
    return np.cumsum(np.asarray(values_stage) + np.asarray(values_head))


def _matrices(exits: pd.DataFrame, model: str) -> dict:
    """(split, column) -> samples x exits array, pivoted once per model."""
    out = {}
    for split in ("val", "test"):
        rec = exits[(exits["model"] == model) & (exits["split"] == split)]
        for col in (*CONFIDENCES, "correct"):
            out[split, col] = rec.pivot(index="sample_id", columns="exit", values=col).to_numpy()
    return out


def _evaluate(mats: dict, split: str, confidence: str, threshold: float):
    """Exit taken per sample (first exit whose confidence >= threshold; the last always)."""
    conf, correct = mats[split, confidence], mats[split, "correct"]
    n = conf.shape[0]
    fire = conf >= threshold
    fire[:, -1] = True
    taken = fire.argmax(axis=1)
    return taken, correct[np.arange(n), taken], correct


def operating_points(model, exits, cum_macs, cum_latency, energy):
    family = MODELS[model][0]
    E = len(cum_macs)
    rows = []

    mats = _matrices(exits, model)

    def point(split, confidence, thr, calibration):
        taken, ok, correct = _evaluate(mats, split, confidence, thr)
        frac = np.bincount(taken, minlength=E) / len(taken)
        earlier_ok = np.array([correct[i, :t].any() for i, t in enumerate(taken)])
        base = dict(
            model=model,
            family=family,
            split=split,
            policy="threshold",
            confidence=confidence,
            thresholds=json.dumps([float(thr)] * (E - 1)),
            calibration=calibration,
            accuracy=float(ok.mean()),
            expected_macs=float(frac @ cum_macs),
            overthinking=float(((correct[:, -1] == 0) & correct[:, :-1].any(axis=1)).mean()),
            lost_by_exiting_early=float(((ok == 0) & earlier_ok).mean()),
            wasted_macs=float(frac @ cum_macs - cum_macs[0]),
        )
        base.update({f"exit_frac_{i}": float(frac[i]) for i in range(E)})
        out = []
        for source, lat in cum_latency.items():
            e_mj = float(frac @ energy) if source.startswith("estimated") else np.nan
            out.append(
                {
                    **base,
                    "cost_source": source,
                    "expected_latency_ms": float(frac @ lat),
                    "expected_energy_mj": e_mj,
                    "energy_source": source if source.startswith("estimated") else "",
                }
            )
        return out, base

    for confidence in CONFIDENCES:
        val_points = {}
        for thr in THRESHOLDS:
            for split in ("val", "test"):
                out, base = point(split, confidence, thr, "sweep")
                rows += out
                if split == "val":
                    val_points[float(thr)] = base
        final_acc = max(b["accuracy"] for b in val_points.values())
        ok = [t for t, b in val_points.items() if b["accuracy"] >= final_acc - 0.01]
        budget = 0.5 * cum_macs[-1]
        within = [t for t, b in val_points.items() if b["expected_macs"] <= budget] or [
            max(val_points)
        ]
        chosen = {
            "within-1%-of-final": min(ok, key=lambda t: val_points[t]["expected_macs"]),
            f"budget-{int(budget)}": max(within, key=lambda t: val_points[t]["accuracy"]),
            "baseline": 1.01,
        }
        for calibration, thr in chosen.items():
            for split in ("val", "test"):
                rows += point(split, confidence, thr, calibration)[0]
    return pd.DataFrame(rows)


def make_run(
    root: Path | str,
    run_id: str = "r1",
    *,
    suite: str = "quick",
    seed: int = 0,
    latency_seed: int | None = None,
    latency_scale: dict | None = None,
    samples_per_part: int = 30,
    n_samples: int = 50,
    partial_after: int | None = None,
    with_difficulty: bool = True,
    exit_accuracy: tuple[float, ...] = EXIT_ACCURACY,
    commit: str = "0123456789abcdef",
) -> Path:
    """Write a run under ``root/suite/run_id`` and return its folder.

    ``latency_seed`` draws the latency noise from another seed (a noisy re-run);
    ``latency_scale`` multiplies one part's latency, keyed (model, part, index,
    backend); ``exit_accuracy`` sets each exit's chance to be right (an easy
    sample); ``partial_after`` stops after that many steps without assembling
    (a killed run).
    """
    rng = np.random.default_rng(seed)
    lat_rng = np.random.default_rng(seed if latency_seed is None else latency_seed)
    env = {
        "cpu": {"model": "Synthetic CPU @ 2.0GHz", "cores": 2},
        "threads": 1,
        "python": "3.11.2",
        "packages": {"torch": "2.3.0", "onnxruntime": "1.18.0"},
        "git": {"commit": commit, "dirty": False},
    }
    writer = RunWriter.create(root, suite, {"name": suite, "dataset": "digits"}, env, run_id=run_id)
    steps: list[tuple[str, dict]] = []
    for model, (_family, stages, heads) in MODELS.items():
        exits = exit_record(model, rng, n_samples, with_difficulty, exit_accuracy)
        steps.append((f"exits:{model}", {"exits": exits}))
        analytic = []
        for part, index, macs in _parts(model):
            analytic += _cost_rows(
                model,
                part,
                index,
                {
                    "macs": (macs, "MAC"),
                    "params": (macs / 50, "count"),
                    "output_bytes": (4096, "B"),
                },
                "analytic",
                "analytic",
            )
        steps.append((f"costs:{model}:analytic", {"stage_costs": pd.DataFrame(analytic)}))
        cum_latency = {}
        for backend in BACKENDS:
            samples = latency_samples(model, backend, lat_rng, samples_per_part, latency_scale)
            steps.append(
                (
                    f"costs:{model}:{backend}",
                    {"stage_costs": measured_costs(samples), "latency_samples": samples},
                )
            )
            med = samples.groupby(["part", "index"])["ms"].median()
            cum_latency[f"measured:{backend}"] = _cumulative(
                [med[("stage", i)] for i in range(len(stages))],
                [med[("exit", i)] for i in range(len(heads))],
            )
        est_rows, est_stage, est_head = [], [], []
        for part, index, macs in _parts(model):
            ms = macs / 2.0e8 + 0.01
            est_rows += _cost_rows(
                model,
                part,
                index,
                {
                    "latency_median_ms": (ms, "ms"),
                    "energy_mj": (ms * PROFILE_WATTS, "mJ"),
                },
                "estimated",
                f"estimated:{PROFILE}",
            )
            (est_stage if part == "stage" else est_head).append(ms)
        steps.append((f"estimate:{model}:{PROFILE}", {"stage_costs": pd.DataFrame(est_rows)}))
        est_cum = _cumulative(est_stage, est_head)
        cum_latency[f"estimated:{PROFILE}"] = est_cum
        cum_macs = _cumulative(stages, heads)
        ops = operating_points(model, exits, cum_macs, cum_latency, est_cum * PROFILE_WATTS)
        steps.append((f"policies:{model}", {"operating_points": ops}))
        test_cal = ops[
            (ops["split"] == "test")
            & (ops["calibration"] == "within-1%-of-final")
            & (ops["confidence"] == "max_softmax")
        ]
        val_rows = []
        for backend in BACKENDS:
            row = test_cal[test_cal["cost_source"] == f"measured:{backend}"].iloc[0]
            pred = float(row["expected_latency_ms"])
            meas = pred * float(rng.uniform(1.03, 1.15))
            full = float(cum_latency[f"measured:{backend}"][-1])
            val_rows.append(
                dict(
                    model=model,
                    backend=backend,
                    policy="threshold",
                    calibration="within-1%-of-final",
                    batch_size=1,
                    threads=1,
                    predicted_latency_ms=pred,
                    measured_latency_ms=meas,
                    ratio=meas / pred,
                    decision_overhead_us=float(rng.uniform(5, 25)),
                    agreement=1.0,
                    speedup_vs_aggregation=full / meas,
                    speedup_vs_backbone=full * 0.95 / meas,
                    accuracy=float(row["accuracy"]),
                )
            )
        steps.append((f"validate:{model}", {"validation": pd.DataFrame(val_rows)}))
    steps.append(
        (
            "skipped",
            {
                "skipped": pd.DataFrame(
                    [
                        dict(
                            model="*",
                            step="costs",
                            target="torch-cuda",
                            reason="no CUDA device on this machine",
                        )
                    ]
                )
            },
        )
    )

    for k, (key, tables) in enumerate(steps):
        if partial_after is not None and k >= partial_after:
            writer.close("partial", "interrupted (killed during the run)")
            return writer.path
        writer.finish_step(key, tables)
    writer.assemble()
    writer.close("complete")
    return writer.path


def tamper(run: Path, table: str) -> Path:
    """Change one byte of a table after the run (a checksum must catch it)."""
    path = Path(run) / f"{table}.csv"
    text = path.read_text()
    lines = text.splitlines()
    lines[1] = lines[1].replace("1", "7", 1) if "1" in lines[1] else lines[1] + "0"
    path.write_text("\n".join(lines) + "\n")
    return path

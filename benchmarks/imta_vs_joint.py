"""IMTA training against joint training: per-exit test accuracy over several seeds.

The quick suite's dataset (MNIST at 14x14 under graded corruptions, fixed
split, seed 0) and models (``msdnet-small``, ``sdn-resnet20``), each trained
with:

* ``joint``: the quick suite's schedule (Adam, cosine, lr 0.01, batch 64,
  ``--epochs`` epochs);
* ``imta``: the same ``--epochs`` epochs of joint training with gradient
  equilibrium, then ``--ofa-epochs`` epochs of one-for-all distillation of the
  early exits from the frozen final exit (T, alpha as given);
* ``imta-ce`` (``--variants ... imta-ce``): as ``imta`` but alpha = 0, so the second
  phase fine-tunes the early exits on labels only: it separates the
  distillation's effect from that of the extra head epochs.

Every number is a measured top-1 accuracy on the fixed test split (torch CPU,
eval mode), per exit, over ``--seeds`` (model initialisation and shuffling
both follow the seed); the table shows mean ± sample standard deviation and
the min-max range. Training time is wall-clock, measured, on a shared machine.

    nice -n 5 python benchmarks/imta_vs_joint.py [--seeds 0 1 2] [--epochs 10] [--ofa-epochs 3]
        [--models msdnet-small sdn-resnet20] [--variants joint imta imta-ce] [--out results/imta_vs_joint.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

# the quick suite's models (suites/quick.yaml): registry name and config
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "msdnet-small": ("msdnet", {"base": 1, "step": 3, "n_channels": 4, "head_channels": 8}),
    "sdn-resnet20": ("sdn-resnet", {"depth": 20, "width": 8, "ic_positions": [0.03, 0.5]}),
}
SCHEDULE = {"lr": 0.01, "batch_size": 64}


def variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Training configs per variant label (TrainConfig fields, seed added per run)."""
    imta = {
        "scheme": "imta",
        "teacher_epochs": args.epochs,
        "epochs": args.ofa_epochs,
        "temperature": args.temperature,
        "alpha": args.alpha,
    }
    known = {
        "joint": {"scheme": "joint", "epochs": args.epochs},
        "imta": imta,
        "imta-ce": {**imta, "alpha": 0.0},
    }
    return {v: known[v] for v in args.variants}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from eebench.data import get_splits
    from eebench.training import TrainConfig, create_seeded_model, train_model

    splits = get_splits("mnist", seed=0, size=14, limit=args.limit)
    rows = []
    for label in args.models:
        name, config = MODELS[label]
        for variant, fields in variants(args).items():
            for seed in args.seeds:
                model = create_seeded_model(
                    name, config, splits.num_classes, splits.input_shape, seed
                )
                cfg = TrainConfig(**SCHEDULE, **fields, seed=seed)
                started = time.perf_counter()
                result = train_model(model, splits, cfg, progress=False, threads=args.threads)
                row = {
                    "model": label,
                    "variant": variant,
                    "seed": seed,
                    "test_accuracy": result.test_accuracy,
                    "val_accuracy": result.val_accuracy,
                    "train_seconds": time.perf_counter() - started,
                }
                rows.append(row)
                accs = " ".join(f"{a:.4f}" for a in result.test_accuracy)
                print(
                    f"{label:14s} {variant:8s} seed {seed}: test {accs} "
                    f"({row['train_seconds']:.0f} s)",
                    flush=True,
                )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, variant and exit: mean, sample std, min and max of the test accuracy over seeds."""
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["variant"]), []).append(r["test_accuracy"])
    out = []
    for (model, variant), runs in groups.items():
        for e in range(len(runs[0])):
            values = [run[e] for run in runs]
            out.append(
                {
                    "model": model,
                    "variant": variant,
                    "exit": e,
                    "seeds": len(values),
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
            )
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| model | variant | exit | test top-1, mean ± std (%) | min-max (%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['variant']} | {s['exit']} | "
            f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} | "
            f"{100 * s['min']:.2f}-{100 * s['max']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="joint epochs = IMTA's GE epochs")
    parser.add_argument("--ofa-epochs", type=int, default=3, help="IMTA's distillation epochs")
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["joint", "imta"],
        choices=["joint", "imta", "imta-ce"],
        help="imta-ce: imta with alpha = 0 (head fine-tuning on labels only)",
    )
    parser.add_argument("--limit", type=int, default=None, help="keep about this many samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write runs and summary as JSON")
    args = parser.parse_args(argv)

    started = time.time()
    rows = run(args)
    summary = summarise(rows)
    print(table(summary))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "what": "per-exit top-1 test accuracy (measured, torch CPU) per seed",
                    "dataset": "mnist size 14, graded corruptions, split seed 0",
                    "args": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "machine": platform.platform(),
                    "loadavg_end": Path("/proc/loadavg").read_text().split()[:3]
                    if Path("/proc/loadavg").exists()
                    else None,
                    "wall_seconds": time.time() - started,
                    "runs": rows,
                    "summary": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

"""Train one model of each family with every scheme that applies to it, on ``digits``.

Prints one row per (model, scheme): wall-clock training seconds (measured,
``time.perf_counter`` around ``train_model``, torch CPU with the given thread
count) and per-exit top-1 test accuracy (measured on the fixed test split).
The goal: the final exit reaches >= 95% test accuracy, each run in under two
minutes on a 2-core machine.

    python benchmarks/train_digits.py [--threads 1] [--only sdn-resnet] [--out results/train_digits.json]

A family whose model is not registered is reported as missing, not skipped
silently.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_ACCURACY = 0.95
TIME_BUDGET_S = 120.0


@dataclass(frozen=True)
class Case:
    """One small model of a family, the digits size it runs at, and its training settings."""

    family: str
    model: str
    config: dict[str, Any]
    size: int
    schemes: dict[str, dict[str, Any]]  # scheme label -> TrainConfig fields
    train: dict[str, Any] = field(default_factory=dict)


SHARED = ("joint", "layerwise", "distill")

CASES = [
    Case(
        "cascade",
        "cascade",
        {"width": 8},
        8,
        {
            "cascade": {"scheme": "cascade"},
            "cascade+kd": {"scheme": "cascade", "cascade_distill": True},
        },
        {"epochs": 10, "lr": 5e-3},
    ),
    Case(
        "branchynet",
        "branchynet-lenet",
        {},
        16,
        {s: {"scheme": s} for s in SHARED},
        {"epochs": 12, "lr": 5e-3},
    ),
    Case(
        "sdn",
        "sdn-resnet",
        {"depth": 20, "width": 8},
        8,
        {s: {"scheme": s} for s in SHARED},
        {"epochs": 10, "lr": 5e-3},
    ),
    Case("msdnet", "msdnet", {}, 8, {s: {"scheme": s} for s in SHARED}, {"epochs": 8, "lr": 5e-3}),
]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from eebench.data import get_splits
    from eebench.models import list_models
    from eebench.training import TrainConfig, create_seeded_model, train_model

    rows: list[dict[str, Any]] = []
    available = set(list_models())
    for case in CASES:
        if args.only and case.model not in args.only and case.family not in args.only:
            continue
        if case.model not in available:
            rows.append(
                {"family": case.family, "model": case.model, "scheme": "-", "missing": True}
            )
            print(
                f"{case.model:<18} not registered: family '{case.family}' not measured", flush=True
            )
            continue
        splits = get_splits("digits", seed=0, size=case.size)
        for label, scheme_fields in case.schemes.items():
            config = TrainConfig.from_dict(
                {"batch_size": 64, "seed": 0, **case.train, **scheme_fields}
            )
            model = create_seeded_model(
                case.model, case.config, splits.num_classes, splits.input_shape, config.seed
            )
            started = time.perf_counter()
            result = train_model(
                model, splits, config, progress=args.progress, threads=args.threads
            )
            seconds = time.perf_counter() - started
            row = {
                "family": case.family,
                "model": case.model,
                "model_config": case.config,
                "input": f"digits {case.size}x{case.size}",
                "scheme": label,
                "train_config": config.to_dict(),
                "seconds": seconds,
                "test_accuracy": result.test_accuracy,
                "val_accuracy": result.val_accuracy,
                "final_test_accuracy": result.test_accuracy[-1],
                "ok": result.test_accuracy[-1] >= TARGET_ACCURACY and seconds < TIME_BUDGET_S,
            }
            rows.append(row)
            accs = " ".join(f"{a:.3f}" for a in result.test_accuracy)
            print(
                f"{case.model:<18} {label:<11} {seconds:7.1f} s  final {row['final_test_accuracy']:.4f}  "
                f"{'ok ' if row['ok'] else 'NO '} exits: {accs}",
                flush=True,
            )
    meta = {
        "threads": args.threads or torch.get_num_threads(),
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": meta, "rows": rows}, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads while training (default 1)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="model or family names to run")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--out", type=Path, default=Path("results/train_digits.json"))
    args = parser.parse_args(argv)
    print(
        f"digits, fixed split seed 0; seconds = measured wall-clock training time "
        f"(torch CPU, {args.threads} thread(s)); accuracy = measured top-1 on the test split, per exit",
        flush=True,
    )
    print(
        f"{'model':<18} {'scheme':<11} {'seconds':>9}  final acc  goal  per-exit test accuracy",
        flush=True,
    )
    rows = run(args)
    done = [r for r in rows if not r.get("missing")]
    return 0 if done and all(r["ok"] for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())

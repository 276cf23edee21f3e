"""``eebench train MODEL``: train one model without a suite; ``eebench list schemes|datasets``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from eebench.errors import ConfigError


def _key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (numbers, lists, true), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model on a dataset and save its checkpoint and per-exit metrics",
        description="Train one registered model with a training scheme; prints per-exit test accuracy "
        "and writes DIR/checkpoint.pt and DIR/metrics.json.",
    )
    p.add_argument("model", metavar="MODEL", help="a registered model (eebench list models)")
    p.add_argument("--dataset", default="digits", help="a registered dataset (default digits)")
    p.add_argument(
        "--data",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. size=16, root=PATH, val_fraction=0.2, limit=500 (repeatable)",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the train/val/test split (default 0)"
    )
    p.add_argument(
        "--scheme",
        default=None,
        help="joint | layerwise | distill | cascade (default: cascade for cascades, else joint)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs per phase")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", default=None, help="sgd | adam | adamw")
    p.add_argument(
        "--seed", type=int, default=None, help="training seed (init, shuffling, augmentation)"
    )
    p.add_argument(
        "--train",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="any other training option, e.g. temperature=4, exit_weights=linear (repeatable)",
    )
    p.add_argument(
        "--config",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="model config, e.g. width=8 (repeatable)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default results/train/MODEL-DATASET-SCHEME)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out")
    p.add_argument(
        "--cache",
        type=Path,
        nargs="?",
        const=Path("results/cache/checkpoints"),
        default=None,
        metavar="ROOT",
        help="reuse/store the model in a checkpoint cache (default root results/cache/checkpoints)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads while training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    ls = list_sub.add_parser("schemes", help="training schemes")
    ls.set_defaults(func=_list_schemes)
    ld = list_sub.add_parser("datasets", help="datasets and their options")
    ld.set_defaults(func=_list_datasets)


def _train_config(args: argparse.Namespace, family: str):
    """The training config from --train and the flags; without a scheme, the family's natural one."""
    from eebench.training.config import TrainConfig

    options: dict[str, Any] = {
        "scheme": "cascade" if family == "cascade" else "joint",
        **dict(args.train),
    }
    flags = {
        "scheme": args.scheme,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "seed": args.seed,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    return TrainConfig.from_dict(options, source="--train")


def _train(args: argparse.Namespace) -> int:
    from eebench.data import get_splits
    from eebench.models import create_model
    from eebench.training.atomic import atomic_write, atomic_write_text
    from eebench.training.cache import CheckpointCache
    from eebench.training.checkpoint import read_checkpoint
    from eebench.training.trainer import create_seeded_model, train_model

    splits = get_splits(args.dataset, seed=args.split_seed, **dict(args.data))
    model_config = dict(args.config)
    probe = create_model(args.model, splits.num_classes, splits.input_shape, **model_config)
    config = _train_config(args, probe.family)
    out: Path = args.out or Path("results/train") / f"{args.model}-{args.dataset}-{config.scheme}"
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not args.force:
        raise ConfigError(
            f"'{checkpoint}' already exists; pass --force to replace it or choose another --out",
            field="--out",
        )
    started = time.perf_counter()
    from eebench.suites.commands import show_progress_bars

    if args.cache is not None:
        model, info = CheckpointCache(args.cache).get_or_train(
            args.model,
            model_config,
            splits,
            config,
            progress=show_progress_bars(args.no_progress),
            threads=args.threads,
        )
        data = info.path.read_bytes()
        atomic_write(checkpoint, lambda f: f.write(data))
    else:
        model = create_seeded_model(
            args.model, model_config, splits.num_classes, splits.input_shape, config.seed
        )
        train_model(
            model,
            splits,
            config,
            progress=show_progress_bars(args.no_progress),
            checkpoint_path=checkpoint,
            threads=args.threads,
        )
        _, info = read_checkpoint(checkpoint)
    seconds = time.perf_counter() - started
    exits = [
        {
            "index": e.index,
            "name": e.name,
            "stage": e.stage,
            "position": e.position,
            "val_accuracy": info.val_accuracy[e.index],
            "test_accuracy": info.test_accuracy[e.index],
        }
        for e in model.exit_info
    ]
    metrics = {
        "model": model.describe(),
        "dataset": splits.to_dict(),
        "train_config": config.to_dict(),
        "exits": exits,
        "val_accuracy": info.val_accuracy,
        "test_accuracy": info.test_accuracy,
        "history": [r.to_dict() for r in info.result.history],
        "train_seconds": info.result.seconds,
        "wall_seconds": seconds,
        "reused_from_cache": info.reused,
        "checkpoint": str(checkpoint),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    how = "reused from the cache" if info.reused else f"trained in {info.result.seconds:.1f} s"
    sizes = "/".join(str(len(splits.split(s))) for s in ("train", "val", "test"))
    print(
        f"{args.model} on {splits.name} (fingerprint {splits.fingerprint}, train/val/test {sizes}), "
        f"scheme {config.scheme}: {how}"
    )
    print(f"{'exit':>4}  {'stage':>5}  {'position':>8}  {'val_acc':>7}  {'test_acc':>8}")
    for e in exits:
        print(
            f"{e['index']:>4}  {e['stage']:>5}  {e['position']:>8.3f}  {e['val_accuracy']:>7.4f}  "
            f"{e['test_accuracy']:>8.4f}"
        )
    print("accuracy: top-1 fraction correct per exit (measured on the val / test split)")
    print(f"checkpoint: {checkpoint}\nmetrics:    {out / 'metrics.json'}")
    return 0


def _list_schemes(args: argparse.Namespace) -> int:
    from eebench.training.schemes import SCHEMES

    for name in SCHEMES.names():
        cls = SCHEMES.get(name)
        applies = "cascades only" if cls.cascades_only else "models with a shared backbone"
        print(f"{name:<10} {cls.summary} [{applies}]")
    return 0


def _list_datasets(args: argparse.Namespace) -> int:
    import inspect

    from eebench.data import DATASETS

    for name in DATASETS.names():
        loader = DATASETS.get(name)
        doc = (inspect.getdoc(loader) or "").splitlines()[0]
        params = inspect.signature(loader).parameters.values()
        opts = ", ".join(f"{p.name}={p.default!r}" for p in params)
        print(f"{name:<12} {doc}\n{'':<12} options: {opts or '(none)'}")
    print(
        "split options of every dataset: val_fraction, test_fraction, augment, normalize, limit "
        "(--data KEY=VALUE); the split seed is --split-seed"
    )
    return 0

"""A content-addressed cache of trained models, so a suite re-run retrains nothing.

The key hashes what determines the weights: the model (name, config,
classes, input shape), the dataset fingerprint and the training config. A
hit is loaded through :func:`load_checkpoint` with every field checked; an
incomplete entry (training was interrupted) is trained again; a damaged entry
is reported, never silently overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from eebench.data import DatasetSplits
from eebench.models import MultiExitModel
from eebench.training.checkpoint import (
    CheckpointInfo,
    json_normal,
    load_checkpoint,
    read_checkpoint,
)
from eebench.training.config import TrainConfig
from eebench.training.trainer import create_seeded_model, train_model

DEFAULT_CACHE_ROOT = Path("results/cache/checkpoints")


def cache_key(
    model_name: str,
    model_config: dict[str, Any],
    num_classes: int,
    input_shape: tuple[int, ...] | list[int],
    dataset_fingerprint: str,
    train_config: TrainConfig,
) -> str:
    """A hash of everything that determines the trained weights."""
    identity = {
        "model": {
            "name": model_name,
            "config": json_normal(model_config, "model config"),
            "num_classes": int(num_classes),
            "input_shape": [int(s) for s in input_shape],
        },
        "dataset_fingerprint": dataset_fingerprint,
        "train_config": train_config.to_dict(),
    }
    source = _factory_file_digest(model_name)
    if source is not None:  # a user's model file: an edit to it must not reuse old weights
        identity["model"]["source_sha256"] = source
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _factory_file_digest(model_name: str) -> str | None:
    """SHA-256 of the file a ``/path/file.py:function`` model name points at (None otherwise)."""
    target, sep, _ = model_name.rpartition(":")
    if not sep or not target.endswith(".py"):
        return None
    path = Path(target)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


class CheckpointCache:
    """Trained checkpoints under ``root``, one file per key: ``<model>-<key>.pt``."""

    def __init__(self, root: str | Path = DEFAULT_CACHE_ROOT) -> None:
        self.root = Path(root)

    def path_for(
        self,
        model_name: str,
        model_config: dict[str, Any],
        splits: DatasetSplits,
        train_config: TrainConfig,
    ) -> Path:
        key = cache_key(
            model_name,
            model_config,
            splits.num_classes,
            splits.input_shape,
            splits.fingerprint,
            train_config,
        )
        # a factory spec's absolute path can be long: its tail names the file well enough
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)[-80:]
        return self.root / f"{safe}-{key}.pt"

    def get(
        self,
        model_name: str,
        model_config: dict[str, Any],
        splits: DatasetSplits,
        train_config: TrainConfig,
    ) -> tuple[MultiExitModel, CheckpointInfo] | None:
        """The cached model, or ``None`` when there is no complete entry for this key."""
        path = self.path_for(model_name, model_config, splits, train_config)
        if not path.exists():
            return None
        _, info = read_checkpoint(path)
        if not info.complete:
            return None
        model, info = load_checkpoint(
            path,
            model_name=model_name,
            model_config=model_config,
            num_classes=splits.num_classes,
            input_shape=splits.input_shape,
            dataset_fingerprint=splits.fingerprint,
            train_config=train_config,
        )
        info.reused = True
        return model, info

    def get_or_train(
        self,
        model_name: str,
        model_config: dict[str, Any],
        splits: DatasetSplits,
        train_config: TrainConfig,
        progress: bool = True,
        threads: int | None = None,
    ) -> tuple[MultiExitModel, CheckpointInfo]:
        """The cached model when present; otherwise build (seeded), train, store and return it."""
        hit = self.get(model_name, model_config, splits, train_config)
        if hit is not None:
            return hit
        path = self.path_for(model_name, model_config, splits, train_config)
        model = create_seeded_model(
            model_name, model_config, splits.num_classes, splits.input_shape, train_config.seed
        )
        train_model(
            model, splits, train_config, progress=progress, checkpoint_path=path, threads=threads
        )
        _, info = read_checkpoint(path)
        return model, info

    def entries(self) -> list[CheckpointInfo]:
        """Metadata of every readable entry (damaged files are skipped here; loading reports them)."""
        from eebench.errors import CheckpointError

        out = []
        for path in sorted(self.root.glob("*.pt")):
            try:
                out.append(read_checkpoint(path)[1])
            except CheckpointError:
                continue
        return out

"""Checkpoints: weights plus everything needed to rebuild, verify and trust them.

A checkpoint is one ``torch.save`` file holding ``{"meta": ..., "state_dict": ...}``.
``meta`` holds only JSON types (model name, family and config, classes,
input shape, the dataset fingerprint, the training config, the per-epoch
history and final per-exit metrics, versions), so the file loads with
``torch.load(..., weights_only=True)``: opening a checkpoint cannot run code.

Loading checks what was asked for against what is stored and refuses a
mismatch with the name of the field that differs; a corrupt or truncated file
gets an error with its path and the fix (delete it and train again).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eebench import __version__
from eebench.data import DatasetSplits
from eebench.errors import CheckpointError, ConfigError, EEBenchError
from eebench.models import MultiExitModel, UnknownNameError, create_model
from eebench.training.atomic import atomic_write
from eebench.training.config import TrainConfig
from eebench.training.trainer import TrainResult

CHECKPOINT_FORMAT = "eebench-checkpoint"
CHECKPOINT_VERSION = 1

_FIX = "delete it and train again (eebench train ..., or let the checkpoint cache retrain)"


def json_normal(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (tuples become lists); refuses what JSON cannot hold."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"must hold JSON values only (numbers, strings, lists, mappings): {err}", field=what
        ) from None


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself (everything except the weights)."""

    path: Path
    model_name: str
    family: str
    model_config: dict[str, Any]
    num_classes: int
    input_shape: tuple[int, ...]
    dataset: dict[str, Any]
    train_config: TrainConfig
    result: TrainResult
    eebench_version: str
    torch_version: str
    saved_at: str
    reused: bool = field(default=False, compare=False)

    @property
    def dataset_fingerprint(self) -> str:
        return str(self.dataset["fingerprint"])

    @property
    def complete(self) -> bool:
        return self.result.complete

    @property
    def val_accuracy(self) -> list[float]:
        return self.result.val_accuracy

    @property
    def test_accuracy(self) -> list[float]:
        return self.result.test_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "model": {
                "name": self.model_name,
                "family": self.family,
                "config": self.model_config,
                "num_classes": self.num_classes,
                "input_shape": list(self.input_shape),
            },
            "dataset": self.dataset,
            "train_config": self.train_config.to_dict(),
            "result": self.result.to_dict(),
            "eebench_version": self.eebench_version,
            "torch_version": self.torch_version,
            "saved_at": self.saved_at,
            "reused": self.reused,
        }


def _meta(
    model: MultiExitModel, splits: DatasetSplits, config: TrainConfig, result: TrainResult
) -> dict[str, Any]:
    md = model.metadata
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": {
            "name": md.name,
            "family": md.family,
            "config": json_normal(md.config, "model config"),
            "num_classes": md.num_classes,
            "input_shape": list(md.input_shape),
        },
        "dataset": json_normal(
            {
                "name": splits.name,
                "fingerprint": splits.fingerprint,
                "split_fingerprints": {
                    s: splits.split(s).fingerprint for s in ("train", "val", "test")
                },
                "sizes": {s: len(splits.split(s)) for s in ("train", "val", "test")},
            },
            "dataset",
        ),
        "train_config": config.to_dict(),
        "result": json_normal(result.to_dict(), "result"),
        "eebench_version": __version__,
        "torch_version": str(torch.__version__),
        "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_checkpoint(
    path: str | Path,
    model: MultiExitModel,
    splits: DatasetSplits,
    config: TrainConfig,
    result: TrainResult,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, rename)."""
    payload = {"meta": _meta(model, splits, config, result), "state_dict": model.state_dict()}
    return atomic_write(path, lambda f: torch.save(payload, f))


def _malformed(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"'{path}' is not a valid eebench checkpoint: {what}; {_FIX}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """The weights and the metadata of a checkpoint, without building the model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at '{path}': train one first (eebench train MODEL --out DIR)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = [ln for ln in lines if "error" in ln.lower()] or lines or [type(err).__name__]
        reason = detail[-1][:300]
        raise CheckpointError(
            f"cannot read checkpoint '{path}': the file is corrupt or truncated ({reason}); {_FIX}"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("meta"), dict):
        raise _malformed(path, "no 'meta' mapping")
    meta = payload["meta"]
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise _malformed(path, f"format is {meta.get('format')!r}, expected '{CHECKPOINT_FORMAT}'")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version!r}; this eebench ({__version__}) reads up to "
            f"{CHECKPOINT_VERSION}: upgrade eebench or retrain"
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _malformed(path, "no 'state_dict' of tensors")
    try:
        model = meta["model"]
        info = CheckpointInfo(
            path=path,
            model_name=str(model["name"]),
            family=str(model["family"]),
            model_config=dict(model["config"]),
            num_classes=int(model["num_classes"]),
            input_shape=tuple(int(s) for s in model["input_shape"]),
            dataset=dict(meta["dataset"]),
            train_config=TrainConfig.from_dict(meta["train_config"], source=str(path)),
            result=TrainResult.from_dict(meta["result"]),
            eebench_version=str(meta["eebench_version"]),
            torch_version=str(meta["torch_version"]),
            saved_at=str(meta["saved_at"]),
        )
        info.dataset["fingerprint"]  # noqa: B018 - must exist
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, EEBenchError):
            raise CheckpointError(
                f"checkpoint '{path}' holds an invalid training config: {err}; {_FIX}"
            ) from None
        raise _malformed(path, f"metadata field {err} is missing or of the wrong type") from None
    return state, info


def _differences(stored: Any, asked: Any, prefix: str) -> list[str]:
    """Dotted paths where two JSON values differ (first level of mappings)."""
    if isinstance(stored, dict) and isinstance(asked, dict):
        keys = sorted(set(stored) | set(asked))
        return [
            f"{prefix}.{k}" for k in keys if stored.get(k, "<missing>") != asked.get(k, "<missing>")
        ]
    return [prefix] if stored != asked else []


def check_matches(info: CheckpointInfo, **asked: Any) -> None:
    """Raise CheckpointError naming the first field where the checkpoint differs from ``asked``.

    Keys: ``model_name``, ``model_config``, ``num_classes``, ``input_shape``,
    ``dataset_fingerprint``, ``train_config``; ``None`` values are not checked.
    """
    stored = {
        "model_name": info.model_name,
        "model_config": info.model_config,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "dataset_fingerprint": info.dataset_fingerprint,
        "train_config": info.train_config.to_dict(),
    }
    for key, value in asked.items():
        if key not in stored:
            raise TypeError(f"check_matches() got an unexpected field {key!r}")
        if value is None:
            continue
        if isinstance(value, TrainConfig):
            value = value.to_dict()
        value = json_normal(value, key)
        have = json_normal(stored[key], key)
        diffs = _differences(have, value, key)
        if diffs:
            where = diffs[0]
            sub = where.split(".", 1)[1] if "." in where else None
            found = have.get(sub, "<missing>") if sub else have
            wanted = value.get(sub, "<missing>") if sub else value
            raise CheckpointError(
                f"checkpoint '{info.path}' does not match what was asked: {where} is {found!r} in the "
                f"checkpoint but {wanted!r} was asked"
                + (f" (also differs: {', '.join(diffs[1:])})" if len(diffs) > 1 else "")
                + ". Load it with the matching settings, or delete it and train again"
            )


def load_checkpoint(
    path: str | Path,
    *,
    model_name: str | None = None,
    model_config: dict[str, Any] | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    dataset_fingerprint: str | None = None,
    train_config: TrainConfig | None = None,
) -> tuple[MultiExitModel, CheckpointInfo]:
    """Rebuild the model of a checkpoint and load its weights (eval mode).

    Every argument that is given must match the checkpoint, else a
    CheckpointError names the differing field: a checkpoint is never loaded
    silently for another model or other data.
    """
    state, info = read_checkpoint(path)
    check_matches(
        info,
        model_name=model_name,
        model_config=model_config,
        num_classes=num_classes,
        input_shape=list(input_shape) if input_shape is not None else None,
        dataset_fingerprint=dataset_fingerprint,
        train_config=train_config,
    )
    try:
        model = create_model(
            info.model_name,
            num_classes=info.num_classes,
            input_shape=info.input_shape,
            **info.model_config,
        )
    except (UnknownNameError, EEBenchError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint '{info.path}' is for model '{info.model_name}' with config {info.model_config}, "
            f"which cannot be built by this eebench ({err}); {_FIX}"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"the weights in '{info.path}' do not fit model '{info.model_name}' as built now (did its code "
            f"change?): {' '.join(first[:2])}; {_FIX}"
        ) from None
    model.eval()
    return model, info

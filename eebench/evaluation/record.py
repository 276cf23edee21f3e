"""The exit record: every exit's logits for every sample of a split, computed once.

"Record once, evaluate everywhere": :func:`record_exits` runs the model's
``forward_all`` once over a split, and every policy, threshold sweep,
calibration and budget question afterwards is arithmetic on the record.

A record is keyed by the model (``model_key``: a hash of the checkpoint) and
by the data (``split_fingerprint``). Saved records carry both keys, and
:meth:`ExitRecord.load` refuses a file whose keys differ from the ones asked
for, so logits of another checkpoint or another split are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from eebench.errors import ConfigError, DataError, ResultsError
from eebench.policies.confidence import CONFIDENCE, check_finite, log_softmax64, predictions

RECORD_SCHEMA = "eebench.exit_record"
RECORD_VERSION = 1


class RecordMismatchError(ResultsError):
    """A saved record whose model key, split fingerprint or split name differs from the one asked for."""

    def __init__(self, path: str, key: str, expected: str, found: str) -> None:
        self.path = path
        self.key = key
        self.expected = expected
        self.found = found
        super().__init__(
            f"{path}: exit record has {key} '{found}' but '{expected}' was expected; it was recorded "
            f"for a different {'checkpoint' if key == 'model_key' else 'split'}. Delete the file or "
            "record the exits again with record_exits(...)"
        )


class SplitLike(Protocol):
    """What :func:`record_exits` needs of a split (``eebench.data.Split`` has it)."""

    name: str
    x: Any
    y: Any
    ids: np.ndarray
    meta: dict[str, np.ndarray]
    fingerprint: str


@dataclass(frozen=True, eq=False)
class ExitRecord:
    """Logits ``(N, E, C)`` float32 of every exit for every sample, with labels, ids and keys.

    ``meta`` holds per-sample arrays aligned with the samples (for example
    ``"difficulty"``). ``model_key`` identifies the checkpoint,
    ``split_fingerprint`` the data, ``split`` the split's name. NaN or
    infinite logits are refused at construction, naming sample and exit.
    """

    logits: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    model_key: str
    split_fingerprint: str
    split: str = "test"
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    _confidences: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        logits = np.asarray(self.logits)
        if logits.ndim != 3:
            raise DataError(
                f"exit record: logits must be (samples, exits, classes), got shape {logits.shape}"
            )
        if not np.issubdtype(logits.dtype, np.floating):
            raise DataError(f"exit record: logits must be floating point, got dtype {logits.dtype}")
        n, e, c = logits.shape
        if e < 1 or c < 2:
            raise DataError(
                f"exit record: need at least 1 exit and 2 classes, got shape {logits.shape}"
            )
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        ids = np.asarray(self.sample_ids)
        if ids.dtype == object:
            ids = ids.astype(str)
        check_finite(logits, sample_ids=ids if ids.shape == (n,) else None, where="exit record")
        labels = np.asarray(self.labels)
        if labels.shape != (n,) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise DataError(
                f"exit record: labels must be {n} integers (one per sample), got {labels.dtype} {labels.shape}"
            )
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            bad = int(np.argmax((labels < 0) | (labels >= c)))
            raise DataError(
                f"exit record: label {labels[bad]} of row {bad} is outside [0, {c}) classes"
            )
        if ids.shape != (n,):
            raise DataError(
                f"exit record: sample_ids must have one id per sample ({n}), got shape {ids.shape}"
            )
        meta = {}
        for key, values in dict(self.meta).items():
            arr = np.asarray(values)
            if arr.dtype == object:
                arr = arr.astype(str)
            if arr.shape[:1] != (n,):
                raise DataError(
                    f"exit record: meta['{key}'] must have one value per sample ({n}), got shape {arr.shape}"
                )
            meta[str(key)] = arr
        for name, value in (
            ("model_key", self.model_key),
            ("split_fingerprint", self.split_fingerprint),
            ("split", self.split),
        ):
            if not isinstance(value, str) or not value:
                raise DataError(f"exit record: {name} must be a non-empty string, got {value!r}")
        logits, labels, ids = (
            logits.view(),
            labels.view(),
            ids.view(),
        )  # read-only views, not the caller's
        for arr in (logits, labels, ids):
            arr.setflags(write=False)
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "sample_ids", ids)
        object.__setattr__(self, "meta", meta)

    # ----------------------------------------------------------------- shape and derived tables
    @property
    def num_samples(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_exits(self) -> int:
        return int(self.logits.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[2])

    @cached_property
    def log_probs(self) -> np.ndarray:
        """``(N, E, C)`` float64 log-softmax, the source of every confidence measure."""
        return log_softmax64(self.logits)

    @cached_property
    def predictions(self) -> np.ndarray:
        """``(N, E)`` predicted class of each exit (argmax of the logits)."""
        return predictions(self.logits).astype(np.int64)

    @cached_property
    def correct(self) -> np.ndarray:
        """``(N, E)`` bool: exit ``i`` classifies sample ``n`` correctly."""
        return self.predictions == self.labels[:, None]

    def confidence(self, measure: str) -> np.ndarray:
        """``(N, E)`` float64 confidence measure of every exit, computed once per measure and
        kept (read-only): sweeps, calibrations and their val/test evaluations all ask again."""
        if measure not in self._confidences:
            values = CONFIDENCE.get(measure)(self.log_probs)
            values.setflags(write=False)
            self._confidences[measure] = values
        return self._confidences[measure]

    @cached_property
    def exit_accuracy(self) -> np.ndarray:
        """``(E,)`` accuracy of each exit on its own."""
        return self.correct.mean(axis=0) if self.num_samples else np.zeros(self.num_exits)

    def subset(self, rows: np.ndarray | slice) -> ExitRecord:
        """The record restricted to some samples (same keys)."""
        return ExitRecord(
            logits=self.logits[rows],
            labels=self.labels[rows],
            sample_ids=self.sample_ids[rows],
            model_key=self.model_key,
            split_fingerprint=self.split_fingerprint,
            split=self.split,
            meta={k: v[rows] for k, v in self.meta.items()},
        )

    def to_frame(self, measures: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Long format, one row per sample and exit: id, label, prediction, correct, confidences, meta."""
        n, e = self.num_samples, self.num_exits
        frame = {
            "sample_id": np.repeat(self.sample_ids, e),
            "exit": np.tile(np.arange(e), n),
            "label": np.repeat(self.labels, e),
            "prediction": self.predictions.ravel(),
            "correct": self.correct.ravel(),
        }
        for m in measures if measures is not None else tuple(CONFIDENCE.names()):
            frame[m] = self.confidence(m).ravel()
        for key, values in self.meta.items():
            if values.ndim == 1:
                frame[key] = np.repeat(values, e)
        return pd.DataFrame(frame)

    # ----------------------------------------------------------------- files
    def header(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "version": RECORD_VERSION,
            "model_key": self.model_key,
            "split_fingerprint": self.split_fingerprint,
            "split": self.split,
            "num_samples": self.num_samples,
            "num_exits": self.num_exits,
            "num_classes": self.num_classes,
            "meta": sorted(self.meta),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record to one ``.npz`` file (arrays plus a JSON header), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = np.frombuffer(json.dumps(self.header(), sort_keys=True).encode(), dtype=np.uint8)
        arrays = {
            "header": header,
            "logits": self.logits,
            "labels": self.labels,
            "sample_ids": self.sample_ids,
        }
        arrays.update({f"meta/{k}": v for k, v in self.meta.items()})
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expected_model_key: str | None = None,
        expected_fingerprint: str | None = None,
        expected_split: str | None = None,
    ) -> ExitRecord:
        """Read a record from :meth:`save`, refusing it if a key differs from the expected one."""
        path = Path(path)
        if not path.is_file():
            raise ResultsError(
                f"{path}: no exit record here; record one with record_exits(model, split).save(path)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            header = json.loads(arrays.pop("header").tobytes().decode())
        except (OSError, ValueError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as err:
            raise ResultsError(
                f"{path}: not a readable exit record ({err}); record the exits again"
            ) from None
        if header.get("schema") != RECORD_SCHEMA:
            raise ResultsError(f"{path}: not an exit record (schema {header.get('schema')!r})")
        if header.get("version") != RECORD_VERSION:
            raise ResultsError(
                f"{path}: exit record version {header.get('version')!r}, this eebench reads version "
                f"{RECORD_VERSION}; record the exits again"
            )
        for key, expected in (
            ("model_key", expected_model_key),
            ("split_fingerprint", expected_fingerprint),
            ("split", expected_split),
        ):
            if expected is not None and header.get(key) != expected:
                raise RecordMismatchError(str(path), key, expected, str(header.get(key)))
        try:
            return cls(
                logits=arrays["logits"],
                labels=arrays["labels"],
                sample_ids=arrays["sample_ids"],
                model_key=header["model_key"],
                split_fingerprint=header["split_fingerprint"],
                split=header["split"],
                meta={k[len("meta/") :]: v for k, v in arrays.items() if k.startswith("meta/")},
            )
        except KeyError as err:
            raise ResultsError(
                f"{path}: exit record misses {err}; record the exits again"
            ) from None


def record_filename(model_key: str, split_fingerprint: str, split: str) -> str:
    """The file name a record is stored under: keyed by split, checkpoint and data."""
    return f"exits-{split}-{model_key[:16]}-{split_fingerprint[:16]}.npz"


def model_key_of(model: Any) -> str:
    """SHA-256 of a model's identity and weights (metadata plus every tensor of its state dict)."""
    import torch

    h = hashlib.sha256()
    meta = getattr(model, "metadata", None)
    if meta is not None and hasattr(meta, "to_dict"):
        h.update(json.dumps(meta.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record_exits(
    model: Any,
    split: SplitLike,
    batch_size: int = 256,
    model_key: str | None = None,
) -> ExitRecord:
    """Run ``model.forward_all`` once over ``split`` (eval mode, no grad) and keep every exit's logits.

    ``model_key`` names the checkpoint (default: :func:`model_key_of`, a hash
    of the weights). The model's train/eval mode is restored afterwards.
    """
    import torch

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ConfigError(
            f"batch_size must be a positive integer, got {batch_size!r}", field="batch_size"
        )
    x = split.x if isinstance(split.x, torch.Tensor) else torch.as_tensor(np.asarray(split.x))
    y = split.y.cpu().numpy() if isinstance(split.y, torch.Tensor) else np.asarray(split.y)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"split '{split.name}': {x.shape[0]} inputs but {y.shape[0]} labels")
    key = model_key or model_key_of(model)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in range(0, int(x.shape[0]), batch_size):
                xb = x[start : start + batch_size].to(device, dtype=torch.float32)
                outs = model.forward_all(xb)
                chunks.append(torch.stack([o.float() for o in outs], dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    num_exits = getattr(model, "num_exits", None)
    num_classes = getattr(model, "num_classes", None)
    if chunks:
        logits = np.concatenate(chunks, axis=0)
    else:
        logits = np.zeros((0, num_exits or 1, num_classes or 2), dtype=np.float32)
    return ExitRecord(
        logits=logits,
        labels=y,
        sample_ids=np.asarray(split.ids),
        model_key=key,
        split_fingerprint=split.fingerprint,
        split=split.name,
        meta=dict(getattr(split, "meta", {}) or {}),
    )


def load_or_record(
    root: str | os.PathLike[str],
    model: Any,
    split: SplitLike,
    model_key: str | None = None,
    batch_size: int = 256,
) -> ExitRecord:
    """The record of ``model`` on ``split`` from ``root`` if saved there, else recorded and saved."""
    key = model_key or model_key_of(model)
    path = Path(root) / record_filename(key, split.fingerprint, split.name)
    if path.is_file():
        return ExitRecord.load(
            path,
            expected_model_key=key,
            expected_fingerprint=split.fingerprint,
            expected_split=split.name,
        )
    record = record_exits(model, split, batch_size=batch_size, model_key=key)
    record.save(path)
    return record

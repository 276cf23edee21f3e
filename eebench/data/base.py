"""What a dataset loader returns and what a split looks like.

A loader reads (or generates) every sample of a dataset once and hands back a
:class:`RawDataset`: images in ``[0, 1]``, labels, stable sample ids and the
description of its options. :func:`eebench.data.get_splits` turns that into a
:class:`DatasetSplits` (train / val / test, normalised, fingerprinted). The
fingerprint travels with everything computed from a split (checkpoints,
exit records), so results from different data can never be mixed silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from eebench.data.transforms import Augmentation
from eebench.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class RawDataset:
    """Every sample of a dataset before splitting and normalisation.

    ``images`` is float32 ``(N, C, H, W)`` in ``[0, 1]``; ``ids`` are unique
    int64 sample ids, stable across runs (they feed the fingerprint).
    ``official_test`` marks the samples of a dataset's own test split (CIFAR);
    ``None`` means the dataset has none and test is carved out by fraction.
    ``options`` are the loader options that change the data (never a local
    path: moving a folder must not change a fingerprint); ``content_digest``
    hashes the raw content, so changed files change the fingerprint too.
    ``flip_safe`` says whether a horizontal flip keeps the label's meaning.
    A loader returns fresh arrays on every call: the caller owns them (and
    :func:`~eebench.data.get_splits` normalises ``images`` in place).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    options: dict[str, Any]
    content_digest: str
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    official_test: np.ndarray | None = None
    flip_safe: bool = False
    augment_by_default: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(eq=False)
class Split:
    """One split: normalised images, labels, sample ids and per-sample metadata.

    ``meta`` holds per-sample arrays aligned with ``ids`` (for example
    ``"difficulty"`` of the synthetic dataset), so reports can group exits by them.
    """

    name: str
    x: Tensor
    y: Tensor
    ids: np.ndarray
    meta: dict[str, np.ndarray]
    fingerprint: str

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(eq=False)
class DatasetSplits:
    """The three fixed splits of one dataset under one preprocessing, with their fingerprint."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    fingerprint: str
    description: dict[str, Any]
    normalization: dict[str, list[float]] | None = None
    augmentation: Augmentation | None = None

    def split(self, name: str) -> Split:
        """The split called ``name`` (train, val or test)."""
        if name not in SPLIT_NAMES:
            raise ConfigError(f"unknown split '{name}': expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary: identity, sizes and the preprocessing that was fingerprinted."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {s: len(self.split(s)) for s in SPLIT_NAMES},
            "split_fingerprints": {s: self.split(s).fingerprint for s in SPLIT_NAMES},
            "normalization": self.normalization,
            "description": self.description,
        }


def digest_arrays(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' dtype, shape and bytes: a content hash independent of file paths."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}:{a.shape}".encode())
        if a.dtype.kind in "OUS":
            for item in a.ravel():
                h.update(str(item).encode() + b"\0")
        else:
            h.update(a.tobytes())
    return h.hexdigest()

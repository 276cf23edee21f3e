"""Deterministic, stratified train / val / test splits with a fingerprint.

Every model in a comparison must see exactly the same samples: the split is a
pure function of the dataset content, its options and a seed. Per class, the
samples are permuted by a ``numpy`` generator seeded with ``seed`` and cut by
fraction, so each split keeps the class balance. Datasets with an official
test split (CIFAR) keep it as test and carve val out of their train split.

Normalisation statistics come from the train split only (no information from
val or test leaks into the preprocessing). The fingerprint of a split hashes
its sample ids and the preprocessing description (dataset, options, content
digest, split rule, normalisation, augmentation); anything computed from a
split stores it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import numpy as np
import torch

from eebench.data.base import SPLIT_NAMES, DatasetSplits, RawDataset, Split
from eebench.data.registry import DATASETS
from eebench.data.transforms import Augmentation, channel_stats
from eebench.errors import ConfigError, DataError

FINGERPRINT_VERSION = 1
DEFAULT_FRACTIONS = (0.2, 0.2)  # val, test, when the dataset has no official test split
DEFAULT_VAL_FRACTION_OFFICIAL = 0.1  # of the official train split


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stratified_parts(
    labels: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split the positions ``0..N-1`` into ``len(fractions) + 1`` sorted parts, class by class.

    Part ``k`` gets ``round(n_c * fractions[k])`` samples of class ``c``; the
    last part gets the rest and never loses a class entirely to the others.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(members.size)]
        start = 0
        for k, f in enumerate(fractions):
            count = int(round(members.size * f))
            count = min(count, max(members.size - start - 1, 0))
            parts[k].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def _stratified_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """About ``fraction`` of the positions, per class (at least one per class), sorted."""
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = max(1, int(round(members.size * fraction)))
        keep.append(members[rng.permutation(members.size)[:count]])
    return np.sort(np.concatenate(keep))


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"expected a number in [0, 1), got {value!r}", field=name)
    return float(value)


def _resolve_augmentation(raw: RawDataset, augment: Any) -> Augmentation | None:
    if augment is None:
        augment = raw.augment_by_default
    if augment is False:
        return None
    side = int(raw.images.shape[-1])
    if augment is True:
        return Augmentation(crop_padding=max(1, side // 8), hflip=raw.flip_safe)
    return Augmentation.from_option(augment)


def _check_loader_options(dataset: str, options: dict[str, Any]) -> None:
    import difflib

    loader = DATASETS.get(dataset)
    accepted = list(inspect.signature(loader).parameters)
    split_options = ["val_fraction", "test_fraction", "augment", "normalize", "limit"]
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted + split_options, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown option '{key}'.{hint} Options of '{dataset}': {', '.join(accepted) or '(none)'}; "
                f"split options: {', '.join(split_options)}",
                source=dataset,
                field=key,
            )


def get_splits(
    dataset: str,
    seed: int = 0,
    *,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    augment: bool | dict[str, Any] | None = None,
    normalize: bool = True,
    limit: int | None = None,
    **options: Any,
) -> DatasetSplits:
    """Load ``dataset`` and cut its fixed train / val / test splits.

    ``seed`` fixes the split. ``val_fraction`` / ``test_fraction`` default to
    0.2 / 0.2 of everything, or val = 0.1 of the official train split when the
    dataset has an official test split (then ``test_fraction`` does not
    apply). ``augment``: ``None`` = the dataset's default, ``True`` = crop
    (and flip where a flip keeps the label), ``False`` = none, or a mapping
    ``{"crop_padding": int, "hflip": bool}``; it only ever applies to train
    batches. ``limit`` keeps about that many samples (stratified, before
    splitting) for quick runs. Other ``options`` go to the dataset's loader.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"expected a non-negative integer, got {seed!r}", field="seed")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise ConfigError(f"expected an integer >= 2 or nothing, got {limit!r}", field="limit")
    if not isinstance(normalize, bool):
        raise ConfigError(f"expected true or false, got {normalize!r}", field="normalize")
    _check_loader_options(dataset, options)
    raw = DATASETS.get(dataset)(**options)
    rng = np.random.default_rng(seed)

    positions = np.arange(len(raw))
    if limit is not None and limit < len(raw):
        positions = _stratified_subset(raw.labels, limit / len(raw), rng)

    if raw.official_test is not None:
        if test_fraction is not None:
            raise ConfigError(
                f"'{dataset}' has an official test split; test_fraction does not apply (set val_fraction only)",
                field="test_fraction",
            )
        vf = _check_fraction(
            "val_fraction", DEFAULT_VAL_FRACTION_OFFICIAL if val_fraction is None else val_fraction
        )
        pool = positions[~raw.official_test[positions]]
        val_pos, train_pos = stratified_parts(raw.labels[pool], (vf,), rng)
        train_idx, val_idx = pool[train_pos], pool[val_pos]
        test_idx = positions[raw.official_test[positions]]
        rule: dict[str, Any] = {"val_fraction_of_train": vf, "test": "official"}
    else:
        vf = _check_fraction(
            "val_fraction", DEFAULT_FRACTIONS[0] if val_fraction is None else val_fraction
        )
        tf = _check_fraction(
            "test_fraction", DEFAULT_FRACTIONS[1] if test_fraction is None else test_fraction
        )
        if vf + tf >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction must stay below 1 so train keeps samples, got {vf} + {tf}",
                field="val_fraction",
            )
        val_pos, test_pos, train_pos = stratified_parts(raw.labels[positions], (vf, tf), rng)
        train_idx, val_idx, test_idx = positions[train_pos], positions[val_pos], positions[test_pos]
        rule = {"val_fraction": vf, "test_fraction": tf}
    if min(train_idx.size, val_idx.size, test_idx.size) == 0:
        sizes = {"train": train_idx.size, "val": val_idx.size, "test": test_idx.size}
        raise DataError(
            f"{dataset}: a split came out empty {sizes}; use more samples or larger fractions"
        )

    # the loader hands over a fresh array: normalised in place to spare a copy (CIFAR is large)
    images = np.asarray(raw.images, dtype=np.float32)
    if not images.flags.writeable:
        images = images.copy()
    normalization = None
    if normalize:
        mean, std = channel_stats(images, train_idx)
        normalization = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        images -= mean[None, :, None, None].astype(np.float32)
        images /= std[None, :, None, None].astype(np.float32)
    augmentation = _resolve_augmentation(raw, augment)
    description = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "dataset": raw.name,
        "options": raw.options,
        "content": raw.content_digest,
        "split": {"seed": seed, "stratified": True, "limit": limit, **rule},
        "normalization": "per-channel mean/std of the train split" if normalize else "none",
        "augmentation": augmentation.describe() if augmentation else None,
    }
    splits = {}
    for name, idx in zip(SPLIT_NAMES, (train_idx, val_idx, test_idx)):
        ids = raw.ids[idx]
        id_digest = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()
        fingerprint = _hash({"split": name, "ids": id_digest, "preprocessing": description})[:20]
        splits[name] = Split(
            name=name,
            x=torch.from_numpy(np.ascontiguousarray(images[idx], dtype=np.float32)),
            y=torch.from_numpy(raw.labels[idx].astype(np.int64)),
            ids=ids,
            meta={k: v[idx] for k, v in raw.meta.items()},
            fingerprint=fingerprint,
        )
    c, h, w = (int(s) for s in raw.images.shape[1:])
    return DatasetSplits(
        name=raw.name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=len(raw.class_names),
        input_shape=(c, h, w),
        class_names=list(raw.class_names),
        fingerprint=_hash([splits[s].fingerprint for s in SPLIT_NAMES])[:20],
        description=description,
        normalization=normalization,
        augmentation=augmentation,
    )

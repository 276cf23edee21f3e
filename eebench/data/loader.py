"""Batches from an in-memory split, with seeded shuffling and train-only augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from eebench.data.base import Split
from eebench.data.transforms import Augmentation


def num_batches(n: int, batch_size: int, drop_singleton: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` samples."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest and not (drop_singleton and rest == 1) else 0)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augmentation: Augmentation | None = None,
    drop_singleton: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches of ``split``.

    ``shuffle`` permutes with ``generator`` (so a seed fixes the order) and
    ``augmentation`` is applied per batch with the same generator; pass it for
    the train split only. ``drop_singleton`` skips a last batch of one sample,
    which BatchNorm cannot normalise in training mode.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_singleton and idx.numel() == 1:
            break
        x = split.x[idx]
        if augmentation is not None:
            x = augmentation.apply(x, generator)
        yield x, split.y[idx]

"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, 10 classes).

It ships inside scikit-learn, so the default dataset needs no download and no
folder. Pixel values are 0..16 in the original; they are scaled to ``[0, 1]``
and optionally resized (bilinear) so deeper backbones have room to downsample.
Flipping a digit changes its meaning (a mirrored 2 or 7 is not a 2 or 7), so
augmentation is off by default and never flips unless asked to explicitly.
"""

from __future__ import annotations

import numpy as np
import torch

from eebench.data.base import RawDataset, digest_arrays
from eebench.data.options import check_choice, check_int
from eebench.data.registry import register_dataset
from eebench.data.transforms import resize

DIGITS_MAX_VALUE = 16.0


@register_dataset("digits")
def load_digits(size: int = 8, channels: int = 1) -> RawDataset:
    """scikit-learn's handwritten digits, 10 classes, embedded (no download); size >= 8."""
    from sklearn.datasets import load_digits as sk_load_digits

    size = check_int("digits", "size", size, 8, 256)
    channels = check_choice("digits", "channels", channels, (1, 3))
    bunch = sk_load_digits()
    raw = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    x = torch.from_numpy((raw / DIGITS_MAX_VALUE).astype(np.float32))[:, None]
    x = resize(x, size).clamp_(0.0, 1.0)
    if channels == 3:
        x = x.repeat(1, 3, 1, 1)
    return RawDataset(
        name="digits",
        images=x.numpy(),
        labels=labels,
        ids=np.arange(labels.shape[0], dtype=np.int64),
        class_names=[str(c) for c in bunch.target_names],
        options={"size": size, "channels": channels, "resize": "bilinear" if size != 8 else "none"},
        content_digest=digest_arrays(raw, labels),
        flip_safe=False,
        augment_by_default=False,
    )

"""Resizing, normalisation statistics and train-time augmentation.

Augmentation runs on the fly on training batches only (never on val or test:
thresholds are calibrated on val and results reported on test). It is
vectorised over the batch and draws from an explicit ``torch.Generator`` so a
seed fixes every crop and flip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eebench.errors import ConfigError


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of an ``(N, C, H, W)`` batch to ``size x size``."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def channel_stats(
    images: np.ndarray, index: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``images[index]`` (``(N, C, H, W)``).

    Accumulates in float64 one channel at a time, so CIFAR-sized arrays need
    no float64 copy of the whole set.
    """
    mean, std = [], []
    for c in range(images.shape[1]):
        values = images[:, c] if index is None else images[index, c]
        mean.append(float(np.mean(values, dtype=np.float64)))
        std.append(float(np.std(values, dtype=np.float64)))
    return np.asarray(mean), np.maximum(np.asarray(std), 1e-6)


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero padding, plus an optional horizontal flip (probability 1/2)."""

    crop_padding: int = 4
    hflip: bool = True

    def __post_init__(self) -> None:
        if (
            not isinstance(self.crop_padding, int)
            or isinstance(self.crop_padding, bool)
            or self.crop_padding < 0
        ):
            raise ConfigError(
                f"expected a non-negative integer, got {self.crop_padding!r}",
                field="augment.crop_padding",
            )
        if not isinstance(self.hflip, bool):
            raise ConfigError(f"expected true or false, got {self.hflip!r}", field="augment.hflip")

    def describe(self) -> dict[str, Any]:
        return {"crop_padding": self.crop_padding, "hflip": self.hflip}

    @classmethod
    def from_option(cls, value: Any) -> Augmentation:
        """Build from a mapping option (``{"crop_padding": 2, "hflip": false}``)."""
        if not isinstance(value, dict):
            raise ConfigError(f"expected true, false or a mapping, got {value!r}", field="augment")
        known = set(asdict(cls()))
        unknown = set(value) - known
        if unknown:
            raise ConfigError(
                f"unknown keys {sorted(unknown)}; expected some of {sorted(known)}", field="augment"
            )
        return cls(**value)

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch ``(B, C, H, W)``; each sample gets its own crop offset and flip."""
        b, _, h, w = x.shape
        p = self.crop_padding
        if p > 0:
            padded = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            rows = (oy[:, None] + torch.arange(h)[None, :])[:, :, None]  # (B, H, 1)
            cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, :]  # (B, 1, W)
            batch = torch.arange(b)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
        if self.hflip:
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

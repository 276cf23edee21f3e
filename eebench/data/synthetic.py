"""``synthetic``: procedurally drawn shapes and strokes under graded difficulty.

Each class is a shape (disk, ring, bar, cross, ...) drawn with random
position, scale, rotation and stroke width. Each sample also gets a
difficulty level ``0 .. levels-1``; a higher level lowers the contrast between
shape and background, adds more pixel noise and covers a larger part of the
image with an occluding patch. The level (and the three numbers it set) is kept
in ``meta`` so a report can show which exit each difficulty leaves at: easy
samples should leave early, hard ones late.

Everything is drawn from one ``numpy`` generator seeded by ``data_seed``, so the
same options give the same images. Shapes such as ``/`` and ``\\`` are mirror
images of each other, so horizontal flips are not label-preserving and
augmentation is off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from eebench.data.base import RawDataset, digest_arrays
from eebench.data.options import check_choice, check_int
from eebench.data.registry import register_dataset
from eebench.errors import ConfigError

# bump when the drawing changes: it is part of the content digest
GENERATOR_VERSION = 1

Sdf = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _bar(px: np.ndarray, py: np.ndarray, t: np.ndarray, length: float = 0.8) -> np.ndarray:
    """Signed distance (Chebyshev) to a horizontal bar of half-thickness ``t``."""
    return np.maximum(np.abs(py) - t, np.abs(px) - length)


def _rot45(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.sqrt(0.5)
    return c * (px + py), c * (py - px)


# Each entry: approximate signed distance in the shape's local frame (negative inside).
SHAPES: dict[str, Sdf] = {
    "disk": lambda px, py, t: np.hypot(px, py) - 0.75,
    "ring": lambda px, py, t: np.abs(np.hypot(px, py) - 0.62) - t,
    "square": lambda px, py, t: np.maximum(np.abs(px), np.abs(py)) - 0.65,
    "frame": lambda px, py, t: np.abs(np.maximum(np.abs(px), np.abs(py)) - 0.62) - t,
    "triangle": lambda px, py, t: np.maximum(-(py + 0.55), 0.866 * np.abs(px) + 0.5 * py - 0.45),
    "plus": lambda px, py, t: np.minimum(_bar(px, py, t, 0.75), _bar(py, px, t, 0.75)),
    "cross": lambda px, py, t: np.minimum(
        _bar(*_rot45(px, py), t, 0.8), _bar(*_rot45(py, -px), t, 0.8)
    ),
    "hbar": lambda px, py, t: _bar(px, py, t),
    "vbar": lambda px, py, t: _bar(py, px, t),
    "slash": lambda px, py, t: _bar(*_rot45(px, py), t, 0.9),
    "backslash": lambda px, py, t: _bar(*_rot45(py, -px), t, 0.9),
    "dots": lambda px, py, t: np.minimum(np.hypot(px + 0.45, py), np.hypot(px - 0.45, py)) - 0.28,
    "corner": lambda px, py, t: np.minimum(
        np.maximum(np.abs(px + 0.55) - t, np.abs(py) - 0.75),
        np.maximum(np.abs(py + 0.55) - t, np.abs(px) - 0.75),
    ),
    "tee": lambda px, py, t: np.minimum(
        np.maximum(np.abs(py - 0.55) - t, np.abs(px) - 0.75),
        np.maximum(np.abs(px) - t, np.abs(py) - 0.75),
    ),
}

MAX_CLASSES = len(SHAPES)


def _difficulty_weights(levels: int, weights: Sequence[float] | None) -> np.ndarray:
    if weights is None:
        return np.full(levels, 1.0 / levels)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (levels,) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(
            f"expected {levels} non-negative numbers (one per level) with a positive sum, got {weights!r}",
            source="synthetic",
            field="difficulty_weights",
        )
    return w / w.sum()


@register_dataset("synthetic")
def load_synthetic(
    num_classes: int = 10,
    samples_per_class: int = 200,
    size: int = 16,
    channels: int = 1,
    levels: int = 4,
    difficulty_weights: Sequence[float] | None = None,
    data_seed: int = 0,
) -> RawDataset:
    """Procedural shapes/strokes with graded noise, occlusion and contrast; difficulty in meta."""
    num_classes = check_int("synthetic", "num_classes", num_classes, 2, MAX_CLASSES)
    per_class = check_int("synthetic", "samples_per_class", samples_per_class, 1)
    size = check_int("synthetic", "size", size, 8, 256)
    channels = check_choice("synthetic", "channels", channels, (1, 3))
    levels = check_int("synthetic", "levels", levels, 1, 16)
    data_seed = check_int("synthetic", "data_seed", data_seed, 0)
    p_level = _difficulty_weights(levels, difficulty_weights)

    rng = np.random.default_rng(data_seed)
    n = num_classes * per_class
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))
    difficulty = rng.choice(levels, size=n, p=p_level).astype(np.int64)
    frac = difficulty / max(levels - 1, 1)

    # geometry: position, scale, a small rotation (orientation separates some classes), stroke width
    cx, cy = rng.uniform(-0.15, 0.15, (2, n))
    scale = rng.uniform(0.6, 0.85, n)
    angle = rng.uniform(-0.2, 0.2, n)
    thick = rng.uniform(0.14, 0.22, n)[:, None, None]
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u = coords[None, None, :] - cx[:, None, None]
    v = -coords[None, :, None] - cy[:, None, None]  # image rows go down, y goes up
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    s = scale[:, None, None]
    px, py = (cos * u + sin * v) / s, (-sin * u + cos * v) / s
    dist = np.empty((n, size, size))
    names = list(SHAPES)[:num_classes]
    for k, shape in enumerate(names):
        sel = labels == k
        dist[sel] = SHAPES[shape](px[sel], py[sel], thick[sel])
    pixel = (2.0 / size) / s  # one pixel in the shape's local units
    mask = np.clip(0.5 - dist / pixel, 0.0, 1.0)

    # difficulty: less contrast, more noise, a larger occluding patch
    contrast = 1.0 - 0.6 * frac
    noise = 0.03 + 0.22 * frac
    occlusion = 0.22 * frac
    bg = rng.uniform(0.05, 0.3, (n, channels))
    tint = rng.uniform(0.7, 1.0, (n, channels))
    fg = bg + 0.65 * contrast[:, None] * tint
    img = bg[:, :, None, None] + (fg - bg)[:, :, None, None] * mask[:, None]

    area = occlusion * size * size
    aspect = rng.uniform(0.5, 2.0, n)
    oh = np.clip(np.round(np.sqrt(area * aspect)), 0, size).astype(int)
    ow = np.clip(np.round(area / np.maximum(oh, 1)), 0, size).astype(int)
    top = np.floor(rng.uniform(0, 1, n) * (size - oh + 1)).astype(int)
    left = np.floor(rng.uniform(0, 1, n) * (size - ow + 1)).astype(int)
    rows = np.arange(size)[None, :, None]
    cols = np.arange(size)[None, None, :]
    occ = (
        (rows >= top[:, None, None])
        & (rows < (top + oh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ow)[:, None, None])
    )
    fill = rng.uniform(0.0, 1.0, (n, channels))
    img = np.where(occ[:, None], fill[:, :, None, None], img)
    img = img + rng.normal(0.0, 1.0, img.shape) * noise[:, None, None, None]
    images = np.clip(img, 0.0, 1.0).astype(np.float32)

    options = {
        "num_classes": num_classes,
        "samples_per_class": per_class,
        "size": size,
        "channels": channels,
        "levels": levels,
        "difficulty_weights": [float(w) for w in p_level],
        "data_seed": data_seed,
        "generator_version": GENERATOR_VERSION,
    }
    # procedural: the options and generator version determine the content exactly
    digest = digest_arrays(np.array([repr(sorted(options.items()))]))
    return RawDataset(
        name="synthetic",
        images=images,
        labels=labels,
        ids=np.arange(n, dtype=np.int64),
        class_names=names,
        options=options,
        content_digest=digest,
        meta={
            "difficulty": difficulty,
            "contrast": contrast.astype(np.float32),
            "noise": noise.astype(np.float32),
            "occlusion": occlusion.astype(np.float32),
        },
        flip_safe=False,
        augment_by_default=False,
    )

"""``imagefolder``: any local class-per-folder tree of images (``root/<class>/<image>``).

When ``root`` holds ``train/`` and ``test/`` subfolders, each a class-per-folder
tree, ``test/`` is used as the official test split and val is carved out of
``train/``; otherwise test and val are carved out of everything by fraction.
Images are read with Pillow, converted to RGB or grey and resized to
``size x size``. Sample ids follow the sorted relative paths, which are kept
in ``meta["path"]``; the fingerprint hashes paths and pixels, so adding or
changing a file changes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.data.base import RawDataset, digest_arrays
from eebench.data.options import check_choice, check_int
from eebench.data.registry import register_dataset
from eebench.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)

EXPECTED = "a folder with one subfolder per class holding image files (root/<class>/<image>.png)"


def _class_tree(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, for subfolders that contain at least one image."""
    tree = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if files:
            tree[sub.name] = files
    return tree


def _read_image(path: Path, size: int, mode: str) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - matplotlib depends on pillow
        raise DataError("imagefolder needs Pillow to read images: pip install pillow") from None
    try:
        with Image.open(path) as im:
            im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(
            f"imagefolder: cannot read image '{path}' ({err}); remove or replace the file"
        ) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@register_dataset("imagefolder")
def load_imagefolder(root: str | None = None, size: int = 32, channels: int = 3) -> RawDataset:
    """A local class-per-folder image tree (optionally with train/ and test/); resized to size."""
    if root is None:
        raise DataError(
            f"imagefolder needs root=PATH (CLI: --data root=PATH) pointing at {EXPECTED}"
        )
    size = check_int("imagefolder", "size", size, 4, 1024)
    channels = check_choice("imagefolder", "channels", channels, (1, 3))
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(
            f"imagefolder: '{base.resolve()}' is not a folder; expected {EXPECTED}. "
            "Create it or pass another root=PATH"
        )
    official = (base / "train").is_dir() and (base / "test").is_dir()
    parts = (
        {"train": _class_tree(base / "train"), "test": _class_tree(base / "test")}
        if official
        else {"all": _class_tree(base)}
    )
    class_names = sorted({c for tree in parts.values() for c in tree})
    if len(class_names) < 2:
        raise DataError(
            f"imagefolder: found {len(class_names)} class folder(s) with images in '{base.resolve()}'; "
            f"expected at least 2: {EXPECTED} (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    index = {c: i for i, c in enumerate(class_names)}
    mode = "RGB" if channels == 3 else "L"
    images, labels, paths, is_test = [], [], [], []
    for part, tree in parts.items():
        for cls, files in tree.items():
            for path in files:
                images.append(_read_image(path, size, mode))
                labels.append(index[cls])
                paths.append(path.relative_to(base).as_posix())
                is_test.append(part == "test")
    pixels = np.stack(images)
    label_arr = np.asarray(labels, dtype=np.int64)
    path_arr = np.asarray(paths)
    return RawDataset(
        name="imagefolder",
        images=pixels.astype(np.float32) / 255.0,
        labels=label_arr,
        ids=np.arange(label_arr.shape[0], dtype=np.int64),
        class_names=class_names,
        options={"size": size, "channels": channels, "official_test": official},
        content_digest=digest_arrays(path_arr, pixels, label_arr),
        meta={"path": path_arr},
        official_test=np.asarray(is_test, dtype=bool) if official else None,
        flip_safe=True,
        augment_by_default=True,
    )

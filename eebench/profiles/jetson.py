"""Recognising a Jetson from its files, to pick the matching built-in profile.

On a Jetson, ``/proc/device-tree/model`` names the module or developer kit
(NUL-terminated) and ``/etc/nv_tegra_release`` names the L4T release and the
board family. ``root`` is a parameter so the same code runs against fixture
trees in tests.
"""

from __future__ import annotations

from pathlib import Path

# (substring of the device-tree model, lower case) -> built-in profile for the default mode.
# Order matters: more specific names first ("orin nano" before "orin", "xavier nx" before "xavier").
_MODEL_PROFILES: tuple[tuple[str, str], ...] = (
    ("orin nano", "jetson-orin-nano-8gb-15w"),
    ("agx orin", "jetson-agx-orin-64gb-maxn"),
    ("xavier nx", "jetson-xavier-nx-15w"),
    ("agx xavier", "jetson-agx-xavier-maxn"),
    ("jetson-agx", "jetson-agx-xavier-maxn"),  # the AGX Xavier devkit's device-tree model
    ("jetson nano", "jetson-nano-10w"),
)
# L4T board names that identify a single module family on their own
_BOARD_PROFILES: dict[str, str] = {
    "t210ref": "jetson-nano-10w",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def jetson_model(root: str | Path = "/") -> str | None:
    """The device-tree model string when it names an NVIDIA Jetson, else None."""
    model = _read(Path(root) / "proc/device-tree/model")
    return model if model and "jetson" in model.lower() else None


def is_jetson(root: str | Path = "/") -> bool:
    base = Path(root)
    return jetson_model(base) is not None or (base / "etc/nv_tegra_release").exists()


def detect_jetson(root: str | Path = "/") -> str | None:
    """The built-in profile name matching this Jetson (its default power mode), or None.

    None both off a Jetson and on a Jetson eebench has no profile for (e.g. a TX2).
    """
    base = Path(root)
    model = jetson_model(base)
    if model is not None:
        low = model.lower()
        for needle, profile in _MODEL_PROFILES:
            if needle in low:
                return profile
        return None
    release = _read(base / "etc/nv_tegra_release")
    if release:
        for board, profile in _BOARD_PROFILES.items():
            if f"board: {board}" in release.lower():
                return profile
    return None

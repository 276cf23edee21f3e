"""Finding profiles by name: the repository's hardware_profiles/ (built in) and its community/ folder.

A profile's name is its file name without ``.yaml``; the ``name`` field inside
must agree (checked on load). Extra folders can be listed in the environment
variable ``EEBENCH_PROFILE_PATH`` (separated like ``PATH``); they are searched
after the built-in and community profiles.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from eebench.errors import ConfigError
from eebench.profiles.schema import HardwareProfile
from eebench.profiles.validate import ProfileError, ProfileIssue, load_profile_file

ENV_PATH = "EEBENCH_PROFILE_PATH"


def builtin_profiles_dir() -> Path:
    """``hardware_profiles/`` of the repository: ``$EEBENCH_ROOT`` when set (a wheel install
    used from a checkout, e.g. asv's environments), else next to the ``eebench`` package."""
    root = os.environ.get("EEBENCH_ROOT")
    base = Path(root) if root else Path(__file__).resolve().parents[2]
    return base / "hardware_profiles"


def community_profiles_dir() -> Path:
    return builtin_profiles_dir() / "community"


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    path: Path
    origin: str  # "built-in", "community" or "extra"


def _extra_dirs() -> list[Path]:
    raw = os.environ.get(ENV_PATH, "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def profile_entries() -> list[ProfileEntry]:
    """Every profile file eebench can find; the first of two files with one name wins."""
    seen: dict[str, ProfileEntry] = {}
    folders = [(builtin_profiles_dir(), "built-in"), (community_profiles_dir(), "community")]
    folders += [(d, "extra") for d in _extra_dirs()]
    for folder, origin in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            seen.setdefault(path.stem, ProfileEntry(path.stem, path, origin))
    return list(seen.values())


def list_profiles() -> list[str]:
    """Names of every profile found."""
    return [e.name for e in profile_entries()]


def find_profile(name: str) -> ProfileEntry:
    """The entry of a profile name; unknown names get the nearest known name."""
    entries = {e.name: e for e in profile_entries()}
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown hardware profile '{name}'.{hint} Known profiles: {', '.join(entries) or '(none)'} "
        f"(searched {builtin_profiles_dir()}, {community_profiles_dir()} and ${ENV_PATH})"
    )


def load_named_file(path: Path) -> HardwareProfile:
    """Load a profile file whose name must match its file name."""
    profile = load_profile_file(path)
    if profile.name != path.stem:
        raise ProfileError(
            [
                ProfileIssue(
                    str(path),
                    "name",
                    f"'{profile.name}' does not match the file name '{path.name}'; "
                    f"rename one of them",
                )
            ]
        )
    return profile


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """A validated profile by name (``jetson-nano-10w``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_profile_file(p)
    return load_named_file(find_profile(str(name_or_path)).path)

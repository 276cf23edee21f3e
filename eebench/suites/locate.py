"""Finding suite files: a path, or the name of a built-in suite in the repository's suites/."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from eebench.errors import ConfigError


def builtin_suites_dir() -> Path:
    """The repository's ``suites/``: ``$EEBENCH_ROOT`` when set, else next to the package."""
    root = os.environ.get("EEBENCH_ROOT")
    return (Path(root) if root else Path(__file__).resolve().parents[2]) / "suites"


def builtin_suites() -> dict[str, Path]:
    folder = builtin_suites_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_suite(ref: str) -> Path:
    """``ref`` is a file path or a built-in name such as ``quick``."""
    p = Path(ref)
    suites = builtin_suites()
    if p.is_dir() and ref in suites:
        # a folder named like a built-in suite (e.g. ./quick/ holding its results) is not a
        # suite file: the built-in suite is meant
        return suites[ref]
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"suite file not found: {p.resolve()}", source=str(p))
        return p
    if ref in suites:
        return suites[ref]
    close = difflib.get_close_matches(ref, list(suites), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"'{ref}' is neither a suite file nor a built-in suite.{hint} "
        f"Built-in suites: {', '.join(suites) or '(none found in ' + str(builtin_suites_dir()) + ')'}"
    )

"""What makes a run one run: its resolved suite and the code that ran it.

``--resume`` continues a run only with the same suite (after env expansion
and defaults) and the same eebench version and commit: anything else would
put rows of two different experiments into one bundle. The suite is hashed
into the manifest; on a mismatch the differing fields are listed as
``field.path: old -> new`` so the user sees what changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

# recorded next to the suite but not part of what the run measures
NOT_IDENTITY = ("source",)


def suite_hash(suite: dict[str, Any]) -> str:
    """sha256 of the resolved suite as canonical JSON (key order does not matter)."""
    body = {k: v for k, v in suite.items() if k not in NOT_IDENTITY}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(data.encode()).hexdigest()


def run_identity(suite: dict[str, Any], version: str, commit: str | None) -> dict[str, Any]:
    return {"suite_sha256": suite_hash(suite), "eebench_version": version, "git_commit": commit}


@functools.cache
def process_commit() -> str | None:
    """The commit of the eebench checkout as this process first saw it (None outside git).

    Read once per process: the code a process runs is what it imported, even when the
    checkout moves on while it runs.
    """
    from eebench.measure.environment import git_state

    return git_state()[0]


_ABSENT = "<absent>"


def diff_fields(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf that differs between two JSON-like values, as (field path, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in list(old) + [k for k in new if k not in old]:
            if key in NOT_IDENTITY and not path:
                continue
            sub = f"{path}.{key}" if path else str(key)
            out += diff_fields(old.get(key, _ABSENT), new.get(key, _ABSENT), sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else _ABSENT
            b = new[i] if i < len(new) else _ABSENT
            out += diff_fields(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [(path or "(suite)", old, new)]


def format_diff(diffs: list[tuple[str, Any, Any]], limit: int = 12) -> str:
    def show(v: Any) -> str:
        return v if v == _ABSENT else json.dumps(v)

    lines = [f"  {p}: {show(a)} → {show(b)}" for p, a, b in diffs[:limit]]
    if len(diffs) > limit:
        lines.append(f"  ... and {len(diffs) - limit} more")
    return "\n".join(lines)


__all__ = ["diff_fields", "format_diff", "process_commit", "run_identity", "suite_hash"]

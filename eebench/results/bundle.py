"""The results bundle: one folder per run, written atomically, never overwritten.

Layout of ``<root>/<suite>/<run-id>/``::

    manifest.json          schema version, suite as resolved, environment, timings,
                           status (complete | partial | failed, with reason), steps,
                           checksums of every table
    parts/<step>.<table>.csv   what each finished step produced (the unit of --resume)
    <table>.csv            the long-format tables, assembled from the parts at the end
    report/                written by ``eebench report``

A run is built step by step. Each finished step's output is written to
``parts/`` and recorded (with its checksum) in the manifest before the next
step starts, so a run killed at any moment keeps every finished step and is
``partial``; ``--resume`` redoes only the steps that are missing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eebench.errors import ResultsError
from eebench.results.schema import SCHEMA_VERSION, TABLES

MANIFEST = "manifest.json"
STATUSES = ("complete", "partial", "failed")


class ChecksumError(ResultsError):
    """A table whose bytes do not match the checksum recorded in the manifest."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a step key (model names contain '-', ':' in backends)."""
    return _SAFE.sub("_", text)


@dataclass
class RunWriter:
    """Writes one run's bundle step by step; see the module docstring."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        root: Path | str,
        suite_name: str,
        suite: dict[str, Any],
        environment: dict[str, Any],
        run_id: str | None = None,
    ) -> RunWriter:
        """Start a new run; refuses to reuse an existing run folder."""
        run_id = run_id or new_run_id()
        path = Path(root) / safe_name(suite_name) / run_id
        if path.exists():
            raise ResultsError(
                f"{path}: a run with id '{run_id}' already exists and is never overwritten; "
                "continue it with --resume, or choose another --run-id"
            )
        path.mkdir(parents=True)
        writer = cls(
            path,
            {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "suite_name": suite_name,
                "suite": suite,
                "environment": environment,
                "status": "partial",
                "reason": "in progress",
                "started": now_iso(),
                "finished": None,
                "resumed": [],
                "steps": {},
                "tables": {},
            },
        )
        writer._write_manifest()
        return writer

    @classmethod
    def resume(cls, path: Path | str, environment: dict[str, Any]) -> RunWriter:
        """Reopen a partial or failed run to finish its missing steps."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest["status"] == "complete":
            raise ResultsError(f"{path}: this run is already complete; there is nothing to resume")
        manifest.setdefault("resumed", []).append({"at": now_iso(), "environment": environment})
        manifest["status"], manifest["reason"] = "partial", "in progress (resumed)"
        writer = cls(path, manifest)
        writer._write_manifest()
        return writer

    # ------------------------------------------------------------------ steps
    def has_step(self, key: str) -> bool:
        """True when the step finished earlier and all its parts are intact."""
        step = self.manifest["steps"].get(key)
        if not step or step.get("status") != "done":
            return False
        for rel, checksum in step.get("parts", {}).items():
            p = self.path / rel
            if not p.exists() or sha256_file(p) != checksum:
                return False
        return True

    def step_part(self, key: str, table: str) -> pd.DataFrame | None:
        """A finished step's contribution to a table (for reuse when resuming)."""
        rel = self.manifest["steps"].get(key, {}).get("tables", {}).get(table)
        return pd.read_csv(self.path / rel) if rel else None

    def step_info(self, key: str) -> dict[str, Any]:
        return dict(self.manifest["steps"].get(key, {}).get("info", {}))

    def finish_step(
        self,
        key: str,
        tables: dict[str, pd.DataFrame] | None = None,
        info: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Record a finished step: its table parts first, then the manifest entry."""
        parts, names = {}, {}
        for table, df in (tables or {}).items():
            if table not in TABLES:
                raise ValueError(f"unknown table '{table}'; known: {sorted(TABLES)}")
            rel = f"parts/{safe_name(key)}.{table}.csv"
            atomic_write_bytes(self.path / rel, _table_bytes(df))
            parts[rel] = sha256_file(self.path / rel)
            names[table] = rel
        self.manifest["steps"][key] = {
            "status": "done",
            "parts": parts,
            "tables": names,
            "info": info or {},
            "seconds": seconds,
            "finished": now_iso(),
        }
        self._write_manifest()

    def record_timing(self, name: str, seconds: float) -> None:
        self.manifest.setdefault("timings", {})[name] = seconds
        self._write_manifest()

    # ------------------------------------------------------------------ closing
    def assemble(self) -> dict[str, pd.DataFrame]:
        """Concatenate every step's parts into the bundle's tables and checksum them."""
        frames: dict[str, list[pd.DataFrame]] = {}
        for step in self.manifest["steps"].values():
            for table, rel in step.get("tables", {}).items():
                frames.setdefault(table, []).append(pd.read_csv(self.path / rel))
        out = {}
        for table in TABLES:
            parts = [f for f in frames.get(table, []) if len(f.columns)]
            df = (
                pd.concat(parts, ignore_index=True)
                if parts
                else pd.DataFrame(columns=TABLES[table].required)
            )
            rel = f"{table}.csv"
            atomic_write_bytes(self.path / rel, _table_bytes(df))
            self.manifest["tables"][table] = {
                "file": rel,
                "sha256": sha256_file(self.path / rel),
                "rows": len(df),
            }
            out[table] = df
        self._write_manifest()
        return out

    def close(self, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.manifest["status"] = status
        self.manifest["reason"] = reason
        self.manifest["finished"] = now_iso()
        self._write_manifest()

    def _write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=2, sort_keys=False, default=_json_default)
        atomic_write_bytes(self.path / MANIFEST, data.encode())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------- reading
def read_manifest(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.exists():
        raise ResultsError(
            f"{path}: not a results bundle (no {MANIFEST}); "
            "pass a run folder such as results/quick/<run-id>"
        )
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{mf}: unreadable manifest ({err}); the run cannot be used") from err
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{mf}: schema version {manifest.get('schema_version')} is not "
            f"supported (this eebench reads version {SCHEMA_VERSION})"
        )
    return manifest


@dataclass
class Run:
    """A finished (or partial) run, read back with every table's checksum verified."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path | str) -> Run:
        path = Path(path)
        return cls(path, read_manifest(path))

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def label(self) -> str:
        """A short name for side-by-side reports: suite/run-id."""
        return f"{self.manifest['suite_name']}/{self.run_id}"

    def table(self, name: str) -> pd.DataFrame:
        """Load a table; a checksum mismatch is an error, never a silent use."""
        entry = self.manifest.get("tables", {}).get(name)
        if entry is None:
            if name not in TABLES:
                raise ResultsError(f"unknown table '{name}'; known: {sorted(TABLES)}")
            return pd.DataFrame(columns=TABLES[name].required)
        p = self.path / entry["file"]
        if not p.exists():
            raise ChecksumError(f"{p}: table listed in the manifest is missing")
        actual = sha256_file(p)
        if actual != entry["sha256"]:
            raise ChecksumError(
                f"{p}: checksum mismatch (manifest {entry['sha256'][:12]}..., file {actual[:12]}...): "
                "the table was modified or corrupted after the run; re-run the suite"
            )
        return pd.read_csv(p)

    def verify(self) -> list[str]:
        """Problems with the bundle's tables (empty when every checksum holds)."""
        problems = []
        for name in self.manifest.get("tables", {}):
            try:
                self.table(name)
            except ResultsError as err:
                problems.append(str(err))
        return problems


def iter_runs(root: Path | str) -> Iterator[Path]:
    root = Path(root)
    if not root.exists():
        return
    for mf in sorted(root.glob(f"*/*/{MANIFEST}")):
        yield mf.parent


def list_runs(root: Path | str) -> pd.DataFrame:
    """Every run under ``root`` with its status, timing and table integrity."""
    rows = []
    for path in iter_runs(root):
        try:
            run = Run.open(path)
        except ResultsError as err:
            rows.append(
                {"run": str(path), "suite": "?", "status": "unreadable", "reason": str(err)}
            )
            continue
        m = run.manifest
        problems = run.verify()
        rows.append(
            {
                "run": str(path),
                "suite": m.get("suite_name"),
                "status": m.get("status"),
                "started": m.get("started"),
                "finished": m.get("finished"),
                "commit": (m.get("environment", {}).get("git_commit") or "")[:10],
                "steps": len(m.get("steps", {})),
                "reason": "; ".join(problems) if problems else m.get("reason", ""),
            }
        )
    return pd.DataFrame(rows)

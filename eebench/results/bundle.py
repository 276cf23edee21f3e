"""The results bundle: one folder per run, written atomically, never overwritten.

Layout of ``<root>/<suite>/<run-id>/``::

    manifest.json          schema version, suite as resolved, identity (suite hash,
                           eebench version, commit), environment, timings,
                           status (complete | partial | failed, with reason), steps,
                           checksums of every table
    parts/<step>.<table>.csv   what each finished step produced (the unit of --resume)
    <table>.csv            the long-format tables, assembled from the parts at the end
    report/                written by ``eebench report``
    .lock                  while a process works on the run (see :mod:`eebench.results.lock`)

A run is built step by step. Each finished step's output is written to
``parts/`` and recorded (with its checksum) in the manifest before the next
step starts, so a run killed at any moment keeps every finished step and is
``partial``; ``--resume`` redoes only the steps that are missing, and only for
the same suite and code (:mod:`eebench.results.identity`). ``complete`` is
written last, after the report.

A folder without ``manifest.json`` whose only files are the lock and the
temporary file of the first manifest write is an *incomplete* run (killed
while being created): ``--resume`` starts it afresh, ``eebench results clean``
removes it.
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

from eebench.errors import ResultsError, ResumeRefused
from eebench.results.identity import diff_fields, format_diff
from eebench.results.lock import LOCK_NAME, RunLock, lock_is_live, read_lock
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
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if err.filename is None:  # write()/fsync() do not say which file: name the target
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
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
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def safe_name(text: str) -> str:
    """A file-name-safe version of a step key (model names contain '-', ':' in backends)."""
    return _SAFE.sub("_", text)


def suite_folder(suite_name: str) -> str:
    """The folder of a suite's runs: a plain name, never '.', '..' or a path."""
    name = safe_name(suite_name)
    return name if name.strip(".") else "suite"


def check_run_id(run_id: str) -> str:
    """A run id is a plain folder name: it can never point outside ``<out>/<suite>/``."""
    if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise ResultsError(
            f"--run-id {run_id!r}: a run id is a plain name of letters, digits, '-', '_' and '.' "
            "(at most 128 characters, not '.' or '..'); for example --run-id baseline-2"
        )
    return run_id


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.<name>.<random>.tmp``) in a run folder."""
    return sorted(p for p in folder.rglob(".*.tmp") if p.is_file())


def is_incomplete_run(folder: Path) -> bool:
    """A run folder killed while being created: no manifest, nothing but the lock and the
    temporary file of the first manifest write."""
    if not folder.is_dir() or (folder / MANIFEST).exists():
        return False
    for p in folder.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_file() and p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp"):
            continue
        return False
    return True


@dataclass
class RunWriter:
    """Writes one run's bundle step by step; see the module docstring."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    lock: RunLock | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        root: Path | str,
        suite_name: str,
        suite: dict[str, Any],
        environment: dict[str, Any],
        run_id: str | None = None,
        identity: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        adopt: Path | None = None,
    ) -> RunWriter:
        """Start a new run; refuses to reuse an existing run folder.

        ``adopt`` names an incomplete run folder (see :func:`is_incomplete_run`) to start in
        instead of a new one. The lock is taken before the first manifest is written.
        """
        if adopt is not None:
            path = Path(adopt)
            run_id = path.name
            if not is_incomplete_run(path):
                raise ResultsError(f"{path}: not an incomplete run folder; it cannot be restarted")
        else:
            run_id = check_run_id(new_run_id() if run_id is None else run_id)
            path = Path(root) / suite_folder(suite_name) / run_id
            if is_incomplete_run(path):
                raise ResultsError(
                    f"{path}: a run with id '{run_id}' was interrupted while being created (it "
                    f"has no {MANIFEST}); start it again with --resume {path}, remove it with "
                    f"'eebench results clean --root {root}', or choose another --run-id"
                )
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
                "identity": identity or {},
                "environment": environment,
                "status": "partial",
                "reason": "in progress",
                "started": now_iso(),
                "finished": None,
                "resumed": [],
                "steps": {},
                "tables": {},
                **(extra or {}),
            },
        )
        writer.lock = RunLock(path).acquire()
        try:
            for leftover in temp_leftovers(path):
                leftover.unlink()
            writer._write_manifest()
        except BaseException:
            writer.release()
            raise
        return writer

    @staticmethod
    def check_resume(
        path: Path | str,
        suite: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        force: bool = False,
        new_run_hint: str = "",
    ) -> dict[str, Any]:
        """Read-only checks before a resume: the run's manifest, or ResumeRefused.

        Refuses a complete run, a run of another (or an edited) suite, a run of another eebench
        version or commit (unless ``force``) and a run that a live process holds. Nothing is
        written, so a refused resume leaves the run exactly as it was.
        """
        path = Path(path)
        manifest = read_manifest(path)
        hint = f" {new_run_hint}" if new_run_hint else ""
        if manifest["status"] == "complete":
            raise ResumeRefused(
                f"{path}: this run is already complete; there is nothing to resume.{hint}"
            )
        holder = read_lock(path)
        if lock_is_live(holder):
            RunLock(path).acquire()  # raises RunLocked naming the holder
        if suite is not None:
            recorded = manifest.get("suite") or {}
            old_hash = (manifest.get("identity") or {}).get("suite_sha256")
            new_hash = (identity or {}).get("suite_sha256")
            diffs = diff_fields(recorded, suite)
            if diffs or (old_hash and new_hash and old_hash != new_hash):
                what = (
                    "another suite"
                    if recorded.get("name") != suite.get("name")
                    else "an edited version of its suite"
                )
                raise ResumeRefused(
                    f"{path}: refusing to resume with {what}: the run was started with suite "
                    f"'{recorded.get('name')}' ({recorded.get('source', '?')}) and resuming "
                    "would mix results of two experiments in one bundle. Differences "
                    f"(run → now):\n{format_diff(diffs) or '  (suite hash differs)'}\n"
                    f"Resume with the suite as it was, or start a new run instead.{hint}"
                )
        if identity is not None:
            old = manifest.get("identity") or {}
            changed = [
                (k, old.get(k), identity.get(k))
                for k in ("eebench_version", "git_commit")
                if k in old and old.get(k) != identity.get(k)
            ]
            if changed and not force:
                lines = "\n".join(f"  {k}: {a} → {b}" for k, a, b in changed)
                raise ResumeRefused(
                    f"{path}: refusing to resume: the run was made by other code (run → now):\n"
                    f"{lines}\nSteps computed by two code versions would be mixed in one "
                    "bundle. Start a new run, or pass --force-resume to continue anyway (recorded "
                    f"in the manifest).{hint}"
                )
        return manifest

    @classmethod
    def resume(
        cls,
        path: Path | str,
        environment: dict[str, Any],
        identity: dict[str, Any] | None = None,
        force: bool = False,
        log: Any = None,
    ) -> RunWriter:
        """Reopen a partial or failed run to finish its missing steps (under its lock).

        Call :meth:`check_resume` first for the suite and code checks. Temporary files left by
        interrupted writes of this run are removed once the lock is held.
        """
        path = Path(path)
        if read_manifest(path)["status"] == "complete":
            raise ResumeRefused(f"{path}: this run is already complete; there is nothing to resume")
        lock = RunLock(path).acquire(log=log)
        try:
            manifest = read_manifest(path)  # again, under the lock
            if manifest["status"] == "complete":
                raise ResumeRefused(
                    f"{path}: this run is already complete; there is nothing to resume"
                )
            removed = temp_leftovers(path)
            for leftover in removed:
                leftover.unlink()
            entry: dict[str, Any] = {"at": now_iso(), "environment": environment}
            if removed:
                entry["removed_temp_files"] = [str(p.relative_to(path)) for p in removed]
            old = manifest.get("identity") or {}
            if identity is not None and any(
                old.get(k) != identity.get(k) for k in ("eebench_version", "git_commit") if k in old
            ):
                entry["forced"] = {
                    "reason": "--force-resume across eebench versions or commits",
                    "from": {k: old.get(k) for k in ("eebench_version", "git_commit")},
                    "to": {k: identity.get(k) for k in ("eebench_version", "git_commit")},
                }
                if not force:
                    raise ResumeRefused(
                        f"{path}: the run was made by other code; see --force-resume"
                    )
            manifest.setdefault("resumed", []).append(entry)
            manifest["status"], manifest["reason"] = "partial", "in progress (resumed)"
            writer = cls(path, manifest, lock)
            writer._write_manifest()
        except BaseException:
            lock.release()
            raise
        return writer

    def release(self) -> None:
        """Give up the run's lock (the end of this process's work on it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

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
        self.finish_step_bytes(
            key,
            {table: _table_bytes(df) for table, df in (tables or {}).items()},
            info,
            seconds,
        )

    def finish_step_bytes(
        self,
        key: str,
        tables: dict[str, bytes],
        info: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        """:meth:`finish_step` with each table part as the CSV bytes another bundle wrote (a
        cluster node's): copied verbatim, so the numbers are not parsed and printed again."""
        parts, names = {}, {}
        for table, data in tables.items():
            if table not in TABLES:
                raise ValueError(f"unknown table '{table}'; known: {sorted(TABLES)}")
            rel = f"parts/{safe_name(key)}.{table}.csv"
            atomic_write_bytes(self.path / rel, data)
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

    def reorder_steps(self, order: list[str]) -> None:
        """Put the steps named in ``order`` first, in that order (the others keep theirs after):
        the tables are assembled in step order, so steps finished out of order (on a cluster)
        assemble as a run on one machine would."""
        steps = self.manifest["steps"]
        keys = [k for k in order if k in steps] + [k for k in steps if k not in set(order)]
        self.manifest["steps"] = {k: steps[k] for k in keys}
        self._write_manifest()

    def note(self, **fields: Any) -> None:
        """Record top-level manifest fields (e.g. the phase the run reached) durably."""
        self.manifest.update(fields)
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
# manifest fields and the JSON type each must have (anything else: edited by hand or damaged)
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "suite_name": (str,),
    "suite": (dict,),
    "environment": (dict,),
    "status": (str,),
    "steps": (dict,),
    "tables": (dict,),
    "resumed": (list,),
    "timings": (dict,),
    "identity": (dict,),
}


def _check_manifest(manifest: Any, mf: Path) -> dict[str, Any]:
    fix = f"restore {mf} from a copy, or re-run the suite"
    if not isinstance(manifest, dict):
        raise ResultsError(f"{mf}: expected a JSON object, got {type(manifest).__name__}; {fix}")
    for key, types in _MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], types):
            raise ResultsError(
                f"{mf}: field '{key}' is a {type(manifest[key]).__name__}, expected "
                f"{' or '.join('an object' if t is dict else 'a list' if t is list else 'a string' for t in types)}"
                f" (was the manifest edited by hand?); {fix}"
            )
    for key in ("run_id", "suite_name", "status", "steps"):
        if key not in manifest:
            raise ResultsError(f"{mf}: required field '{key}' is missing; {fix}")
    if manifest["status"] not in STATUSES:
        raise ResultsError(
            f"{mf}: field 'status' is {manifest['status']!r}, expected one of {', '.join(STATUSES)}; "
            f"{fix}"
        )
    for key, step in manifest["steps"].items():
        if not isinstance(step, dict) or not all(
            isinstance(step.get(k, {}), dict) for k in ("parts", "tables", "info")
        ):
            raise ResultsError(f"{mf}: field 'steps.{key}' is not a step record; {fix}")
    for key, entry in manifest.get("tables", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ResultsError(f"{mf}: field 'tables.{key}' is not a table record; {fix}")
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    mf = path / MANIFEST
    if not path.exists():
        raise ResultsError(
            f"{path}: no such run folder; list runs with 'eebench results list --root <out>'"
        )
    if not mf.exists():
        if is_incomplete_run(path):
            raise ResultsError(
                f"{path}: an incomplete run (interrupted while its first {MANIFEST} was being "
                "written); start it again with 'eebench run SUITE --resume "
                f"{path}' or remove it with 'eebench results clean --root {path.parent.parent}'"
            )
        raise ResultsError(
            f"{path}: not a results bundle (no {MANIFEST}); "
            "pass a run folder such as results/quick/<run-id>"
        )
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{mf}: unreadable manifest ({err}); the run cannot be used") from err
    except UnicodeDecodeError as err:
        raise ResultsError(f"{mf}: not a text file ({err}); the run cannot be used") from err
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ResultsError(
            f"{mf}: schema version {version} is not "
            f"supported (this eebench reads version {SCHEMA_VERSION})"
        )
    return _check_manifest(manifest, mf)


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


def iter_incomplete_runs(root: Path | str) -> Iterator[Path]:
    """Run folders under ``root`` that were killed while being created (no manifest)."""
    root = Path(root)
    if not root.is_dir():
        return
    for folder in sorted(root.glob("*/*/")):
        if is_incomplete_run(folder):
            yield folder


@dataclass(frozen=True)
class Leftover:
    """Something ``eebench results clean`` would remove, and why."""

    path: Path
    why: str


def clean_candidates(root: Path | str) -> list[Leftover]:
    """Incomplete run folders and temporary files of interrupted writes, in runs nobody holds."""
    out = [
        Leftover(p, "incomplete run: interrupted while its first manifest was being written")
        for p in iter_incomplete_runs(root)
        if not lock_is_live(read_lock(p))
    ]
    for run in iter_runs(root):
        if lock_is_live(read_lock(run)):
            continue
        out += [Leftover(p, "temporary file of an interrupted write") for p in temp_leftovers(run)]
    return out


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
    for path in iter_incomplete_runs(root):
        rows.append(
            {
                "run": str(path),
                "suite": path.parent.name,
                "status": "incomplete",
                "steps": 0,
                "reason": "interrupted while being created; resume it with --resume or remove it "
                f"with 'eebench results clean --root {root}'",
            }
        )
    return pd.DataFrame(rows)

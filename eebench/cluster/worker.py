"""One cluster unit, run on the node it was sent to, from files to files.

The driver sends a *snapshot*: the suite (as resolved by the driver, plus the suite file and
the files it names by relative path), the run's finished steps (manifest, table parts, exit
records) and the cache files the unit reads (the model's checkpoint, its ONNX exports). The
node rebuilds a private copy of the bundle from them, runs the unit's steps with the same
:class:`~eebench.suites.runner.SuiteRunner` methods a run on one machine uses, and returns
what the steps produced: each new step's info, time and table parts (CSV bytes, copied
verbatim by the driver), the new files of the bundle (exit records, LoadGen logs), the new
cache files, and the node's environment. Nothing is read from or written to the driver's
disk, so the same code runs on a node across the network and on the driver's own machine.

No Ray here: :mod:`eebench.cluster.driver` wraps :func:`execute_unit` in a Ray task.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_FOLDERS = ("parts", "records")
"""Folders of the bundle a unit may read (the report and the LoadGen logs are not read)."""


@dataclass
class Snapshot:
    """What a unit needs, as bytes: built by the driver, unpacked by the node."""

    unit: dict[str, Any]
    suite: dict[str, Any]  # the suite as the driver resolved it (model_dump, with "source")
    suite_files: dict[str, bytes]  # relative to the suite file's folder; the suite file first
    suite_name: str  # the suite file's name
    original_source: str  # the suite file's path on the driver
    run_id: str
    suite_folder: str
    run_files: dict[str, bytes]  # relative to the run folder
    cache_files: dict[str, bytes]  # relative to the cache folder
    devices: list[str] = field(default_factory=list)  # devices the unit holds
    train_progress: bool = False


@dataclass
class UnitResult:
    """What a unit produced, for the driver to write into the run."""

    unit: dict[str, Any]
    steps: list[dict[str, Any]]  # {key, info, seconds, tables: {table: csv bytes}}
    run_files: dict[str, bytes]  # new or changed files of the bundle (not manifest/parts)
    cache_files: dict[str, bytes]  # new cache files
    manifest_notes: dict[str, Any]  # top-level manifest fields the steps added or changed
    environment: dict[str, Any]
    log: list[str]
    seconds: float


def list_files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Plain files under ``root`` by relative path (hidden files and ``skip`` prefixes left out)."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(skip) and not p.name.startswith("."):
            out[rel] = p
    return out


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = (root / rel).resolve()
        if root.resolve() not in path.parents:
            raise ValueError(f"snapshot file '{rel}' is outside its folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _suite_source(snap: Snapshot, tmp: Path) -> Path:
    """The suite file to run from: the driver's own path when this node sees the same file (the
    driver's machine, or a shared folder), otherwise a copy with the files it names."""
    original = Path(snap.original_source)
    first = next(iter(snap.suite_files.values()), None)
    same = original.is_file() and first is not None and original.read_bytes() == first
    if same and all(
        (original.parent / rel).is_file() and (original.parent / rel).read_bytes() == data
        for rel, data in snap.suite_files.items()
    ):
        return original
    folder = tmp / "suite"
    _write(folder, snap.suite_files)
    return folder / snap.suite_name


FAULTS_VARIABLE = "EEBENCH_CLUSTER_FAULTS"
"""Fault injection for testing the driver's recovery: the path of a JSON file mapping unit ids
to ``"crash-once"`` (the worker process exits the first time it runs the unit, as a node that
is lost would) or ``"error"`` (the unit raises). Unset in normal runs."""


def _inject_fault(unit_id: str) -> None:
    import os

    path = os.environ.get(FAULTS_VARIABLE)
    if not path or not Path(path).is_file():
        return
    fault = json.loads(Path(path).read_text()).get(unit_id)
    if fault == "error":
        raise RuntimeError(f"fault injected into {unit_id}")
    if fault == "crash-once":
        marker = Path(f"{path}.{unit_id.replace(':', '_').replace('@', '_')}.crashed")
        if not marker.exists():
            marker.write_text("crashed once\n")
            os._exit(1)


def execute_unit(snap: Snapshot) -> UnitResult:
    """Run one unit on a private copy of the bundle; return what it produced."""
    from eebench.backends.placement import holding
    from eebench.cluster.plan import Unit
    from eebench.measure.environment import capture_environment
    from eebench.results.bundle import MANIFEST, RunWriter
    from eebench.suites.runner import RunOptions, SuiteRunner
    from eebench.suites.schema import SuiteSpec

    t0 = time.perf_counter()
    unit = Unit.from_dict(snap.unit)
    _inject_fault(unit.id)
    tmp = Path(tempfile.mkdtemp(prefix="eebench-unit-"))
    log: list[str] = []
    try:
        source = _suite_source(snap, tmp)
        out_root, cache = tmp / "results", tmp / "cache"
        run = out_root / snap.suite_folder / snap.run_id
        _write(run, snap.run_files)
        _write(cache, snap.cache_files)
        before_run = {rel: p.read_bytes() for rel, p in list_files(run).items()}
        before_cache = set(list_files(cache))
        manifest = json.loads(snap.run_files[MANIFEST])
        steps_before = set(manifest["steps"])
        top_before = copy.deepcopy({k: v for k, v in manifest.items() if k != "steps"})
        resolved = {k: v for k, v in snap.suite.items() if k != "source"}
        spec = SuiteSpec.model_validate(resolved)
        runner = SuiteRunner(
            spec,
            source,
            RunOptions(
                out_root=out_root,
                cache_root=cache,
                progress=snap.train_progress,
                report=False,
                log=log.append,
            ),
        )
        runner._load_dataset()
        runner.writer = RunWriter(run, manifest)  # a private copy: no lock to take
        with holding(set(snap.devices)):
            runner.run_unit(unit)
        after = runner.writer.manifest
        steps = []
        for key, record in after["steps"].items():
            if key in steps_before:
                continue
            tables = {t: (run / rel).read_bytes() for t, rel in record.get("tables", {}).items()}
            steps.append(
                {
                    "key": key,
                    "info": record.get("info", {}),
                    "seconds": record.get("seconds"),
                    "tables": tables,
                }
            )
        run_files = {
            rel: data
            for rel, p in list_files(run, skip=(MANIFEST, "parts/")).items()
            if before_run.get(rel) != (data := p.read_bytes())
        }
        cache_files = {
            rel: p.read_bytes() for rel, p in list_files(cache).items() if rel not in before_cache
        }
        notes = {
            k: v
            for k, v in after.items()
            if k not in ("steps", "timings", "status", "reason") and top_before.get(k) != v
        }
        return UnitResult(
            unit=snap.unit,
            steps=steps,
            run_files=run_files,
            cache_files=cache_files,
            manifest_notes=notes,
            environment=capture_environment().to_dict(),
            log=log,
            seconds=time.perf_counter() - t0,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

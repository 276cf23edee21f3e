"""Reading runs for a report: every table, even from a run that never finished.

A complete run has assembled, checksummed tables. A run that was killed (or
failed) may only have the parts of its finished steps; the report still shows
what exists, read from those parts with their own checksums, and says the run
is partial. A checksum mismatch is always an error naming the file: a damaged
table is never drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eebench.errors import ResultsError
from eebench.results import TABLES, ChecksumError, Run, sha256_file

# columns that hold text (so a missing value is "" rather than NaN) per table
TEXT_COLUMNS = {
    "model",
    "family",
    "split",
    "part",
    "metric",
    "unit",
    "source_kind",
    "source",
    "backend",
    "device",
    "policy",
    "confidence",
    "thresholds",
    "calibration",
    "cost_source",
    "energy_source",
    "latency_source",
    "step",
    "target",
    "reason",
    "sample_id",
}


@dataclass
class RunData:
    """One run's manifest and tables, ready for plotting (text columns never NaN)."""

    label: str
    path: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The manifest's status; ``complete`` for a run whose steps all finished and whose tables
        are assembled but that is still closing (the runner writes its own report then)."""
        status = str(self.manifest.get("status", "unknown"))
        closing = self.manifest.get("steps_finished") and self.manifest.get("tables")
        in_progress = str(self.manifest.get("reason") or "").startswith("in progress")
        if status == "partial" and closing and in_progress:
            return "complete"
        return status

    @property
    def reason(self) -> str:
        return "" if self.status == "complete" else str(self.manifest.get("reason") or "")

    @property
    def is_partial(self) -> bool:
        return self.status != "complete"

    @property
    def environment(self) -> dict[str, Any]:
        env = self.manifest.get("environment")
        return env if isinstance(env, dict) else {}

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _from_parts(run: Run, name: str) -> pd.DataFrame | None:
    """Concatenate the parts that finished steps wrote for ``name``, checksums verified."""
    frames = []
    for key, step in run.manifest.get("steps", {}).items():
        if step.get("status") != "done":
            continue
        rel = step.get("tables", {}).get(name)
        if not rel:
            continue
        path = run.path / rel
        expected = step.get("parts", {}).get(rel)
        if not path.exists():
            raise ChecksumError(f"{path}: part of finished step '{key}' is missing")
        if expected and sha256_file(path) != expected:
            raise ChecksumError(
                f"{path}: checksum mismatch for step '{key}': the part was modified or corrupted "
                "after it was written; resume the run (eebench run --resume) to redo the step"
            )
        frames.append(_read_csv(path))
    frames = [f for f in frames if len(f.columns)]
    return pd.concat(frames, ignore_index=True) if frames else None


def _normalise(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Required columns present, text columns as str, everything else numeric where it can be."""
    df = df.copy()
    for col in TABLES[name].required:
        if col not in df.columns:
            df[col] = np.nan
    for col in df.columns:
        if col in TEXT_COLUMNS:
            df[col] = df[col].where(df[col].notna(), "").astype(str)
        elif df[col].dtype == object:
            converted = pd.to_numeric(df[col], errors="coerce")
            if converted.notna().sum() == df[col].notna().sum():
                df[col] = converted
    return df


def load_run(path: Path | str) -> RunData:
    """Open a run folder; raises ResultsError for a missing run or a damaged table."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such run folder; list runs with 'eebench results list'")
    run = Run.open(path)
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    assembled = run.manifest.get("tables", {})
    from_parts = []
    for name in TABLES:
        if name in assembled:
            df = run.table(name)
        else:
            df = _from_parts(run, name)
            if df is not None:
                from_parts.append(name)
            else:
                df = pd.DataFrame(columns=TABLES[name].required)
        tables[name] = _normalise(name, df)
    if from_parts:
        notes.append(
            "tables read from the finished steps (the run was not assembled): "
            + ", ".join(from_parts)
        )
    missing = [
        n for n in ("exits", "stage_costs", "operating_points", "validation") if tables[n].empty
    ]
    if missing:
        notes.append("no data in: " + ", ".join(missing))
    return RunData(label=run.label, path=path, manifest=run.manifest, tables=tables, notes=notes)


def load_runs(paths: list[Path | str]) -> list[RunData]:
    """Open several runs; labels are made unique so side-by-side figures can tell them apart."""
    if not paths:
        raise ResultsError(
            "no run given; pass one or more run folders such as results/quick/<run-id>"
        )
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        n = seen.get(run.label, 0)
        seen[run.label] = n + 1
        if n:
            run.label = f"{run.label} #{n + 1}"
    return runs


def combined(runs: list[RunData], name: str) -> pd.DataFrame:
    """One table across runs, with a ``run`` column holding each run's label."""
    frames = []
    for run in runs:
        df = run.table(name)
        if df.empty:
            continue
        frames.append(df.assign(run=run.label))
    if not frames:
        return pd.DataFrame(columns=[*TABLES[name].required, "run"])
    return pd.concat(frames, ignore_index=True)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """A nested environment dict as dotted keys -> short strings (for side-by-side tables)."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            out[prefix] = ", ".join(str(v) for v in obj)
        else:
            for i, value in enumerate(obj):
                out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = "" if obj is None else str(obj)
    return out

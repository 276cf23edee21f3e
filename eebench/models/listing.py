"""The model table shown by ``eebench list models``.

Building every model and tracing its costs takes seconds, so each model's row is cached in a
small JSON file keyed by what determines it: model name, input shape, number of classes,
eebench version and the content of the file that defines the model (a changed model file
gets fresh numbers). The cache lives under ``$EEBENCH_CACHE_DIR`` (default
``~/.cache/eebench``); a cache that cannot be read or written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eebench.models.base import InputShapeError
from eebench.models.registry import create_model, list_models

CUM_MACS_COLUMN = "cum MACs per exit (M)"
FINAL_MACS_COLUMN = "plain network MACs (M)"

TABLE_NOTE = (
    "MACs are analytic (fvcore; 1 MAC = 1 multiply-add of conv/linear/matmul, FLOPs = 2 x MACs), "
    "per sample. cum MACs per exit = all stages and heads up to that exit; "
    "plain network MACs = what the network without its early exits runs (the final-only "
    "baseline's cost): all stages + the final head only; for a cascade, its last member alone."
)


def _millions(value: float) -> str:
    """MACs in millions with three significant digits (``0.12``, ``2.3``, ``61``)."""
    return f"{value / 1e6:.3g}"


CACHE_VERSION = 1


def table_cache_path() -> Path:
    """``$EEBENCH_CACHE_DIR/tables/models.json``, else ``~/.cache/eebench/tables/models.json``."""
    root = os.environ.get("EEBENCH_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "eebench") / "tables" / "models.json"


def _row_key(name: str, input_shape: Sequence[int], num_classes: int) -> str | None:
    """What determines a model's row; ``None`` when its defining file cannot be read."""
    from eebench import __version__
    from eebench.models.registry import MODELS

    try:
        source = inspect.getsourcefile(MODELS.get(name))
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else None
    except (OSError, TypeError, KeyError):
        digest = None
    if digest is None:
        return None
    key = [CACHE_VERSION, __version__, name, list(input_shape), num_classes, digest]
    return json.dumps(key, separators=(",", ":"))


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Write atomically; a read-only or full disk only costs the next call its speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".models-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass


def models_table(
    input_shape: Sequence[int],
    num_classes: int = 10,
    filter: str | None = None,
    cache: Path | None | bool = False,
) -> pd.DataFrame:
    """One row per registered model: family, exits, parameters and analytic MACs per exit.

    A model that cannot run on the input shape gets a row saying why instead
    of disappearing. ``cache`` is the JSON row cache's path (``True``: the default path;
    the default ``False`` builds and traces every model).
    """
    import fnmatch

    from eebench.costs import analyze_costs
    from eebench.models.entry_points import FAILED
    from eebench.models.registry import MODELS

    def unusable(name: str, note: str) -> dict[str, str]:
        return {
            "model": name,
            "family": "-",
            "exits": "-",
            "params": "-",
            CUM_MACS_COLUMN: "-",
            FINAL_MACS_COLUMN: "-",
            "note": note,
        }

    path = table_cache_path() if cache is True else (cache or None)
    cached = _read_cache(path) if path is not None else {}
    fresh: dict[str, Any] = {}
    rows = []
    for name in list_models(filter):
        key = _row_key(name, input_shape, num_classes) if path is not None else None
        if key is not None and isinstance(cached.get(key), dict):
            rows.append(cached[key])
            fresh[key] = cached[key]
            continue
        try:
            model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        except InputShapeError as err:
            rows.append(unusable(name, f"not runnable: {err}"))
            continue
        except Exception as err:  # an installed package's model: say why instead of failing
            if str(getattr(MODELS.get(name), "__module__", "")).startswith("eebench."):
                raise
            rows.append(unusable(name, f"cannot be built: {str(err).splitlines()[0]}"))
            continue
        costs = analyze_costs(model)
        final_only = costs.plain_macs
        row = {
            "model": name,
            "family": model.family,
            "exits": model.num_exits,
            "params": f"{sum(p.numel() for p in model.parameters()):,}",
            CUM_MACS_COLUMN: " / ".join(_millions(v) for v in costs.cumulative_macs),
            FINAL_MACS_COLUMN: _millions(final_only),
            "note": "",
        }
        rows.append(row)
        if key is not None:
            fresh[key] = row
    if path is not None and fresh.keys() - cached.keys():
        _write_cache(path, {**cached, **fresh})
    for name, err in sorted(FAILED.items()):  # entry points that did not load
        if not filter or fnmatch.fnmatch(name, filter):
            rows.append(unusable(name, f"not loaded: {err.message}"))
    table = pd.DataFrame(rows)
    table.attrs["note"] = TABLE_NOTE
    return table

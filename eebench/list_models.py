"""``eebench list models``, answered from a cache when nothing that shapes the table changed.

This module lives outside :mod:`eebench.models` on purpose: importing anything in that
package registers the whole zoo and imports torch (seconds). The printed table is stored
in a JSON cache keyed by everything that determines it — the command's options, the
eebench version, the content of every file of :mod:`eebench.models` and
:mod:`eebench.costs`, and the installed packages' model entry points — so a repeated
call prints it without importing torch; any change rebuilds it (and
:func:`eebench.models.listing.models_table` rebuilds only the rows whose model file changed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from eebench.input_shape import parse_input_shape

CACHE_VERSION = 1
ENTRY_POINT_GROUP = "eebench.models"
SOURCE_PACKAGES = ("models", "costs")  # the code that decides the table's rows and numbers


def cache_path() -> Path:
    """``$EEBENCH_CACHE_DIR/tables/list-models.json``, else under ``~/.cache/eebench``."""
    root = os.environ.get("EEBENCH_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "eebench"
    return base / "tables" / "list-models.json"


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = list_sub.add_parser("models", help="registered models with exits, parameters and MACs")
    p.add_argument(
        "--input-shape", type=parse_input_shape, default=(3, 32, 32), help="C,H,W (default 3,32,32)"
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--filter", default=None, help="glob over names, e.g. 'sdn-*'")
    p.add_argument(
        "--no-cache", action="store_true", help="build and trace every model (ignore the cache)"
    )
    p.set_defaults(func=_list_models)


def table_key(input_shape: tuple[int, ...], num_classes: int, filter: str | None) -> str:
    """A digest of everything that determines the printed table."""
    import importlib.metadata

    from eebench import __version__

    h = hashlib.sha256()
    head = [CACHE_VERSION, __version__, list(input_shape), num_classes, filter]
    h.update(json.dumps(head).encode())
    package = Path(__file__).resolve().parent
    for sub in SOURCE_PACKAGES:
        for path in sorted((package / sub).rglob("*.py")):
            h.update(str(path.relative_to(package)).encode() + b"\0")
            h.update(path.read_bytes())
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)
    ):
        dist = getattr(ep, "dist", None)
        version = getattr(dist, "version", "") if dist is not None else ""
        h.update(f"{ep.name}={ep.value}@{version}\0".encode())
    return h.hexdigest()


def _cached_text(key: str) -> str | None:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return None
    text = data.get(key) if isinstance(data, dict) else None
    return text if isinstance(text, str) else None


def _store_text(key: str, text: str, keep: int = 16) -> None:
    """Keep the newest ``keep`` tables; a cache that cannot be written is skipped."""
    path = cache_path()
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data.pop(key, None)
    data[key] = text
    data = dict(list(data.items())[-keep:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".list-models-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass


def render_table(
    input_shape: tuple[int, ...], num_classes: int, filter: str | None, cache: bool = False
) -> str:
    """The table as printed: a header naming the MAC convention, the rows, the note.

    ``cache``: reuse the rows of models whose defining file did not change."""
    from eebench.models.listing import models_table

    table = models_table(input_shape, num_classes, filter, cache=cache)
    lines = [
        f"Models on input {','.join(map(str, input_shape))}, {num_classes} classes. "
        "MACs are analytic (fvcore; 1 MAC = 1 multiply-add, FLOPs = 2 x MACs).",
        table.to_string(index=False),
    ]
    if table.attrs.get("note"):
        lines.append(table.attrs["note"])
    return "\n".join(lines)


def _list_models(args: argparse.Namespace) -> int:
    shape = tuple(args.input_shape)
    # A process that imported the zoo already (eebench used as a library, tests) may have
    # registered models at run time, which no file digest sees: it always builds the table.
    use_cache = not args.no_cache and "eebench.models" not in sys.modules
    key = table_key(shape, args.num_classes, args.filter) if use_cache else None
    text = _cached_text(key) if key else None
    if text is None:
        text = render_table(shape, args.num_classes, args.filter, cache=use_cache)
        # a table with unloaded entry points may change without any file changing: not kept
        if key and "not loaded:" not in text:
            _store_text(key, text)
    print(text)
    return 0

"""Every registered model and backend has an asv benchmark (like numpy's ufunc coverage guard).

The benchmarks are discovered exactly as asv discovers them
(``asv_runner.discovery.list_benchmarks``: every module in ``benchmarks/`` is
imported, including the stand-alone scripts there, which must not run on
import). Nothing is trained or timed: discovery only reads the suite file and
the registries.
"""

from __future__ import annotations

import ast
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def benchmarks():
    from asv_runner.discovery import list_benchmarks

    meta_path, modules = list(sys.meta_path), set(sys.modules)
    out = io.StringIO()
    try:
        list_benchmarks(str(BENCH_DIR), out)
    finally:  # leave no trace of the asv importer or the 'benchmarks' package for other tests
        sys.meta_path[:] = meta_path
        for name in set(sys.modules) - modules:
            if name == "benchmarks" or name.startswith("benchmarks."):
                del sys.modules[name]
    found = json.loads(out.getvalue())
    assert found, "asv discovered no benchmarks in benchmarks/"
    return found


def _values(benchmarks, axis: str, kinds: tuple[str, ...] = ("time", "peakmemory", "track")):
    """Parameter values of ``axis`` per benchmark type, over every discovered benchmark."""
    seen: dict[str, set[str]] = defaultdict(set)
    for b in benchmarks:
        if axis in b["param_names"] and b["type"] in kinds:
            values = b["params"][b["param_names"].index(axis)]
            seen[b["type"]].update(ast.literal_eval(v) for v in values)
    return seen


def _suite():
    from eebench.suites import load_suite_file

    return load_suite_file(ROOT / "suites" / "quick.yaml")


def test_every_registered_model_has_a_benchmark(benchmarks):
    from eebench.models import list_models

    covered = _values(benchmarks, "model_name")
    for kind in ("time", "track"):
        missing = sorted(set(list_models()) - covered[kind])
        assert not missing, (
            f"registered models without a {kind} benchmark in benchmarks/: {missing}"
        )


def test_every_model_of_a_builtin_suite_has_a_benchmark(benchmarks):
    from eebench.suites import builtin_suites, load_suite_file

    covered = _values(benchmarks, "model_name")["track"]
    for name, path in builtin_suites().items():
        missing = sorted({m.name for m in load_suite_file(path).models} - covered)
        assert not missing, f"suite '{name}' uses models without an asv benchmark: {missing}"


def test_the_asv_suite_models_have_latency_memory_and_operating_point_benchmarks(benchmarks):
    labels = {m.label for m in _suite().models}
    covered = _values(benchmarks, "model")
    for kind in ("time", "peakmemory", "track"):
        missing = sorted(labels - covered[kind])
        assert not missing, f"quick suite models without a {kind} benchmark: {missing}"


def test_every_registered_backend_has_latency_and_memory_benchmarks(benchmarks):
    from eebench.backends import BACKENDS

    covered = _values(benchmarks, "backend")
    for kind in ("time", "peakmemory", "track"):
        missing = sorted(set(BACKENDS.names()) - covered[kind])
        assert not missing, f"registered backends without a {kind} benchmark: {missing}"


def test_the_suite_backends_are_benchmarked(benchmarks):
    covered = set().union(*_values(benchmarks, "backend").values())
    missing = sorted(set(_suite().backends) - covered)
    assert not missing, f"quick suite backends without an asv benchmark: {missing}"


def test_every_benchmark_kind_is_discovered_and_tracks_have_units(benchmarks):
    kinds = {b["type"] for b in benchmarks}
    assert {"time", "peakmemory", "track"} <= kinds
    tracks = [b for b in benchmarks if b["type"] == "track"]
    assert all(b["unit"] and b["unit"] != "unit" for b in tracks), [b["name"] for b in tracks]
    modules = {b["name"].split(".")[0] for b in benchmarks}
    assert {"bench_stages", "bench_operating_points", "bench_models"} <= modules

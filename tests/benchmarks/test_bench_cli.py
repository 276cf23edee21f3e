"""Start-up time of the ``eebench`` command, as a shell user waits for it.

Each round starts a fresh interpreter (``python -m eebench ...`` in a subprocess), so the
numbers include interpreter start and every import the command needs. Goals: ``--help``
at most 0.3 s, ``list models`` at most 2 s (its table cached, as from the second call on).
Run: ``pytest tests/benchmarks/test_bench_cli.py --benchmark-only``; quote the machine's
``/proc/loadavg`` with the numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["EEBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    return env


def _run(env: dict[str, str], *argv: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "eebench", *argv], stdout=subprocess.DEVNULL, env=env, check=False
    )
    assert out.returncode == 0


def test_help(benchmark, env):
    benchmark.pedantic(_run, args=(env, "--help"), rounds=10, warmup_rounds=1)


def test_list_models_cached(benchmark, env):
    _run(env, "list", "models")  # the first call builds and caches the table
    benchmark.pedantic(_run, args=(env, "list", "models"), rounds=5, warmup_rounds=1)


def test_list_models_uncached(benchmark, env):
    """The first call on a machine (or after the model code changed): every model traced."""
    benchmark.pedantic(_run, args=(env, "list", "models", "--no-cache"), rounds=1, iterations=1)

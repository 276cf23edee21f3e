"""Shared pieces of the pytest-benchmark micro-benchmarks.

Run them with ``pytest tests/benchmarks --benchmark-only --benchmark-autosave``;
the default test run skips them (``--benchmark-skip`` in pyproject.toml).

When this folder is on the command line, saved runs go to
``results/pytest-benchmark`` unless ``--benchmark-storage`` says otherwise
(pytest-benchmark reads the option when it configures, after this file's
``pytest_configure``; from the repository root without the folder on the
command line, pass ``--benchmark-storage=results/pytest-benchmark``).

The model is the quick suite's ``msdnet-small``, trained with the suite's
recipe or loaded from ``results/cache/checkpoints`` (the cache ``eebench run``
and asv use), so exit rates are those of a trained network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PYTEST_BENCHMARK_DEFAULT_STORAGE = "file://./.benchmarks"
MODEL_ID = "msdnet-small"
SUITE = "quick"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_storage", None) == PYTEST_BENCHMARK_DEFAULT_STORAGE:
        config.option.benchmark_storage = str(config.rootpath / "results" / "pytest-benchmark")


@dataclass
class Trained:
    """A trained suite model with its data, exit records and analytic costs."""

    label: str
    model: Any
    splits: Any
    val: Any
    test: Any
    costs: Any

    @property
    def cumulative_macs(self) -> np.ndarray:
        return np.asarray(self.costs.cumulative_macs, dtype=float)


@pytest.fixture(scope="session")
def trained(pytestconfig: pytest.Config) -> Trained:
    from eebench.costs import analyze_costs
    from eebench.data import get_splits
    from eebench.evaluation import record_exits
    from eebench.suites import load_suite_file, resolve_suite
    from eebench.training import CheckpointCache, TrainConfig

    suite = load_suite_file(resolve_suite(SUITE))
    spec = next(m for m in suite.models if m.label == MODEL_ID)
    ds = suite.dataset
    splits = get_splits(ds.name, seed=ds.seed, **ds.options)
    cache = CheckpointCache(Path(pytestconfig.rootpath) / "results" / "cache" / "checkpoints")
    model, _ = cache.get_or_train(
        spec.name,
        dict(spec.config),
        splits,
        TrainConfig.from_dict(dict(spec.training)),
        progress=False,
    )
    model.eval()
    return Trained(
        MODEL_ID,
        model,
        splits,
        record_exits(model, splits.val),
        record_exits(model, splits.test),
        analyze_costs(model),
    )


@pytest.fixture(scope="session")
def calibrated(trained: Trained) -> tuple[Any, Any]:
    """(policy, calibration): max-softmax thresholds within 1 % of the final exit's val accuracy
    at the lowest expected MACs (the quick suite's first policy and calibration target)."""
    from eebench.evaluation import CostVector, calibrate_accuracy_drop
    from eebench.policies import ThresholdPolicy

    policy = ThresholdPolicy("max_softmax")
    macs = CostVector.macs(trained.cumulative_macs)
    return policy, calibrate_accuracy_drop(trained.val, trained.test, policy, 0.01, [macs])

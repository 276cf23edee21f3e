"""What the asv benchmarks share: the suite they derive from and the cached preparation.

One source of truth: the benchmarks take their models (with config and
training recipe), dataset, backends, batch sizes, thread counts, policies and
calibration targets from a suite file, ``suites/quick.yaml`` unless the
environment variable ``EEBENCH_ASV_SUITE`` names another built-in suite or a
suite file. asv needs the parameter lists when it imports the benchmark
modules, so the suite file is read (YAML only, nothing runs) at import.

The expensive part, training the suite's models and exporting them to ONNX,
happens once per environment in :meth:`SuiteBenchmark.setup_cache`, shared by
every benchmark class that inherits it (asv keys ``setup_cache`` by where it
is defined). It goes through the same caches as ``eebench run`` under
``results/cache`` (checkpoints, ONNX exports, exit records), so a model the
suite runner has trained is not trained again here and vice versa.

asv runs every benchmark and parameter combination in a fresh process
(``launch_method: spawn`` in asv.conf.json; under asv's forkserver the
executor benchmarks hung), so what this module imports is paid per process:
keep it to torch and eebench (no dataset, no scikit-learn).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eebench.backends import BACKENDS, PreparedModel, export_model, get_backend
from eebench.costs.plain import PlainNetwork, plain_network
from eebench.errors import ConfigError
from eebench.evaluation import (
    Calibration,
    CalibrationError,
    CostVector,
    ExitRecord,
    calibrate_accuracy_drop,
    calibrate_budget,
    calibrate_budgeted_batch,
    load_or_record,
    model_key_of,
)
from eebench.models import MultiExitModel
from eebench.policies import POLICIES, Policy, create_policy
from eebench.suites.schema import SuiteSpec, load_suite_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO_ROOT / "suites"
CACHE_ROOT = REPO_ROOT / "results" / "cache"
SUITE_ENV = "EEBENCH_ASV_SUITE"
DEFAULT_SUITE = "quick"
SIMULATED_PREFIX = "simulated:"
NOT_IN_SUITE = "(none in suite)"
"""Placeholder parameter value for an axis the suite leaves empty (asv needs one value)."""


# ---------------------------------------------------------------------- the suite
def suite_path(ref: str | None = None) -> Path:
    """The suite file: ``ref``, else ``$EEBENCH_ASV_SUITE``, else ``quick``.

    A name is looked up in the repository's ``suites/`` (not in the installed
    package: asv installs eebench as a wheel into its virtualenvs). A relative
    path is taken from the repository root: asv imports the benchmarks from a
    temporary working directory.
    """
    ref = ref or os.environ.get(SUITE_ENV) or DEFAULT_SUITE
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or "/" in ref:
        full = path if path.is_absolute() else REPO_ROOT / path
        if not full.is_file():
            raise ConfigError(
                f"suite file not found: {full} (set {SUITE_ENV} to a suite file, absolute or "
                "relative to the repository root, or to the name of a suite in suites/)",
                source=SUITE_ENV,
            )
        return full
    builtin = SUITES_DIR / f"{ref}.yaml"
    if not builtin.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))) or "(none)"
        raise ConfigError(
            f"'{ref}' is neither a suite file nor a suite in {SUITES_DIR} (known: {known}); "
            f"set {SUITE_ENV} to one of them or to a path",
            source=SUITE_ENV,
        )
    return builtin


def load_suite(ref: str | None = None) -> SuiteSpec:
    return load_suite_file(suite_path(ref))


def measured_backends(suite: SuiteSpec) -> list[str]:
    """The suite's measured backends, then every other registered backend (not families).

    Every registered backend is benchmarked, in or out of the suite; one that
    cannot run here (``torch-cuda`` without a GPU) skips in ``setup``.
    """
    in_suite = [b for b in suite.backends if not b.startswith(SIMULATED_PREFIX)]
    return in_suite + [b for b in BACKENDS.names() if b not in in_suite]


def simulated_profiles(suite: SuiteSpec) -> list[str]:
    """The suite's ``simulated:<profile>`` backends (or a placeholder that skips)."""
    sims = [b for b in suite.backends if b.startswith(SIMULATED_PREFIX)]
    return sims or [NOT_IN_SUITE]


def threshold_policies(suite: SuiteSpec) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every calibratable (thresholded) policy of the suite by its label
    (``threshold[entropy]``, ``patience[prediction-agreement]``, ...): (name, confidence, options).

    A policy without a confidence measure appears once whatever the suite lists for it.
    """
    out: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for p in suite.policies:
        if POLICIES.get(p.name).uses_thresholds:
            for c in p.confidence:
                label = make_policy(p.name, c, p.options).label
                out.setdefault(label, (p.name, c, dict(p.options)))
    return out


def policy_labels(suite: SuiteSpec) -> list[str]:
    return list(threshold_policies(suite)) or [NOT_IN_SUITE]


def calibration_targets(suite: SuiteSpec) -> list[str]:
    """The suite's calibration targets as parameter values (see :func:`calibrate`)."""
    cal = suite.calibration
    out = [f"accuracy-drop:{d:g}" for d in cal.accuracy_within]
    for f in cal.budget_fractions:
        out += [f"budget:{f:g}", f"budgeted-batch:{f:g}"]
    return out or [NOT_IN_SUITE]


def max_stages(suite: SuiteSpec) -> int:
    """An upper bound of the suite's models' stage counts (the stage-index parameter range).

    Builds each model untrained at the registry's default input shape: cheap, and it
    keeps the dataset (and scikit-learn) out of the import that every benchmark process
    pays. A stage index beyond a model's own count is skipped in ``setup``, where the
    trained model is known. Only a model that cannot be built at the default shape is
    built at the dataset's shape, which loads the dataset.
    """
    from eebench.models import InputShapeError, create_model

    counts = []
    for m in suite.models:
        try:
            counts.append(create_model(m.name, **m.config).num_stages)
        except InputShapeError:
            from eebench.data import get_splits

            ds = suite.dataset
            splits = get_splits(ds.name, seed=ds.seed, **ds.options)
            shape = splits.input_shape
            counts.append(create_model(m.name, input_shape=shape, **m.config).num_stages)
    return max(counts)


# ---------------------------------------------------------------------- policies
def make_policy(name: str, confidence: str, options: dict[str, Any] | None = None) -> Policy:
    """A suite policy; policies without a confidence measure ignore ``confidence``."""
    kwargs = dict(options or {})
    if "confidence" in inspect.signature(POLICIES.get(name).__init__).parameters:
        kwargs.setdefault("confidence", confidence)
    return create_policy(name, **kwargs)


def suite_policy(suite: SuiteSpec, label: str, val: ExitRecord) -> Policy:
    """The policy behind a label of :func:`policy_labels`, fitted on ``val``."""
    if label == NOT_IN_SUITE:
        raise NotImplementedError("the suite has no thresholded policy")
    name, confidence, options = threshold_policies(suite)[label]
    return make_policy(name, confidence, options).fit(val)


def calibrate(
    target: str, val: ExitRecord, test: ExitRecord, policy: Policy, macs: CostVector
) -> Calibration:
    """Thresholds chosen on val for a target (``accuracy-drop:<delta>``, ``budget:<fraction>``,
    ``budgeted-batch:<fraction>``; fractions of the plain network's MACs, what final-only
    costs), reported on test.

    Raises NotImplementedError (asv: skipped) when no threshold meets the target.
    """
    if target == NOT_IN_SUITE:
        raise NotImplementedError("the suite has no calibration target")
    method, value = target.split(":", 1)
    v = float(value)
    plain = float(macs.plain)
    fns = {
        "accuracy-drop": lambda: calibrate_accuracy_drop(val, test, policy, v, [macs]),
        "budget": lambda: calibrate_budget(val, test, policy, v * plain, [macs]),
        "budgeted-batch": lambda: calibrate_budgeted_batch(val, test, policy, v * plain, [macs]),
    }
    try:
        return fns[method]()
    except CalibrationError as err:
        raise NotImplementedError(f"{target}: {err}") from None


# ---------------------------------------------------------------------- preparation
@dataclass(frozen=True)
class PreparedModelEntry:
    """One trained suite model: where its checkpoint and records are, and its analytic MACs."""

    label: str
    name: str
    config: dict[str, Any]
    family: str
    checkpoint: str
    model_key: str
    num_exits: int
    records: dict[str, str]  # split -> .npz path
    stage_macs: tuple[float, ...]
    head_macs: tuple[float, ...]

    @property
    def cumulative_macs(self) -> np.ndarray:
        return np.cumsum(np.asarray(self.stage_macs) + np.asarray(self.head_macs))

    @property
    def plain(self) -> PlainNetwork:
        """The parts the network without early exits runs (a cascade: its last member)."""
        return plain_network(self.family, self.num_exits)

    def macs_vector(self) -> CostVector:
        """Analytic cumulative MACs per exit (FLOPs = 2 x MACs), with the plain network's MACs."""
        return CostVector.from_parts(
            self.stage_macs, self.head_macs, unit="MACs", source="analytic", plain=self.plain
        )


@dataclass(frozen=True)
class PreparedSuite:
    """What ``setup_cache`` hands every benchmark: the trained models and a test batch."""

    suite: str
    dataset_fingerprint: str
    num_classes: int
    input_shape: tuple[int, ...]
    x_test: np.ndarray  # the first test samples, enough for every batch size and validation run
    y_test: np.ndarray
    models: dict[str, PreparedModelEntry]

    def entry(self, label: str) -> PreparedModelEntry:
        if label not in self.models:
            raise KeyError(
                f"model '{label}' was not prepared by setup_cache (prepared: {sorted(self.models)}); "
                "did the suite file change during the asv run?"
            )
        return self.models[label]

    def load_model(self, label: str) -> MultiExitModel:
        """The trained model of ``label`` from its checkpoint (every identity field checked)."""
        from eebench.training import load_checkpoint

        e = self.entry(label)
        model, _ = load_checkpoint(
            e.checkpoint,
            model_name=e.name,
            model_config=dict(e.config),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            dataset_fingerprint=self.dataset_fingerprint,
        )
        return model.eval()

    def load_records(self, label: str) -> tuple[ExitRecord, ExitRecord]:
        """(val, test) exit records of ``label``."""
        e = self.entry(label)
        return tuple(  # type: ignore[return-value]
            ExitRecord.load(e.records[s], expected_model_key=e.model_key) for s in ("val", "test")
        )

    def batch(self, batch_size: int) -> torch.Tensor:
        if batch_size > len(self.x_test):
            raise NotImplementedError(
                f"batch size {batch_size} is larger than the {len(self.x_test)} test samples"
            )
        return torch.from_numpy(self.x_test[:batch_size])


def prepare_suite(suite: SuiteSpec, cache_root: Path = CACHE_ROOT) -> PreparedSuite:
    """Train (or load from the checkpoint cache) every model of the suite, record its exits on
    val and test, count its MACs and export it to ONNX when a benchmark will need it."""
    from eebench.costs import analyze_costs
    from eebench.data import get_splits
    from eebench.training import CheckpointCache, TrainConfig, load_checkpoint

    ds = suite.dataset
    splits = get_splits(ds.name, seed=ds.seed, **ds.options)
    cache = CheckpointCache(cache_root / "checkpoints")
    onnx = "onnxruntime" in measured_backends(suite) and get_backend("onnxruntime").available()[0]
    entries = {}
    for m in suite.models:
        tconf = TrainConfig.from_dict(
            dict(m.training), source=f"suite {suite.name}: models[{m.label}].training"
        )
        if m.checkpoint:  # relative to the repository root: asv runs from a temporary folder
            path = (
                Path(m.checkpoint) if Path(m.checkpoint).is_absolute() else REPO_ROOT / m.checkpoint
            )
            model, _ = load_checkpoint(
                path,
                model_name=m.name,
                model_config=dict(m.config),
                num_classes=splits.num_classes,
                input_shape=splits.input_shape,
                dataset_fingerprint=splits.fingerprint,
            )
        else:
            model, _ = cache.get_or_train(m.name, dict(m.config), splits, tconf, progress=False)
            path = cache.path_for(m.name, dict(m.config), splits, tconf)
        model.eval()
        key = model_key_of(model)
        records = {}
        for s in ("val", "test"):
            rec = load_or_record(
                cache_root / "records",
                model,
                getattr(splits, s),
                model_key=key,
                batch_size=suite.record_batch_size,
            )
            records[s] = str(cache_root / "records" / _record_name(rec))
        costs = analyze_costs(model)
        if onnx:
            export_model(model, cache_dir=cache_root / "onnx")
        entries[m.label] = PreparedModelEntry(
            label=m.label,
            name=m.name,
            config=dict(m.config),
            family=model.family,
            checkpoint=str(path),
            model_key=key,
            num_exits=model.num_exits,
            records=records,
            stage_macs=tuple(float(v) for v in costs.stage_macs),
            head_macs=tuple(float(v) for v in costs.head_macs),
        )
    n = max(suite.validation.samples, *suite.measurement.batch_sizes, *suite.validation.batch_sizes)
    return PreparedSuite(
        suite=suite.name,
        dataset_fingerprint=splits.fingerprint,
        num_classes=splits.num_classes,
        input_shape=tuple(splits.input_shape),
        x_test=splits.test.x[:n].numpy().copy(),
        y_test=np.asarray(splits.test.y[:n]),
        models=entries,
    )


def _record_name(record: ExitRecord) -> str:
    from eebench.evaluation import record_filename

    return record_filename(record.model_key, record.split_fingerprint, record.split)


def open_backend(
    prepared: PreparedSuite, label: str, backend: str, batch_size: int, threads: int
) -> PreparedModel:
    """The trained model of ``label`` prepared on ``backend``; NotImplementedError (asv: skip)
    when the backend cannot run here."""
    b = get_backend(backend)
    ok, reason = b.available()
    if not ok:
        raise NotImplementedError(f"{backend} is not available here: {reason}")
    model = prepared.load_model(label)
    options: dict[str, Any] = {"cache_dir": CACHE_ROOT / "onnx"} if backend == "onnxruntime" else {}
    return b.prepare(model, batch_size=batch_size, threads=threads, **options)


class SuiteBenchmark:
    """Base of the suite-derived benchmarks: one shared ``setup_cache`` per environment.

    The timeout covers the first run, which trains the suite's models (later
    runs load them from ``results/cache/checkpoints``).
    """

    timeout = 1800.0

    def setup_cache(self) -> PreparedSuite:
        return prepare_suite(SUITE)


SUITE = load_suite()
"""The suite the benchmarks derive from (read once at import; asv needs the parameters then)."""

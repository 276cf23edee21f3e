"""The suite runner: orchestration only.

For each model of a suite: train (or load from the checkpoint cache), record
every exit on val and test, count analytic costs, measure every stage and
exit head on each backend, estimate them for each hardware profile, evaluate
and calibrate the policies on the records, validate the calibrated operating
points with a true early-exit run, and write everything to a results bundle.

Every step is a unit of ``--resume``: its output is in the bundle before the
next step starts, so a run killed at any moment loses at most the step that
was running, and a resumed run redoes only what is missing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eebench.errors import EEBenchError, RunInterrupted
from eebench.results.bundle import RunWriter, check_run_id, is_incomplete_run, safe_name
from eebench.results.identity import process_commit, run_identity
from eebench.suites.locate import resolve_suite
from eebench.suites.names import check_names
from eebench.suites.schema import ModelSpec, SuiteSpec, load_suite_file
from eebench.suites.tables import (
    analytic_rows,
    estimated_rows,
    exits_rows,
    long_operating_points,
    measured_rows,
)

SIMULATED_PREFIX = "simulated:"


def base_backend(name: str) -> str:
    """A suite backend without its cluster device (``onnxruntime@rpi5`` -> ``onnxruntime``)."""
    from eebench.backends.placement import base_backend as _base

    return _base(name)


@dataclass
class RunOptions:
    """How to run a suite (not what: that is the suite)."""

    out_root: Path = Path("results")
    # None: <out_root>/cache for a new run; for --resume, the cache recorded in the run
    cache_root: Path | None = None
    resume: Path | None = None
    run_id: str | None = None
    backends: list[str] | None = None  # overrides the suite's backends
    progress: bool = True
    report: bool = True
    # resume a run made by another eebench version or commit (recorded in the manifest)
    force_resume: bool = False
    # run the steps as Ray tasks: "local", "auto" or "ray://HOST:PORT" (eebench.cluster)
    cluster: str | None = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


@dataclass
class ModelContext:
    """What the steps of one model share within a run (rebuilt cheaply on resume)."""

    spec: ModelSpec
    model: Any
    family: str
    records: dict[str, Any] = field(default_factory=dict)
    cost_table: Any = None
    parts: dict[str, Any] = field(
        default_factory=dict
    )  # backend label -> PartMeasurements (batch 1)


def run_suite(suite_ref: str, options: RunOptions | None = None) -> Path:
    """Run a suite (a path or a built-in name); returns the run folder."""
    options = options or RunOptions()
    if options.run_id is not None:
        check_run_id(options.run_id)
    path = resolve_suite(suite_ref)
    spec = load_suite_file(path)
    if options.backends:
        spec = spec.model_copy(update={"backends": list(options.backends)})
    check_names(spec, str(path))
    return SuiteRunner(spec, path, options).run()


class SuiteRunner:
    def __init__(self, spec: SuiteSpec, source: Path, options: RunOptions) -> None:
        self.spec = spec
        self.source = source
        self.options = options
        self.log = options.log
        self.writer: RunWriter | None = None
        self._current = "starting"  # what the run is doing, for an interrupted run's message
        self._checkpoints: dict[str, tuple[Any, Any]] = {}  # label -> (model, info), preloaded
        self._work_started: float | None = None  # when a step's work began before _step ran
        # while True, a step that has not finished is an error instead of work: a cluster unit
        # rebuilds what its own step needs from finished steps only (see run_unit)
        self._frozen = False
        self._cluster: Any = None  # eebench.cluster.driver.ClusterSession with --cluster

    # ------------------------------------------------------------------ the run
    def run(self) -> Path:
        """Check everything, then create (or reopen) the run folder and work through the steps.

        The order is what makes a run's status true: nothing is written before every check
        passed; ``complete`` is written last, after the tables and the report.
        """
        from eebench import __version__
        from eebench.measure.environment import capture_environment

        env = capture_environment().to_dict()
        resolved = self.spec.model_dump(mode="json")
        resolved["source"] = str(self.source)
        identity = run_identity(resolved, __version__, process_commit())
        opts = self.options
        report_only, adopt = False, None
        if opts.resume is not None:
            if is_incomplete_run(Path(opts.resume)):
                adopt = Path(opts.resume)
                cache = opts.cache_root or adopt.parent.parent / "cache"
            else:
                manifest = RunWriter.check_resume(
                    opts.resume,
                    resolved,
                    identity,
                    force=opts.force_resume,
                    new_run_hint=self._new_run_command(Path(opts.resume).parent.parent),
                )
                report_only = bool(manifest.get("steps_finished"))
                cache = self._recorded_cache(Path(opts.resume), manifest)
        else:
            cache = opts.cache_root or opts.out_root / "cache"
        self.options = replace(opts, cache_root=cache)
        if opts.resume is None:
            _check_folder_option("--out", opts.out_root)
        _check_folder_option("--cache", cache)
        if not report_only:
            self._preflight()
        # folders that must be writable, made before the run folder (a read-only or full file
        # system is reported here, with nothing of the run written)
        Path(cache).mkdir(parents=True, exist_ok=True)
        if opts.resume is None:
            Path(opts.out_root).mkdir(parents=True, exist_ok=True)
        extra = {
            "run_options": {
                "cache": str(Path(cache).resolve()),
                "backends": opts.backends,
                "cluster": opts.cluster,
            }
        }
        if opts.resume is not None and adopt is None:
            try:
                self.writer = RunWriter.resume(
                    opts.resume, env, identity, force=opts.force_resume, log=self.log
                )
            except KeyboardInterrupt:
                raise RunInterrupted(
                    f"interrupted while reopening {opts.resume}; its steps are as they were; "
                    f"continue with: eebench run {self.source} --resume {opts.resume}"
                ) from None
            done = len(self.writer.manifest["steps"])
            self.log(
                f"resuming {self.writer.path} ({done} steps done"
                + ("; only the report is missing)" if report_only else ")")
            )
        else:
            try:
                self.writer = RunWriter.create(
                    opts.out_root,
                    self.spec.name,
                    resolved,
                    env,
                    run_id=opts.run_id,
                    identity=identity,
                    extra=extra,
                    adopt=adopt,
                )
            except KeyboardInterrupt:
                raise RunInterrupted(
                    "interrupted while the run folder was being created; nothing was run. "
                    "An incomplete folder may be left: 'eebench results clean --root "
                    f"{opts.out_root}' lists it"
                ) from None
            self.log(f"run {self.writer.path}")
        try:
            self._work(report_only)
        finally:
            self.writer.release()
            if self._cluster is not None:
                self._cluster.close()
        return self.writer.path

    def _work(self, report_only: bool) -> None:
        """The steps, the tables, the report, then ``complete``; any interruption is recorded."""
        assert self.writer is not None
        started = time.perf_counter()
        try:
            if not report_only:
                self._run_steps()
                self.writer.record_timing("total_s", time.perf_counter() - started)
            self._current = "assembling the tables"
            tables = self.writer.assemble()
            self.writer.note(steps_finished=True)
            self._summary(tables)
            if self.options.report:
                self._current = "report"
                self._report()
            self._current = "closing"
            self.writer.close("complete")
        except KeyboardInterrupt:
            reason = self._state(f"interrupted during {self._where()}")
            self._close("partial", reason)
            raise RunInterrupted(f"run {self.writer.path} is partial: {reason}") from None
        except OSError as err:
            what = err.strerror or str(err)
            where = f" ({err.filename})" if err.filename else ""
            self._close("partial", self._state(f"{what}{where} during {self._where()}"))
            raise
        except BaseException as err:
            # a failed report leaves complete tables: partial, and --resume writes the report
            status = "partial" if self._current == "report" else "failed"
            self._close(status, self._state(f"{self._where()} failed: {type(err).__name__}: {err}"))
            raise

    def _where(self) -> str:
        if self._current == "report":
            return "the report"
        if self._current.startswith("after:"):
            return f"the work after step '{self._current[len('after:') :]}'"
        return f"'{self._current}'"

    def _state(self, what: str) -> str:
        """What happened, what is kept and the command that continues the run."""
        assert self.writer is not None
        steps = len(self.writer.manifest.get("steps", {}))
        kept = (
            "the tables are complete"
            if self._current in ("report", "closing")
            else f"{steps} finished steps are kept"
        )
        return f"{what}; {kept}; continue with: {self._resume_command()}"

    def _resume_command(self) -> str:
        assert self.writer is not None
        backends = "".join(f" --backend {b}" for b in self.options.backends or [])
        return f"eebench run {self.source} --resume {self.writer.path}{backends}"

    def _new_run_command(self, out_root: Path) -> str:
        backends = "".join(f" --backend {b}" for b in self.options.backends or [])
        return f"New run: eebench run {self.source} --out {out_root}{backends}"

    def _recorded_cache(self, run: Path, manifest: dict[str, Any]) -> Path:
        """The cache of the run being resumed, unless --cache names another one."""
        recorded = (manifest.get("run_options") or {}).get("cache")
        if self.options.cache_root is not None:
            if recorded and Path(recorded) != Path(self.options.cache_root).resolve():
                self.log(f"using --cache {self.options.cache_root}, not the run's cache {recorded}")
            return Path(self.options.cache_root)
        return Path(recorded) if recorded else run.parent.parent / "cache"

    def _close(self, status: str, reason: str) -> None:
        """Record an unfinished run's status; a full disk may prevent it (the manifest on disk
        then still says partial, in progress, which --resume continues just the same)."""
        assert self.writer is not None
        if self._current not in ("report", "closing"):
            try:
                self.writer.assemble()
            except Exception as err:  # noqa: BLE001 (the original error is what matters)
                self.log(f"the tables could not be assembled ({err}); the finished steps are kept")
        try:
            self.writer.close(status, reason)
        except OSError as err:
            self.log(
                f"the status could not be written to the manifest ({err.strerror}); it still says "
                "partial (in progress)"
            )
        self.log(f"run {status}: {reason}")

    # ------------------------------------------------------------------ checks
    def _preflight(self) -> None:
        """Everything that can be checked before a run folder exists: a typo leaves nothing."""
        self._current = "checking the suite"
        self._load_dataset()
        self._check_models()
        self._check_backends()
        self._check_energy()
        if self.options.cluster:
            from eebench.cluster.driver import open_cluster

            self._current = "connecting to the cluster"
            self._cluster = open_cluster(self.options.cluster, self.log)

    def _load_dataset(self) -> None:
        from eebench.data import get_splits
        from eebench.errors import ConfigError, DataError

        ds = self.spec.dataset
        self._fallback: dict[str, str] | None = None
        t0 = time.perf_counter()
        try:
            self.splits = get_splits(ds.name, seed=ds.seed, **ds.options)
        except ConfigError as err:
            raise ConfigError(str(err), source=str(self.source), field="dataset") from None
        except DataError as err:
            if ds.fallback is None:
                raise DataError(
                    f"{self.source}: dataset: {err} (or give the suite a dataset.fallback)"
                ) from None
            self.log(
                f"dataset {ds.name} is not available ({err}); using the suite's fallback "
                f"'{ds.fallback.name}'"
            )
            try:
                self.splits = get_splits(ds.fallback.name, seed=ds.seed, **ds.fallback.options)
            except ConfigError as ferr:
                raise ConfigError(
                    str(ferr), source=str(self.source), field="dataset.fallback"
                ) from None
            self._fallback = {"wanted": ds.name, "used": ds.fallback.name, "reason": str(err)}
        self._dataset_seconds = time.perf_counter() - t0

    def _check_models(self) -> None:
        """Build each distinct model once for the dataset; load every checkpoint (kept for the
        run), so a bad config or a checkpoint of another architecture is refused up front."""
        from eebench.suites.model_setup import build_suite_model, load_suite_weights
        from eebench.training import TrainConfig

        built: set[str] = set()
        for i, m in enumerate(self.spec.models):
            if m.checkpoint is not None:
                seed = TrainConfig.from_dict(dict(m.training)).seed
                self._checkpoints[m.label] = load_suite_weights(
                    m, i, self.source, self.splits, seed=seed
                )
                continue
            key = json.dumps([m.name, m.config], sort_keys=True, default=str)
            if key in built:
                continue
            build_suite_model(m, i, self.source, self.splits)
            built.add(key)

    def _check_backends(self) -> None:
        from eebench.backends import get_backend

        for b in self.spec.backends:
            if b.startswith(SIMULATED_PREFIX) or (self.options.cluster and "@" in b):
                continue  # a cluster device is checked by the driver, against the cluster's nodes
            ok, reason = get_backend(b).available()
            if not ok:
                self.log(f"backend {b} is not available here ({reason}); it will be skipped")

    def _run_steps(self) -> None:
        ds = self.spec.dataset
        assert self.writer is not None
        self.writer.record_timing("dataset", self._dataset_seconds)
        if self._fallback is not None:
            self.writer.note(dataset_fallback=self._fallback)
        self.log(
            f"dataset {ds.name}: train {len(self.splits.train.y)}, val {len(self.splits.val.y)}, "
            f"test {len(self.splits.test.y)} samples, input {self.splits.input_shape}, "
            f"fingerprint {self.splits.fingerprint[:12]}"
        )
        if self.options.cluster:
            from eebench.cluster.driver import run_on_cluster

            assert self._cluster is not None
            run_on_cluster(self, self._cluster)
            return
        for mspec in self.spec.models:
            ctx = self._train(mspec)
            self._record(ctx)
            self._costs(ctx)
            for backend in self.spec.backends:
                if backend.startswith(SIMULATED_PREFIX):
                    self._estimate(ctx, backend[len(SIMULATED_PREFIX) :])
                else:
                    self._measure(ctx, backend)
            self._policies(ctx)
            if self.spec.validation.enabled:
                for backend in self.spec.backends:
                    if not backend.startswith(SIMULATED_PREFIX):
                        self._validate(ctx, backend)
            if self.spec.serving is not None and self.spec.serving.enabled:
                for backend in self.spec.serving.backends or self.spec.backends:
                    if not backend.startswith(SIMULATED_PREFIX):
                        self._serve(ctx, backend)

    # ------------------------------------------------------------------ one cluster unit
    def run_unit(self, unit: Any) -> None:
        """The steps of one unit (:mod:`eebench.cluster.plan`), on a bundle that holds every
        step the unit depends on: those are read back quietly (``_frozen``: never redone), then
        the unit's own steps run, exactly as the same methods run them on one machine."""
        from eebench.cluster.plan import SIMULATED

        mspec = next((m for m in self.spec.models if m.label == unit.model), None)
        if mspec is None:
            raise EEBenchError(f"cluster unit '{unit.id}': the suite has no model '{unit.model}'")
        if unit.kind == "host":
            ctx = self._train(mspec)
            self._record(ctx)
            self._costs(ctx)
            return
        log, self.log, self._frozen = self.log, (lambda msg: None), True
        try:
            ctx = self._train(mspec)
            self._record(ctx)
            self._costs(ctx)
            if unit.kind in ("policies", "validate", "serve"):
                for backend in self.spec.backends:
                    if not backend.startswith(SIMULATED):
                        self._measure(ctx, backend)
            if unit.kind in ("validate", "serve"):
                self._policies(ctx)
        finally:
            self.log, self._frozen = log, False
        if unit.kind == "estimate":
            self._estimate(ctx, unit.backend[len(SIMULATED) :])
        elif unit.kind == "measure":
            self._measure(ctx, unit.backend)
        elif unit.kind == "policies":
            self._policies(ctx)
        elif unit.kind == "validate":
            self._validate(ctx, unit.backend)
        elif unit.kind == "serve":
            self._serve(ctx, unit.backend)
        else:
            raise EEBenchError(f"unknown cluster unit kind '{unit.kind}'")

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        assert self.writer is not None
        self.writer.record_timing(name, time.perf_counter() - t0)

    def _step(
        self, key: str, fn: Callable[[], tuple[dict[str, pd.DataFrame], dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run ``fn`` unless the step is already in the bundle; returns the step's info.

        When the step's work ran before ``fn`` (training does), ``_work_started`` holds the
        ``perf_counter`` time it began, so the recorded and printed time includes it."""
        assert self.writer is not None
        started, self._work_started = self._work_started, None
        if self.writer.has_step(key):
            return self.writer.step_info(key)
        if self._frozen:
            raise EEBenchError(
                f"step '{key}' is needed here but has not finished in the run (a cluster unit "
                "ran before the steps it depends on)"
            )
        self._current = key
        t0 = time.perf_counter() if started is None else started
        tables, info = fn()
        self.writer.finish_step(key, tables, info, seconds=time.perf_counter() - t0)
        self._current = f"after:{key}"
        self.log(f"  done {key} ({time.perf_counter() - t0:.1f} s)")
        return info

    def _skip(self, key: str, model: str, step: str, target: str, reason: str) -> None:
        row = pd.DataFrame([{"model": model, "step": step, "target": target, "reason": reason}])
        self._step(key, lambda: ({"skipped": row}, {"skipped": reason}))
        self.log(f"  skipped {step} on {target}: {reason}")

    # ------------------------------------------------------------------ train
    def _train(self, mspec: ModelSpec) -> ModelContext:
        from eebench.models.registry import canonical_model_name
        from eebench.suites.model_setup import load_suite_weights
        from eebench.training import CheckpointCache, TrainConfig, train_model
        from eebench.training.user_weights import WeightsInfo

        label = mspec.label
        self.log(f"model {label} ({mspec.name})")
        tconf = TrainConfig.from_dict(
            dict(mspec.training), source=f"{self.source}: models[{label}].training"
        )
        t0 = time.perf_counter()
        self._current = f"train:{label}"
        index = self.spec.models.index(mspec)
        if mspec.label in self._checkpoints:  # loaded (and checked) before the run began
            model, info = self._checkpoints.pop(mspec.label)
        elif mspec.checkpoint is not None:
            model, info = load_suite_weights(mspec, index, self.source, self.splits, tconf.seed)
        else:
            cache = CheckpointCache(self.options.cache_root / "checkpoints")
            name = canonical_model_name(mspec.name, self.source.parent)
            if (
                self._frozen
                and not cache.path_for(name, dict(mspec.config), self.splits, tconf).exists()
            ):
                raise EEBenchError(
                    f"model {label}: its trained checkpoint is not in the cache "
                    f"{self.options.cache_root}; a cluster unit reads it, it never retrains"
                )
            model, info = cache.get_or_train(
                name,
                dict(mspec.config),
                self.splits,
                tconf,
                progress=self.options.progress,
                threads=self.spec.train_threads,
            )
        if isinstance(info, WeightsInfo):  # a user's own weights: trained further unless 'none'
            info = {"weights": info.to_dict()}
            if tconf.scheme != "none":
                result = train_model(
                    model,
                    self.splits,
                    tconf,
                    progress=self.options.progress,
                    threads=self.spec.train_threads,
                )
                info["result"] = result.to_dict()
        model.eval()
        seconds = time.perf_counter() - t0
        if not isinstance(info, dict):
            info = info.to_dict() if hasattr(info, "to_dict") else dict(vars(info))
        info_d = info

        def step() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            return {}, {"checkpoint": info_d, "seconds": seconds, "train_config": tconf.to_dict()}

        self._work_started = t0  # the step's time is the training's, not the bookkeeping's
        self._step(f"train:{label}", step)
        return ModelContext(spec=mspec, model=model, family=model.family)

    # ------------------------------------------------------------------ record
    def _record(self, ctx: ModelContext) -> None:
        from eebench.evaluation import ExitRecord, model_key_of, record_exits

        assert self.writer is not None
        label = ctx.spec.label
        key = model_key_of(ctx.model)
        paths = {
            s: self.writer.path / "records" / f"{safe_name(label)}.{s}.npz" for s in ("val", "test")
        }

        def step() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            frames = []
            for s in ("val", "test"):
                split = getattr(self.splits, s)
                rec = record_exits(
                    ctx.model, split, batch_size=self.spec.record_batch_size, model_key=key
                )
                rec.save(paths[s])
                frames.append(exits_rows(label, rec))
            return {"exits": pd.concat(frames, ignore_index=True)}, {"model_key": key}

        self._step(f"record:{label}", step)
        for s in ("val", "test"):
            ctx.records[s] = ExitRecord.load(
                paths[s],
                expected_model_key=key,
                expected_fingerprint=getattr(self.splits, s).fingerprint,
            )
        acc = ctx.records["test"].exit_accuracy
        self.log(f"  test accuracy per exit: {' / '.join(f'{a:.3f}' for a in acc)}")

    # ------------------------------------------------------------------ costs
    def _costs(self, ctx: ModelContext) -> None:
        from eebench.costs import analyze_costs

        ctx.cost_table = analyze_costs(ctx.model)
        label = ctx.spec.label
        self._step(
            f"costs:{label}", lambda: ({"stage_costs": analytic_rows(label, ctx.cost_table)}, {})
        )

    # ------------------------------------------------------------------ measure
    def _measure(self, ctx: ModelContext, backend_name: str) -> None:
        from eebench.backends import get_backend
        from eebench.measure.parts import PartMeasurements, measure_parts
        from eebench.measure.timing import TimingConfig

        label = ctx.spec.label
        m = self.spec.measurement
        keys = [
            f"measure:{label}:{backend_name}:b{bs}:t{threads}"
            for threads in m.threads
            for bs in m.batch_sizes
        ]
        if (
            self._frozen
            and self.writer is not None
            and self.writer.has_step(f"skip:{label}:{backend_name}")
        ):
            return  # skipped where it was to run (e.g. its device lacked the backend)
        backend = get_backend(backend_name)
        # measured earlier (perhaps on another node) is read back below: only new work asks
        # whether the backend can run here
        if self.writer is None or not all(self.writer.has_step(k) for k in keys):
            ok, reason = backend.available()
            if not ok:
                self._skip(f"skip:{label}:{backend_name}", label, "measure", backend_name, reason)
                return
        timing = TimingConfig(
            warmup=m.warmup,
            min_runs=m.min_repeats,
            min_time_s=m.min_time_s,
            max_time_s=m.max_time_s,
            noisy_cv=m.noisy_cv,
            adaptive=m.adaptive,
            rel_ci_target=m.rel_ci_target,
            confidence=m.confidence,
        )
        for threads in m.threads:
            for bs in m.batch_sizes:
                key = f"measure:{label}:{backend_name}:b{bs}:t{threads}"

                def step(
                    bs: int = bs, threads: int = threads
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
                    prepared = (
                        backend.prepare(
                            ctx.model,
                            batch_size=bs,
                            threads=threads,
                            cache_dir=self.options.cache_root / "onnx",
                        )
                        if base_backend(backend_name) == "onnxruntime"
                        else backend.prepare(ctx.model, batch_size=bs, threads=threads)
                    )
                    x = self.splits.test.x[:bs]
                    parts = measure_parts(prepared, x=x, batch_size=bs, config=timing, label=label)
                    costs, samples = measured_rows(label, parts.with_probe)
                    tables = {"stage_costs": costs, "latency_samples": samples}
                    energy, no_energy, energy_info = self._energy(label, prepared, x, parts)
                    if energy is not None:
                        tables["stage_costs"] = pd.concat([costs, energy], ignore_index=True)
                    if no_energy is not None:
                        tables["skipped"] = no_energy
                    return tables, {
                        "parts": parts.to_dict(),
                        "describe": prepared.describe(),
                        "energy": energy_info,
                    }

                info = self._step(key, step)
                if bs == 1 and threads == m.threads[0] and "parts" in info:
                    ctx.parts[backend_name] = PartMeasurements.from_dict(info["parts"])

    def _energy(
        self, label: str, prepared: Any, x: Any, parts: Any
    ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict[str, Any]]:
        """Net and gross energy per inference of every stage and head, read from the meter of
        the device the backend ran on (estimated from a profile, or recorded as unavailable with
        the reason, when that meter is not readable here): (stage_costs rows, skipped row,
        info)."""
        es = self.spec.measurement.energy
        if not es.enabled:
            return None, None, {}
        from eebench.measure.energy import (
            EnergyMeterUnavailable,
            EnergySession,
            choose_meter,
            cuda_uuid,
        )
        from eebench.suites.tables import energy_rows

        backend = str(getattr(prepared, "backend", ""))
        device = str(prepared.device)
        choice = choose_meter(
            device,
            backend,
            es.meter,
            _profile_power(es.profile, str(self.source)),
            gpu_uuid=cuda_uuid(device),
        )
        info: dict[str, Any] = {"kind": choice.kind, "device": device, "reason": choice.reason}

        def unavailable(reason: str) -> tuple[None, pd.DataFrame, dict[str, Any]]:
            info.update(kind="unavailable", reason=reason)
            self.log(f"  no energy on {backend} ({device}): {reason}")
            row = {"model": label, "step": "energy", "target": backend, "reason": reason}
            return None, pd.DataFrame([row]), info

        if choice.meter is None:
            return unavailable(choice.reason)
        session = EnergySession(choice.meter, sync=prepared.sync, config=_window_config(es))
        rows: list[dict[str, Any]] = []
        with prepared.activated():
            try:
                session.start()
            except EnergyMeterUnavailable as err:
                return unavailable(str(err))
            assert session.period is not None
            info.update(meter=choice.meter.name, update_period=session.period.to_dict())
            self.log(
                f"  energy on {device} from {session.source} ({choice.kind}); update period "
                f"{session.period.seconds * 1e3:.3g} ms ({session.period.how})"
            )
            states = prepared.stage_inputs(prepared.to_input(x))
            for m in parts.all:
                i = int(m.spec.index)
                fn = (
                    (lambda i=i: prepared.run_stage(i, states[i]))
                    if m.spec.part == "stage"
                    else (lambda i=i: prepared.run_exit(i, states[i + 1]))
                )
                try:
                    part = session.measure(
                        fn,
                        inferences_per_call=int(m.spec.batch_size),
                        call_s=float(m.stats.median) / 1e9,
                    )
                except EnergyMeterUnavailable as err:  # e.g. the counter went backwards
                    _, skipped, _ = unavailable(f"{m.spec.part} {m.spec.index}: {err}")
                    return (pd.DataFrame(rows) if rows else None), skipped, info
                rows.extend(
                    energy_rows(
                        label,
                        m.spec,
                        part,
                        choice.kind,
                        _energy_source(choice.kind, backend, choice.meter, es.profile),
                    )
                )
        return pd.DataFrame(rows), None, info

    def _check_energy(self) -> None:
        """A named meter that cannot see a backend's device, or an energy profile that does not
        exist or has no power figures, is refused before anything runs."""
        from eebench.measure.energy import BACKEND_DEVICES, check_meter_for_device

        es = self.spec.measurement.energy
        if not es.enabled:
            return
        for i, name in enumerate(self.spec.backends):
            if base_backend(name) in BACKEND_DEVICES:
                check_meter_for_device(
                    es.meter,
                    BACKEND_DEVICES[base_backend(name)],
                    name,
                    f"measurement.energy.meter (backends[{i}])",
                )
        _profile_power(es.profile, str(self.source))

    # ------------------------------------------------------------------ estimate
    def _estimate(self, ctx: ModelContext, profile: str) -> None:
        from eebench.profiles import estimate_model

        label = ctx.spec.label
        self._check_host_profile(profile)
        for bs in self.spec.measurement.batch_sizes:
            key = f"estimate:{label}:{profile}:b{bs}"

            def step(bs: int = bs) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
                est = estimate_model(ctx.model, profile, batch_size=bs, cost_table=ctx.cost_table)
                return {"stage_costs": estimated_rows(label, est, profile)}, {}

            self._step(key, step)

    def _check_host_profile(self, profile: str) -> None:
        """Once per profile: when a host profile's CPU is not this host's, say so in the
        manifest (``host_profile_mismatch``: profile -> what differs, or null when it matches
        or is not a host profile) and on the console."""
        from eebench.profiles import host_mismatch, load_profile

        assert self.writer is not None
        checked = self.writer.manifest.setdefault("host_profile_mismatch", {})
        if profile in checked:
            return
        found = host_mismatch(load_profile(profile), self.writer.manifest.get("environment", {}))
        checked[profile] = None if found is None else found.to_dict()
        if found is not None:
            self.log(f"WARNING: {found.message()}")

    # ------------------------------------------------------------------ policies
    def _cost_vectors(
        self, ctx: ModelContext
    ) -> tuple[list[Any], list[tuple[str, str, str | None]]]:
        """Cumulative per-exit cost vectors: MACs (analytic), each measured backend's and each
        profile's latency (and energy) at batch 1; plus the (source, latency, energy) names.
        Each carries the plain network's cost (what ``final-only`` pays), from the same parts."""
        from eebench.evaluation import CostVector

        assert self.writer is not None
        label = ctx.spec.label
        ct = ctx.cost_table
        plain = ct.plain
        vectors = [
            CostVector.from_parts(
                ct.stage_macs, ct.head_macs, unit="MAC", source="analytic", name="macs", plain=plain
            )
        ]
        sources: list[tuple[str, str, str | None]] = []
        stage_costs = self._stage_costs_so_far(label)
        threads = self.spec.measurement.threads[0]
        for k, backend in enumerate(self.spec.backends):
            lat_name, en_name = f"latency_{k}", f"energy_{k}"
            if backend.startswith(SIMULATED_PREFIX):
                profile = backend[len(SIMULATED_PREFIX) :]
                sel = stage_costs[
                    (stage_costs["source"] == f"estimated:{profile}")
                    & (stage_costs["batch_size"] == 1)
                ]
                source = f"estimated:{profile}"
            else:
                sel = stage_costs[
                    (stage_costs["backend"] == backend)
                    & (stage_costs["batch_size"] == 1)
                    & (stage_costs["threads"] == threads)
                    & (stage_costs["source_kind"] == "measured")
                ]
                source = f"measured:{backend},threads={threads},batch=1"
            lat = _per_part(sel, "latency_median_ms", ctx.model.num_exits)
            if lat is None:
                continue
            vectors.append(
                CostVector.from_parts(
                    lat[0], lat[1], unit="ms", source=source, name=lat_name, plain=plain
                )
            )
            # measured backends: net energy (idle power subtracted); profiles: their estimate
            en_metric = "energy_mj" if backend.startswith(SIMULATED_PREFIX) else "energy_net_mj"
            en = _per_part(sel, en_metric, ctx.model.num_exits)
            if en is not None:
                vectors.append(
                    CostVector.from_parts(
                        en[0], en[1], unit="mJ", source=source, name=en_name, plain=plain
                    )
                )
            sources.append((source, lat_name, en_name if en is not None else None))
        return vectors, sources

    def _stage_costs_so_far(self, label: str) -> pd.DataFrame:
        assert self.writer is not None
        frames = []
        for key in self.writer.manifest["steps"]:
            if key.split(":")[1:2] == [label] and key.split(":")[0] in (
                "costs",
                "measure",
                "estimate",
            ):
                part = self.writer.step_part(key, "stage_costs")
                if part is not None and len(part):
                    frames.append(part)
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(
                columns=[
                    "source",
                    "backend",
                    "batch_size",
                    "threads",
                    "source_kind",
                    "metric",
                    "part",
                    "index",
                    "value",
                ]
            )
        )

    def _policies(self, ctx: ModelContext) -> None:
        label = ctx.spec.label

        def step() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            frame, calibrated = self._evaluate_policies(ctx)
            return {"operating_points": frame}, {"calibrated": calibrated}

        info = self._step(f"policies:{label}", step)
        ctx.parts["_calibrated"] = info.get("calibrated", [])

    def _evaluate_policies(self, ctx: ModelContext) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        from eebench.evaluation import CalibrationError, operating_points
        from eebench.policies import create_policy

        val, test = ctx.records["val"], ctx.records["test"]
        label, family = ctx.spec.label, ctx.family
        vectors, sources = self._cost_vectors(ctx)
        cal = self.spec.calibration
        # budgets are fractions of the plain network's MACs (what final-only costs)
        plain_macs = float(ctx.cost_table.plain_macs)
        frames: list[pd.DataFrame] = []
        calibrated: list[dict[str, Any]] = []

        def add(df: pd.DataFrame, calibration: str | None) -> None:
            frames.append(long_operating_points(df, label, family, calibration, sources))

        for pspec in self.spec.policies:
            for measure in pspec.confidence:
                policy = _make_policy(create_policy, pspec.name, measure, pspec.options)
                if policy is None:
                    continue
                _give_costs(policy, vectors)
                # a learned policy scores val out of fold: its val sweep and every threshold
                # chosen on val come from scores the fit did not see (test: the deployed gate)
                policy = policy.fit(val).for_calibration(val)
                if getattr(policy, "cost_source", None):
                    self.log(f"  {policy.name}: its reward charges {policy.cost_source}")
                _check_family(policy, ctx)
                grid = np.asarray(pspec.threshold_values(), dtype=float)
                if not policy.uses_thresholds:
                    continue
                for rec in (val, test):
                    add(
                        operating_points(rec, policy, grid, vectors, model=label).to_frame(),
                        "sweep",
                    )
                cals = _calibrations(policy, val, test, vectors, cal, plain_macs, label, grid)
                for method, fn in cals:
                    try:
                        c = fn()
                    except CalibrationError as err:
                        self.log(f"  calibration {method} of {policy.name}/{measure}: {err}")
                        continue
                    name = _calibration_name(c)
                    df = c.to_frame()
                    df["calibration"] = name
                    add(df, name)
                    calibrated.append(
                        {
                            "policy": pspec.name,
                            "confidence": measure,
                            "options": pspec.options,
                            "calibration": name,
                            "thresholds": [float(t) for t in c.thresholds],
                            "gate": _gate_state(policy),
                        }
                    )
        for name in self.spec.baselines:
            policy = create_policy(name)
            for rec in (val, test):
                add(
                    operating_points(rec, policy, None, vectors, model=label).to_frame(), "baseline"
                )
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame, calibrated

    # ------------------------------------------------------------------ validate
    def _validate(self, ctx: ModelContext, backend_name: str) -> None:
        """True early-exit runs of the calibrated points: mean measured vs mean predicted latency
        (:mod:`eebench.measure.latency_validation`), at batch 1 from parts timed by the executor's
        own loop on the same samples and clock, alternating with the true runs repeat by repeat."""
        from eebench.backends import EarlyExitExecutor, ExecutionResult, get_backend
        from eebench.measure.latency_validation import reach_fractions, validate_latency
        from eebench.measure.timing import CLOCKS
        from eebench.policies import create_policy

        label = ctx.spec.label
        backend = get_backend(backend_name)
        if not backend.available()[0] or backend_name not in ctx.parts:
            return
        parts = ctx.parts[backend_name]
        calibrated = ctx.parts.get("_calibrated", [])
        v = self.spec.validation
        clock = CLOCKS[v.clock]
        threads = self.spec.measurement.threads[0]
        test = ctx.records["test"]
        n = min(v.samples, test.num_samples)
        x = self.splits.test.x[:n]
        labels = test.labels[:n]
        vectors = self._cost_vectors(ctx)[0]  # learned accuracy-cost policies refit with them
        for bs in v.batch_sizes:
            key = f"validate:{label}:{backend_name}:b{bs}"

            def step(bs: int = bs) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
                prepared = backend.prepare(
                    ctx.model,
                    batch_size=bs,
                    threads=threads,
                    **(
                        {"cache_dir": self.options.cache_root / "onnx"}
                        if base_backend(backend_name) == "onnxruntime"
                        else {}
                    ),
                )
                mode = "per-sample" if bs == 1 else "batched"
                rows = []
                energy_check = self._energy_validator(ctx, prepared, backend_name, bs, x)
                agg = EarlyExitExecutor(prepared, None, clock).run(
                    x, mode="aggregation", batch_size=bs
                )
                bb = EarlyExitExecutor(prepared, None, clock).run(
                    x, mode="backbone", batch_size=bs, plain_stages=ctx.cost_table.plain.stages
                )
                for c in calibrated:
                    policy = _make_policy(create_policy, c["policy"], c["confidence"], c["options"])
                    _give_costs(policy, vectors)
                    if c.get("gate") is not None:
                        policy = policy.fit(ctx.records["val"])
                    th = np.asarray(c["thresholds"], dtype=float)
                    decider = policy.decider(th, num_exits=test.num_exits)
                    executor = EarlyExitExecutor(prepared, decider, clock)
                    expected = _record_exits(policy, test.subset(slice(0, n)), th)
                    # every repeat is kept on both sides (no best-of-N). At batch 1 each sample's
                    # parts pass (every stage, head and decision of the same loop, same clock)
                    # runs right before its true run, so drift and bursts of load on a shared
                    # machine hit both sides alike. Both start from the state a stream of true
                    # runs leaves (caches hold what the previous sample's exit used): the parts
                    # pass follows the previous sample's true run, and the true run follows that
                    # run repeated untimed, not the parts pass that ran every stage
                    runs, part_runs = [], []
                    for _ in range(v.repeats):
                        if bs == 1:
                            for k in range(n):
                                part_runs.append(executor.run(x[k : k + 1], mode="parts"))
                                if k:
                                    executor.run(x[k - 1 : k], mode=mode)
                                runs.append(executor.run(x[k : k + 1], mode=mode))
                        else:
                            runs.append(executor.run(x, mode=mode, batch_size=bs))
                    # decisions are deterministic: every repeat exits alike; keep the last one
                    res = ExecutionResult.concatenate(runs[-n:] if bs == 1 else runs[-1:])
                    latency_ns = np.concatenate([r.latency_ns for r in runs])
                    if bs == 1:
                        check = validate_latency(
                            latency_ns,
                            np.concatenate([r.part_ns for r in runs]),
                            np.concatenate([r.part_ns for r in part_runs]),
                            expected,
                            clock=f"{res.clock} (host, per sample, both sides)",
                        ).columns()
                        reach = reach_fractions(expected, test.num_exits)
                        isolated_ms = (
                            float(reach @ (parts.stage_ns("mean") + parts.head_ns("mean"))) / 1e6
                        )
                        decision_part_us = float(
                            np.concatenate([r.decision_ns for r in part_runs]).sum()
                            / max(sum(int(r.decision_calls.sum()) for r in part_runs), 1)
                            / 1e3
                        )
                    else:  # the parts are timed at batch 1: no prediction for a batched run
                        check = {
                            "clock": f"{res.clock} (host, per batch)",
                            "measured_latency_ms": float(latency_ns.mean()) / 1e6,
                            "predicted_latency_ms": float("nan"),
                            "ratio": float("nan"),
                        }
                        isolated_ms = decision_part_us = float("nan")
                    overhead = np.concatenate([r.decision_ns for r in runs]).sum() / max(
                        sum(int(r.decision_calls.sum()) for r in runs), 1
                    )
                    measured_ms = check["measured_latency_ms"]
                    rows.append(
                        {
                            "model": label,
                            "family": ctx.family,
                            "backend": backend_name,
                            "policy": c["policy"],
                            "confidence": c["confidence"],
                            "calibration": c["calibration"],
                            "thresholds": "(" + ", ".join(f"{t:.6g}" for t in th) + ")",
                            "batch_size": bs,
                            "threads": threads,
                            "mode": mode,
                            "samples": n,
                            "repeats": v.repeats,
                            **check,
                            "decision_overhead_us": float(overhead) / 1e3,
                            "decision_part_us": decision_part_us,
                            "predicted_isolated_parts_ms": isolated_ms,
                            "agreement": float((res.exit_indices == expected).mean()),
                            "accuracy": res.accuracy(labels),
                            "aggregation_latency_ms": agg.mean_latency_ns / 1e6,
                            "backbone_latency_ms": bb.mean_latency_ns / 1e6,
                            "speedup_vs_aggregation": agg.mean_latency_ns / 1e6 / measured_ms,
                            "speedup_vs_backbone": bb.mean_latency_ns / 1e6 / measured_ms,
                            **_speedup_ci(bb.latency_ns, latency_ns),
                            "source": f"measured:{backend_name}",
                            **{f"exit_frac_{i}": f for i, f in enumerate(res.exit_fractions)},
                        }
                    )
                    if energy_check is not None:
                        rows[-1].update(energy_check(decider, res))
                return {"validation": pd.DataFrame(rows)}, {}

            self._step(key, step)

    # ------------------------------------------------------------------ serve
    def _serve(self, ctx: ModelContext, backend_name: str) -> None:
        """Early exit under load (:mod:`eebench.serving`): the suite's operating point served by
        each batching strategy and the plain network, as MLCommons LoadGen's System Under Test,
        in each scenario; LoadGen's logs are kept under ``serving/`` in the bundle."""
        from eebench.backends import get_backend
        from eebench.errors import BackendUnavailable
        from eebench.policies import create_policy
        from eebench.serving import (
            LoadgenUnavailable,
            ScenarioSettings,
            ServingSession,
            StrategyConfig,
            find_max_qps,
            offline_decisions,
            require_loadgen,
        )
        from eebench.serving.modes import overhead_floor_us, unsupported, whole_graph
        from eebench.serving.search import OFFLINE_HEADROOM
        from eebench.serving.table import serving_row

        assert self.writer is not None
        sv = self.spec.serving
        assert sv is not None
        label = ctx.spec.label
        backend = get_backend(backend_name)
        ok, reason = backend.available()
        try:
            require_loadgen()
        except LoadgenUnavailable as err:
            ok, reason = False, str(err)
        if not ok:
            self._skip(f"serve:{label}:{backend_name}", label, "serve", backend_name, reason)
            return
        chosen = [
            c
            for c in ctx.parts.get("_calibrated", [])
            if c["policy"] == sv.policy
            and c["confidence"] == sv.confidence
            and (sv.calibration is None or c["calibration"] == sv.calibration)
        ]
        if not chosen:
            why = (
                f"no calibrated operating point of policy '{sv.policy}' / '{sv.confidence}'"
                + (f" named '{sv.calibration}'" if sv.calibration else "")
                + "; add it to the suite's policies or change serving.policy/calibration"
            )
            self._skip(f"serve:{label}:{backend_name}", label, "serve", backend_name, why)
            return
        c = chosen[0]
        policy = _make_policy(create_policy, c["policy"], c["confidence"], c["options"])
        _give_costs(policy, self._cost_vectors(ctx)[0])  # refit with the costs it was chosen on
        if c.get("gate") is not None:
            policy = policy.fit(ctx.records["val"])
        th = np.asarray(c["thresholds"], dtype=float)
        test = ctx.records["test"]
        n = min(sv.samples, test.num_samples)
        rec = test.subset(slice(0, n))
        x = np.asarray(self.splits.test.x[:n], dtype=np.float32)
        expected = {
            "ee": offline_decisions(policy, rec, th),
            "plain": offline_decisions(None, rec, None),
        }
        plain_stages = ctx.cost_table.plain.stages
        log_root = self.writer.path
        base = dict(
            latency_bound_ms=sv.latency_bound_ms or 10.0,
            percentile=sv.percentile,
            min_duration_s=sv.min_duration_s,
            max_duration_s=sv.max_duration_s,
            min_query_count=sv.min_query_count,
            offline_expected_qps=sv.offline_expected_qps,
            single_stream_expected_latency_ms=sv.single_stream_expected_latency_ms,
        )

        def step() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
            opts = (
                {"cache_dir": self.options.cache_root / "onnx"}
                if base_backend(backend_name) == "onnxruntime"
                else {}
            )
            try:
                prepared = backend.prepare(
                    ctx.model, batch_size=sv.batch_size, threads=sv.threads, **opts
                )
            except BackendUnavailable as err:
                row = {"model": label, "step": "serve", "target": backend_name, "reason": str(err)}
                return {"skipped": pd.DataFrame([row])}, {"skipped": str(err)}
            identity = {
                "model": label,
                "family": ctx.family,
                "backend": backend_name,
                "threads": sv.threads,
                "policy": c["policy"],
                "confidence": c["confidence"],
                "calibration": c["calibration"],
                "thresholds": "(" + ", ".join(f"{t:.6g}" for t in th) + ")",
                "source": f"measured:{backend_name}",
            }
            rows: list[dict[str, Any]] = []

            def one(
                session: Any, settings: Any, folder: Path, want: Any, search: bool = False
            ) -> dict[str, Any]:
                run = session.run(settings, folder)
                row = serving_row(
                    run,
                    settings,
                    want,
                    rec.labels,
                    mode=mode,
                    log_root=log_root,
                    search=search,
                    **identity,
                    mode_floor_us=floor_us,
                )
                if not row["answers_equal_record"]:
                    self.log(
                        f"  served answers differ from the exit record: {run.strategy.name} "
                        f"{settings.scenario} exits {row['exit_agreement']:.4f}, "
                        f"classes {row['answer_agreement']:.4f}"
                    )
                if settings.scenario == "Offline":
                    self.log(
                        f"  {run.strategy.name}/{mode} Offline sized for "
                        f"{row['offline_expected_qps']:.0f} QPS ({row['offline_expected_source']})"
                    )
                rows.append(row)
                return row

            skipped: list[dict[str, Any]] = []

            def skip(target: str, reason: str) -> None:
                skipped.append(
                    {"model": label, "step": "serve", "target": target, "reason": reason}
                )
                self.log(f"  skipped serving {target}: {reason}")

            for mode in sv.modes:
                engine = None
                if mode != "per-stage":
                    why = _fused_policy_problem(policy) if mode == "fused" else None
                    try:
                        if why is None:
                            engine = whole_graph(
                                mode, backend_name, prepared, ctx.model, sv.threads, th
                            )
                    except ValueError as err:
                        why = str(err)
                    if why is not None:
                        skip(f"{backend_name}:{mode}", why)
                        continue
                    build_s = getattr(engine, "build_s", float("nan"))
                    if build_s == build_s:  # not NaN: the mode built something before serving
                        self.log(
                            f"  {backend_name} {mode}: built in {build_s:.1f} s, before serving"
                        )
                floor_us = overhead_floor_us(
                    mode,
                    backend_name,
                    tuple(ctx.model.input_shape),
                    sv.threads,
                    self.options.cache_root / "onnx" / "serving",
                )
                self.log(f"  {backend_name} {mode}: overhead floor {floor_us:.2f} us per call")
                for strategy in sv.strategies:
                    why = unsupported(mode, strategy)
                    if why is not None:
                        skip(f"{backend_name}:{strategy}/{mode}", why)
                        continue
                    session = ServingSession(
                        prepared,
                        StrategyConfig(strategy, sv.batch_size, sv.timeout_ms / 1e3),
                        x,
                        lambda: policy.decider(th, num_exits=test.num_exits),
                        plain_stages,
                        engine,
                    )
                    want = expected["plain" if strategy == "plain" else "ee"]
                    logs = (
                        log_root
                        / "serving"
                        / safe_name(label)
                        / safe_name(backend_name)
                        / f"{strategy}-{mode}"
                    )
                    offline_qps = float("inf")  # no Server rate above what Offline sustains
                    for scenario in sv.scenarios:
                        if scenario != "Server":
                            row = one(
                                session, ScenarioSettings(scenario, **base), logs / scenario, want
                            )
                            if scenario == "Offline" and row["achieved_qps"] > 0:
                                offline_qps = float(row["achieved_qps"])
                            continue
                        for q in sv.target_qps:
                            settings = ScenarioSettings("Server", target_qps=q, **base)
                            one(session, settings, logs / f"Server-{q:g}qps", want)
                        if sv.search is None:
                            continue
                        # a rate far above the Offline throughput cannot hold any bound:
                        # capping the search there spares runs that only pile up a queue
                        cap = OFFLINE_HEADROOM * offline_qps
                        hi = max(sv.search.lo_qps, min(sv.search.hi_qps, cap))
                        found = find_max_qps(
                            lambda q, s=session, w=want, f=logs: one(
                                s,
                                ScenarioSettings("Server", target_qps=q, **base),
                                f / f"search-{q:.6g}qps",
                                w,
                                True,
                            ),
                            lambda row: bool(row["loadgen_valid"]),
                            sv.search.lo_qps,
                            hi,
                            sv.search.steps,
                        )
                        for _, row in found.probes:
                            row["search_hi_qps"] = hi
                            row["max_qps_within_bound"] = found.max_qps
                            row["max_qps_at_upper_end"] = found.at_upper_end
                        self.log(
                            f"  {backend_name} {strategy}/{mode}: max QPS with "
                            f"p{sv.percentile * 100:g} <= {sv.latency_bound_ms:g} ms: "
                            f"{found.max_qps:.1f}"
                        )
            tables = {"serving": pd.DataFrame(rows)}
            if skipped:
                tables["skipped"] = pd.DataFrame(skipped)
            return tables, {}

        self._step(f"serve:{label}:{backend_name}", step)

    def _energy_validator(
        self, ctx: ModelContext, prepared: Any, backend_name: str, bs: int, x: Any
    ) -> Callable[[Any, Any], dict[str, Any]] | None:
        """Energy validation of operating points, where a hardware meter sees the backend's
        device: a function (decider, executor result) -> validation columns comparing the
        measured net energy per sample of a true early-exit run with the prediction from the
        parts' net energy. None at batch > 1 (the parts were measured at batch 1), without
        part energies, or without a hardware meter (an estimate would validate nothing)."""
        es = self.spec.measurement.energy
        if not es.enabled or bs != 1:
            return None
        from eebench.backends import EarlyExitExecutor
        from eebench.measure.energy import (
            EnergyMeterUnavailable,
            EnergySession,
            choose_meter,
            cuda_uuid,
            predict_energy,
        )

        costs = self._stage_costs_so_far(ctx.spec.label)
        sel = costs[
            (costs["backend"] == backend_name)
            & (costs["batch_size"] == 1)
            & (costs["threads"] == self.spec.measurement.threads[0])
            & (costs["source_kind"] == "measured")
        ]
        per_part = _per_part(sel, "energy_net_mj", ctx.model.num_exits)
        if per_part is None:
            return None
        device = str(prepared.device)
        choice = choose_meter(device, backend_name, es.meter, gpu_uuid=cuda_uuid(device))
        if choice.kind != "measured" or choice.meter is None:
            return None
        session = EnergySession(choice.meter, sync=prepared.sync, config=_window_config(es))
        try:
            with prepared.activated():
                session.start()
        except EnergyMeterUnavailable as err:
            self.log(f"  no energy validation on {backend_name}: {err}")
            return None
        stage_mj, head_mj = per_part
        source = _energy_source(choice.kind, backend_name, choice.meter, None)
        n = len(x)

        def check(decider: Any, res: Any) -> dict[str, Any]:
            executor = EarlyExitExecutor(prepared, decider)
            try:
                part = session.measure(
                    lambda: executor.run(x, mode="per-sample", batch_size=1),
                    inferences_per_call=n,
                    call_s=float(np.sum(res.latency_ns)) / 1e9,
                )
            except EnergyMeterUnavailable as err:
                self.log(f"  no energy validation of this point on {backend_name}: {err}")
                return {}
            predicted = float(np.mean(predict_energy(res.exit_indices, stage_mj, head_mj)))
            net = part.energy.net_j
            return {
                "predicted_energy_mj": predicted,
                "measured_energy_mj": net.estimate * 1e3,
                "measured_energy_ci_low_mj": net.lo * 1e3,
                "measured_energy_ci_high_mj": net.hi * 1e3,
                "measured_energy_gross_mj": part.energy.gross_j.estimate * 1e3,
                "energy_ratio": net.estimate * 1e3 / predicted if predicted > 0 else float("nan"),
                "energy_source": source,
            }

        return check

    # ------------------------------------------------------------------ end
    def _summary(self, tables: dict[str, pd.DataFrame]) -> None:
        from eebench.suites.summary import summary_table

        table = summary_table(tables)
        if not table.empty:
            print(
                "\nRecommended calibrated operating point per model and cost source, chosen on "
                "val and reported on test (MACs analytic, latency measured or estimated as "
                "labelled):"
            )
            print(table.to_string(index=False))
        from eebench.report.latency import noisy_lines

        noisy = noisy_lines(tables.get("stage_costs", pd.DataFrame()))
        if noisy:
            target = self.spec.measurement.rel_ci_target
            print(
                f"\nNoisy measurements: the median's 95% interval is wider than ±{target:.0%} "
                "(latencies built on them are less certain):"
            )
            print("\n".join(noisy))
        assert self.writer is not None
        print(f"\nrun written to {self.writer.path}")

    def _report(self) -> None:
        assert self.writer is not None
        try:
            from eebench.report import build_report
        except ImportError:
            return
        files = build_report([self.writer.path], self.writer.path / "report")
        print(f"report: {files.html} and {files.markdown}")


# ---------------------------------------------------------------------- small pieces
def _check_folder_option(option: str, folder: Path) -> None:
    """A folder option must not name a file, nor lie below one (checked before any write)."""
    from eebench.errors import ResultsError

    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                at = "" if p == folder else f" ({p} is a file)"
                raise ResultsError(
                    f"{option} {folder}: not a folder{at}; choose a folder (it is created when "
                    "missing)"
                )
            return


def _profile_power(profile: str | None, source: str) -> Any:
    """Idle and active power of the hardware profile that estimates energy (None without one)."""
    if not profile:
        return None
    from eebench.errors import ConfigError
    from eebench.measure.energy import ProfilePower
    from eebench.profiles import load_profile

    field = "measurement.energy.profile"
    try:
        power = load_profile(profile).power
    except Exception as err:
        raise ConfigError(
            f"cannot load hardware profile '{profile}': {err}", source, field
        ) from None
    if power.active is None:
        why = power.unavailable or "the profile gives no active power"
        raise ConfigError(
            f"hardware profile '{profile}' cannot estimate energy: {why}; name a profile with "
            "power.active (and power.idle)",
            source,
            field,
        )
    if power.idle is None:  # net = gross: nothing known to subtract, and the choice says so
        return ProfilePower(profile, 0.0, power.active.base, idle_known=False)
    return ProfilePower(profile, power.idle.base, power.active.base)


def _energy_source(kind: str, backend: str, meter: Any, profile: str | None) -> str:
    """``measured:<backend>+<meter>:<domain>``, or for an estimate the profile and the timing."""
    if kind == "estimated":
        return f"estimated:{profile}+time:measured:{backend}"
    return f"measured:{backend}+{meter.name}:{meter.total_domain}"


def _per_part(
    sel: pd.DataFrame, metric: str, num_exits: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(stage vector, head vector) of ``metric`` from stage_costs rows, or None when incomplete."""
    rows = sel[sel["metric"] == metric]
    stages = rows[rows["part"] == "stage"].set_index("index")["value"]
    heads = rows[rows["part"] == "exit"].set_index("index")["value"]
    if len(stages) != num_exits or len(heads) != num_exits:
        return None
    return stages.sort_index().to_numpy(float), heads.sort_index().to_numpy(float)


def _make_policy(
    create_policy: Callable[..., Any], name: str, measure: str, options: dict[str, Any]
) -> Any:
    """Build a policy; policies without a confidence measure ignore ``measure``."""
    import inspect

    from eebench.policies import POLICIES

    params = inspect.signature(POLICIES.get(name).__init__).parameters
    kwargs = dict(options)
    if "confidence" in params:
        kwargs.setdefault("confidence", measure)
    return create_policy(name, **kwargs)


def _give_costs(policy: Any, vectors: list[Any]) -> None:
    """Hand the run's cost vectors to a policy whose training charges a cost (the learned
    accuracy-cost policies: ``use_costs``), before it is fitted."""
    use_costs = getattr(policy, "use_costs", None)
    if use_costs is not None:
        use_costs(vectors)


def _calibrations(
    policy: Any,
    val: Any,
    test: Any,
    vectors: list[Any],
    cal: Any,
    plain_macs: float,
    label: str,
    grid: np.ndarray,
) -> list[tuple[str, Callable[[], Any]]]:
    """The suite's calibration targets for one policy, as (method, thunk) pairs.

    The IDK cascade chooses its thresholds its own way (its objective, and its accuracy target
    for each ``accuracy_within``). A policy whose thresholds are a discrete grid (patience)
    picks only values of the suite's grid, for the accuracy and budget targets; rank-based
    targets (budgeted batch, exit distributions) do not apply to it. Budgets are fractions of
    the plain network's MACs; ``rounding`` applies to budgeted batch and exit distributions.
    """
    from eebench.evaluation import (
        calibrate_accuracy_drop,
        calibrate_budget,
        calibrate_budgeted_batch,
        calibrate_exit_distribution,
        calibrate_idk,
    )
    from eebench.policies import IDKCascadePolicy

    if isinstance(policy, IDKCascadePolicy):
        cals: list[tuple[str, Callable[[], Any]]] = [
            ("idk-objective", lambda: calibrate_idk(val, test, policy, vectors, model=label))
        ]
        for delta in cal.accuracy_within:
            cals.append(
                (
                    "idk-accuracy",
                    lambda d=delta: calibrate_idk(
                        val, test, policy, vectors, accuracy_within=d, model=label
                    ),
                )
            )
        return cals
    on_grid = bool(getattr(policy, "calibrates_on_grid", False))
    among = grid if on_grid else None
    rounding = getattr(cal, "rounding", "cumulative")
    cals = []
    for delta in cal.accuracy_within:
        cals.append(
            (
                "accuracy-drop",
                lambda d=delta: calibrate_accuracy_drop(
                    val, test, policy, d, vectors, thresholds=among, model=label
                ),
            )
        )
    for frac in cal.budget_fractions:
        cals.append(
            (
                "budget",
                lambda f=frac: calibrate_budget(
                    val, test, policy, f * plain_macs, vectors, thresholds=among, model=label
                ),
            )
        )
        if not on_grid:
            cals.append(
                (
                    "budgeted-batch",
                    lambda f=frac: calibrate_budgeted_batch(
                        val, test, policy, f * plain_macs, vectors, rounding=rounding, model=label
                    ),
                )
            )
    for dist in cal.exit_distributions:
        if len(dist) == val.num_exits and not on_grid:
            cals.append(
                (
                    "exit-distribution",
                    lambda d=dist: calibrate_exit_distribution(
                        val, test, policy, d, vectors, rounding=rounding, model=label
                    ),
                )
            )
    return cals


def _fused_policy_problem(policy: Any) -> str | None:
    """Why the fused graph cannot make this policy's decision in-graph (None when it can)."""
    from eebench.serving.graphs import FUSED_MEASURES

    confidence = getattr(policy, "confidence", None)
    if policy.name != "threshold" or getattr(policy, "fallback", "final") != "final":
        return f"the fused graph decides thresholds in-graph; policy '{policy.name}' is not one"
    if confidence not in FUSED_MEASURES:
        return f"the fused graph computes {FUSED_MEASURES} in-graph, not '{confidence}'"
    return None


def _check_family(policy: Any, ctx: ModelContext) -> None:
    """Refuse a policy defined for other model families (the suite check catches registered
    models before the run; this catches models given as a file or a function)."""
    from eebench.errors import ConfigError

    families = getattr(policy, "applies_to_families", None)
    if families and ctx.family not in families:
        raise ConfigError(
            f"policy '{policy.name}' applies to {' and '.join(families)} models only, but model "
            f"'{ctx.spec.label}' is of the {ctx.family} family; use the 'threshold' policy for it",
            field="policies",
        )


def _speedup_ci(plain_ns: np.ndarray, early_exit_ns: np.ndarray) -> dict[str, float]:
    """95% BCa interval of the speedup over the plain network (ratio of the two runs' mean
    per-sample latencies, each run resampled on its own)."""
    from eebench.measure.stats import bootstrap_ci

    ci = bootstrap_ci(
        [np.asarray(plain_ns, float), np.asarray(early_exit_ns, float)],
        lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis),
    )
    return {"speedup_vs_backbone_ci_low": ci.lo, "speedup_vs_backbone_ci_high": ci.hi}


def _calibration_name(c: Any) -> str:
    t = c.target
    if c.method == "accuracy-drop":
        return f"within-{t['delta'] * 100:g}%-of-final"
    if c.method == "idk-objective":
        return f"idk-objective-error-weight-{t['error_weight']:g}"
    if c.method == "idk-accuracy":
        return f"idk-within-{t['delta'] * 100:g}%-of-final"
    if c.method in ("budget", "budgeted-batch"):
        return f"{c.method}-{t['budget']:.3g}-macs"
    if c.method == "exit-distribution":
        return "exit-distribution-" + "-".join(f"{p:.2g}" for p in t["exit_distribution"])
    return c.method


def _gate_state(policy: Any) -> Any:
    return "fitted" if getattr(policy, "fitted", False) else None


def _record_exits(policy: Any, record: Any, thresholds: np.ndarray) -> np.ndarray:
    """Exit index per sample that the vectorised evaluation predicts for these thresholds."""
    from eebench.evaluation import exit_indices

    return np.asarray(exit_indices(policy.scores(record), thresholds[None, :]))[0]


__all__ = ["RunOptions", "SuiteRunner", "run_suite"]


def _window_config(es: Any) -> Any:
    """The energy windows a suite's ``measurement.energy`` asks for (parts and validation alike)."""
    from eebench.measure.energy import WindowConfig

    return WindowConfig(
        periods_per_window=es.periods_per_window,
        min_window_s=es.min_window_s,
        windows=es.windows,
        idle_windows=es.idle_windows,
        probe_s=es.probe_s,
    )

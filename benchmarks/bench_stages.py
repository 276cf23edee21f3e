"""Per-stage and per-exit-head latency per backend, peak memory, and profile estimates.

Parameters come from the suite (see :mod:`benchmarks.common`): its models (by
id), its measured backends plus every other registered backend, its batch
sizes and thread counts; the stage index runs up to the deepest model's stage
count and skips beyond a model's own. Times are ``measured:<backend>`` at the
given threads and batch size, on a test batch of the suite's dataset, each
stage fed the state the previous stage produced for that batch.
"""

from __future__ import annotations

from contextlib import ExitStack

from .common import (
    NOT_IN_SUITE,
    SIMULATED_PREFIX,
    SUITE,
    PreparedSuite,
    SuiteBenchmark,
    max_stages,
    measured_backends,
    open_backend,
    simulated_profiles,
)

MODELS = [m.label for m in SUITE.models]
BACKENDS = measured_backends(SUITE)
BATCH_SIZES = list(SUITE.measurement.batch_sizes)
THREADS = list(SUITE.measurement.threads)
STAGES = list(range(max_stages(SUITE)))


class StageLatency(SuiteBenchmark):
    """``time_stage``: stage ``i`` alone; ``time_head``: exit head ``i`` alone (measured)."""

    params = [MODELS, BACKENDS, BATCH_SIZES, THREADS, STAGES]
    param_names = ["model", "backend", "batch_size", "threads", "stage"]

    def setup(
        self,
        prepared: PreparedSuite,
        model: str,
        backend: str,
        batch_size: int,
        threads: int,
        stage: int,
    ) -> None:
        if stage >= prepared.entry(model).num_exits:
            raise NotImplementedError(f"{model} has {prepared.entry(model).num_exits} stages")
        self.runner = open_backend(prepared, model, backend, batch_size, threads)
        self.active = ExitStack()
        self.active.enter_context(self.runner.activated())  # thread settings, inference mode
        states = self.runner.stage_inputs(self.runner.to_input(prepared.batch(batch_size)))
        self.stage_in, self.head_in = states[stage], states[stage + 1]

    def teardown(self, *params: object) -> None:
        active = getattr(self, "active", None)
        if active is not None:
            active.close()

    def time_stage(self, prepared, model, backend, batch_size, threads, stage):
        self.runner.run_stage(stage, self.stage_in)
        self.runner.sync()

    def time_head(self, prepared, model, backend, batch_size, threads, stage):
        self.runner.run_exit(stage, self.head_in)
        self.runner.sync()


class PeakMemory(SuiteBenchmark):
    """Peak resident memory of the process while a model is prepared on a backend and runs
    one full pass (every stage and exit head) on a batch."""

    params = [MODELS, BACKENDS, BATCH_SIZES, THREADS]
    param_names = ["model", "backend", "batch_size", "threads"]

    def setup(
        self, prepared: PreparedSuite, model: str, backend: str, batch_size: int, threads: int
    ) -> None:
        from eebench.backends import get_backend

        ok, reason = get_backend(backend).available()
        if not ok:
            raise NotImplementedError(f"{backend} is not available here: {reason}")
        self.x = prepared.batch(batch_size)

    def peakmem_prepare_and_run(self, prepared, model, backend, batch_size, threads):
        runner = open_backend(prepared, model, backend, batch_size, threads)
        with runner.activated():
            outs = runner.run_all(runner.to_input(self.x))
            runner.to_numpy(outs[-1])


class EstimatedLatency(SuiteBenchmark):
    """Latency to the final exit (every stage and head) estimated from each hardware profile
    of the suite (``estimated:<profile>``, ms): tracks the estimator and the models together."""

    params = [MODELS, simulated_profiles(SUITE), BATCH_SIZES]
    param_names = ["model", "backend", "batch_size"]
    unit = "ms (estimated)"

    def setup(self, prepared: PreparedSuite, model: str, backend: str, batch_size: int) -> None:
        if backend == NOT_IN_SUITE:
            raise NotImplementedError("the suite names no simulated:<profile> backend")
        self.model = prepared.load_model(model)

    def track_estimated_latency(self, prepared, model, backend, batch_size):
        from eebench.profiles import estimate_model

        table = estimate_model(self.model, backend[len(SIMULATED_PREFIX) :], batch_size=batch_size)
        return float(table["latency_ms"].sum())

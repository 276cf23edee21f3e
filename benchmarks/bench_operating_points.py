"""Calibrated operating points and true early-exit runs of the suite's models.

* :class:`CalibratedOperatingPoints` tracks, for every model x thresholded
  policy x calibration target of the suite, the test accuracy and the
  expected MACs (analytic) of the thresholds chosen on val: the numbers a
  regression in a model, a training recipe or a policy moves.
* :class:`PolicySweep` times the vectorised evaluation of the suite's
  threshold grid on the test record (eebench's own hot path).
* :class:`EarlyExitSpeedup` and :class:`LatencyPrediction` run the headline
  operating point (the suite's first thresholded policy at its first
  calibration target) with the true early-exit executor on each measured
  backend: the realised speedup over aggregation, and the measured /
  predicted latency ratio, where the prediction is the sum of the separately
  measured stages and heads each sample ran (as ``eebench run`` validates it).
"""

from __future__ import annotations

import numpy as np

from .common import (
    SUITE,
    PreparedSuite,
    SuiteBenchmark,
    calibrate,
    calibration_targets,
    measured_backends,
    open_backend,
    policy_labels,
    suite_policy,
    threshold_policies,
)

MODELS = [m.label for m in SUITE.models]
POLICIES = policy_labels(SUITE)
CALIBRATIONS = calibration_targets(SUITE)
BACKENDS = measured_backends(SUITE)
VALIDATION_BATCH_SIZES = list(SUITE.validation.batch_sizes)


class CalibratedOperatingPoints(SuiteBenchmark):
    """Test-split results of thresholds calibrated on val (deterministic for a checkpoint)."""

    params = [MODELS, POLICIES, CALIBRATIONS]
    param_names = ["model", "policy", "calibration"]

    def setup(self, prepared: PreparedSuite, model: str, policy: str, calibration: str) -> None:
        val, test = prepared.load_records(model)
        self.macs = prepared.entry(model).macs_vector()
        self.calibration = calibrate(
            calibration, val, test, suite_policy(SUITE, policy, val), self.macs
        )

    def track_accuracy(self, prepared, model, policy, calibration):
        return 100.0 * float(self.calibration.test["accuracy"])

    track_accuracy.unit = "% test accuracy"

    def track_expected_macs(self, prepared, model, policy, calibration):
        return float(self.calibration.test["expected_macs"])

    track_expected_macs.unit = "MACs (analytic, expected per sample)"


class PolicySweep(SuiteBenchmark):
    """Vectorised evaluation of a policy over the suite's threshold grid on the test record."""

    params = [MODELS, POLICIES]
    param_names = ["model", "policy"]

    def setup(self, prepared: PreparedSuite, model: str, policy: str) -> None:
        val, self.test = prepared.load_records(model)
        self.policy = suite_policy(SUITE, policy, val)
        name = threshold_policies(SUITE)[policy][0]
        spec = next(p for p in SUITE.policies if p.name == name)
        self.grid = np.asarray(spec.threshold_values(), dtype=float)
        self.macs = prepared.entry(model).macs_vector()

    def time_sweep(self, prepared, model, policy):
        from eebench.evaluation import operating_points

        operating_points(self.test, self.policy, self.grid, [self.macs])


class _Executor(SuiteBenchmark):
    """Prepares the headline operating point's decider and a backend for executor runs."""

    def _prepare(self, prepared: PreparedSuite, model: str, backend: str, batch_size: int) -> None:
        val, test = prepared.load_records(model)
        policy = suite_policy(SUITE, POLICIES[0], val)
        cal = calibrate(CALIBRATIONS[0], val, test, policy, prepared.entry(model).macs_vector())
        self.decider = policy.decider(cal.thresholds, num_exits=test.num_exits)
        self.batch_size = batch_size
        self.runner = open_backend(
            prepared, model, backend, batch_size, SUITE.measurement.threads[0]
        )
        self.x = prepared.batch(min(SUITE.validation.samples, len(prepared.x_test)))
        self.mode = "per-sample" if batch_size == 1 else "batched"
        self.plain_stages = prepared.entry(model).plain.stages
        self._run(self.x[: min(5, len(self.x))], self.mode)  # warm the loop

    def _run(self, x, mode: str):
        from eebench.backends import EarlyExitExecutor

        decider = None if mode in ("aggregation", "backbone") else self.decider
        extra = {"plain_stages": self.plain_stages} if mode == "backbone" else {}
        return EarlyExitExecutor(self.runner, decider).run(
            x, mode=mode, batch_size=self.batch_size, **extra
        )


class EarlyExitSpeedup(_Executor):
    """Realised speedup of the true early exit over aggregation (every exit run) and over the
    plain network (every stage and the final head only; a cascade's last member alone), measured
    by the executor on the same backend, clock and samples."""

    params = [MODELS, BACKENDS, VALIDATION_BATCH_SIZES]
    param_names = ["model", "backend", "batch_size"]

    def setup(self, prepared: PreparedSuite, model: str, backend: str, batch_size: int) -> None:
        self._prepare(prepared, model, backend, batch_size)

    def track_speedup_vs_aggregation(self, prepared, model, backend, batch_size):
        # as `eebench run` validates: the best mean latency of `validation.repeats` runs each,
        # alternating, so a burst of load on a shared machine hits both modes alike
        early, aggregation = [], []
        for _ in range(SUITE.validation.repeats):
            early.append(self._run(self.x, self.mode).mean_latency_ns)
            aggregation.append(self._run(self.x, "aggregation").mean_latency_ns)
        return min(aggregation) / min(early)

    track_speedup_vs_aggregation.unit = "x (measured mean latency, aggregation / early exit)"

    def track_speedup_vs_plain_network(self, prepared, model, backend, batch_size):
        # alternating repeats as above; the executor's backbone mode runs the plain network
        early, plain = [], []
        for _ in range(SUITE.validation.repeats):
            early.append(self._run(self.x, self.mode).mean_latency_ns)
            plain.append(self._run(self.x, "backbone").mean_latency_ns)
        return min(plain) / min(early)

    track_speedup_vs_plain_network.unit = (
        "x (measured mean latency, plain network (no exits) / early exit)"
    )


class LatencyPrediction(_Executor):
    """Measured over predicted latency of the per-sample early-exit run (batch 1, where the
    parts are timed): per sample, its measured latency over the sum of the median latencies
    of the stages and heads it ran; the median over samples (robust to the preemption spikes
    of a shared machine, which a mean would carry). 1.0 = the parts add up to the whole."""

    params = [MODELS, BACKENDS]
    param_names = ["model", "backend"]

    def setup(self, prepared: PreparedSuite, model: str, backend: str) -> None:
        self._prepare(prepared, model, backend, 1)

    def track_latency_ratio(self, prepared, model, backend):
        from eebench.measure.parts import measure_parts, predict_latency
        from eebench.measure.timing import TimingConfig

        m = SUITE.measurement
        timing = TimingConfig(
            warmup=m.warmup,
            min_runs=m.min_repeats,
            min_time_s=m.min_time_s,
            max_time_s=m.max_time_s,
            noisy_cv=m.noisy_cv,
        )
        parts = measure_parts(self.runner, x=self.x[:1], batch_size=1, config=timing)
        early = self._run(self.x, "per-sample")
        predicted = predict_latency(early.exit_indices, parts.stage_ns(), parts.head_ns())
        return float(np.median(early.latency_ns / predicted))

    track_latency_ratio.unit = "measured / predicted latency (median over samples)"

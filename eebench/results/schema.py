"""The tables of a results bundle: names, required columns and what each column means.

Tables are long format (one observation per row) so that pandas/seaborn can
group and plot them without reshaping. Cost values always travel with a
``source`` that says how they were obtained:

* ``analytic`` - counted from the architecture (MACs, parameters, bytes);
* ``measured:<backend>`` - timed or metered on this machine (backend, device
  and threads are in their own columns);
* ``estimated:<profile>`` - predicted from a hardware profile.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TableSpec:
    name: str
    required: tuple[str, ...]
    doc: str


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "exits",
            (
                "model",
                "split",
                "sample_id",
                "label",
                "exit",
                "prediction",
                "correct",
                "max_softmax",
                "score_margin",
                "entropy",
            ),
            "Per sample and exit: label, prediction and the confidence measures (entropy "
            "normalised by log C). Optional per-sample metadata columns (e.g. difficulty).",
        ),
        TableSpec(
            "stage_costs",
            (
                "model",
                "part",
                "index",
                "metric",
                "value",
                "unit",
                "source_kind",
                "source",
                "backend",
                "device",
                "threads",
                "batch_size",
            ),
            "Per model, stage or exit head (part = stage|exit), and source: one row per metric "
            "(macs, params, output_bytes, latency_median_ms, latency_p90_ms, latency_p99_ms, "
            "latency_iqr_ms, latency_cv, energy_mj, ...). source_kind is analytic, measured or "
            "estimated; source carries the backend or profile.",
        ),
        TableSpec(
            "latency_samples",
            (
                "model",
                "part",
                "index",
                "backend",
                "device",
                "threads",
                "batch_size",
                "sample",
                "ms",
            ),
            "Raw latency samples behind every measured latency statistic (for significance tests).",
        ),
        TableSpec(
            "operating_points",
            (
                "model",
                "family",
                "split",
                "policy",
                "confidence",
                "thresholds",
                "calibration",
                "accuracy",
                "expected_macs",
            ),
            "Per model, policy and thresholds: accuracy, exit fractions (exit_frac_<i>), expected "
            "MACs (analytic; final-only pays the plain network's), expected latency/energy with "
            "their source columns, overthinking, lost_by_exiting_early, wasted computation "
            "(wasted_<cost>, wasted_frac_<cost>); every column in results/README.md. "
            "calibration names the target that chose the point on val ('sweep' for plain grid points).",
        ),
        TableSpec(
            "serving",
            (
                "model",
                "backend",
                "scenario",
                "strategy",
                "mode",
                "target_qps",
                "achieved_qps",
                "latency_p99_ms",
                "loadgen_valid",
                "accuracy",
                "answers_equal_record",
            ),
            "Early exit under load: one row per MLCommons LoadGen test (scenario, batching "
            "strategy, deployment mode, target and achieved QPS, p50/p90/p99 latency with "
            "LoadGen's validity verdict, accuracy of the answers served and whether they equal "
            "the exit record's decisions); Server search probes carry max_qps_within_bound.",
        ),
        TableSpec(
            "validation",
            (
                "model",
                "backend",
                "policy",
                "calibration",
                "batch_size",
                "threads",
                "predicted_latency_ms",
                "measured_latency_ms",
                "ratio",
                "decision_overhead_us",
                "agreement",
            ),
            "True early-exit runs of calibrated operating points: mean measured vs mean predicted "
            "per-sample latency with 95% intervals, same clock and loop on both sides (predicted "
            "= exit mix x mean stage, head+copy and decision times from the executor's parts "
            "mode); ratio = measured / predicted; the part that dominates a gap (gap_part, "
            "gap_note); decision overhead; agreement of the executor's exits with the exit "
            "record; speedups (means) vs aggregation (every exit computed) and vs the plain "
            "network (every stage and the final head only; a cascade's last member alone).",
        ),
        TableSpec(
            "skipped",
            ("model", "step", "target", "reason"),
            "What could not run on this machine (e.g. torch-cuda without a GPU) and why.",
        ),
    )
}

"""The report's latency table and the console's noisy-part lines: every number with its count and
interval, percentiles the sample count cannot support as text, noisy medians marked."""

import numpy as np
import pandas as pd

from eebench.measure.timing import Measurement, MeasurementSpec, TimingConfig
from eebench.report.latency import latency_table, measured_parts, noisy_lines
from eebench.suites.tables import measured_rows


def spec(part: str, index: int) -> MeasurementSpec:
    return MeasurementSpec(
        model="m",
        part=part,
        index=index,
        backend="torch-cpu",
        device="cpu",
        threads=1,
        batch_size=1,
    )


class FakeRun:
    label = "run-1"

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        self.tables = tables

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())


def costs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    quiet = Measurement(
        spec("stage", 0),
        tuple(int(v) for v in rng.normal(1e5, 1e3, 700)),
        TimingConfig(),
        (),
        "ci-target",
    )
    loud = Measurement(
        spec("exit", 0),
        tuple(int(v) for v in rng.lognormal(11, 0.4, 80)),
        TimingConfig(),
        (),
        "max-time",
    )
    rows, _ = measured_rows("m", [quiet, loud])
    return rows


def test_measured_parts_in_execution_order_with_counts_and_flags():
    parts = measured_parts(costs())
    assert list(zip(parts["part"], parts["index"])) == [("stage", 0), ("exit", 0)]
    stage, head = parts.iloc[0], parts.iloc[1]
    assert (stage["n"], head["n"]) == (700, 80)
    assert stage["p99_ok"] and not head["p99_ok"] and head["p90_ok"]
    assert not stage["noisy"] and head["noisy"]
    assert stage["median_lo"] < stage["median_ms"] < stage["median_hi"]
    assert head["stop_reason"] == "max-time"


def test_latency_table_says_insufficient_samples_and_noisy_next_to_the_number():
    table = latency_table([FakeRun({"stage_costs": costs()})])
    stage, head = table.iloc[0], table.iloc[1]
    assert stage["p99 [ms]"].startswith("0.1") and "[" in stage["p99 [ms]"]
    assert head["p99 [ms]"] == "insufficient samples (n < 662)"
    assert head["median [ms] (measured, 95% interval)"].endswith(" noisy")
    assert "noisy" not in stage["median [ms] (measured, 95% interval)"]
    assert (stage["n"], stage["stopped by"]) == ("700", "ci-target")


def test_console_lists_only_noisy_parts_with_their_interval():
    lines = noisy_lines(costs())
    assert len(lines) == 1
    assert lines[0].startswith("  m exit 0 on torch-cpu: median ")
    assert "n=80" in lines[0] and "max-time" in lines[0] and "NOISY" in lines[0]
    assert noisy_lines(pd.DataFrame()) == []

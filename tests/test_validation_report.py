"""The report's validation table: mean vs mean with intervals, a ratio that is the quotient of the
two numbers as shown, and the part that dominates the gap of a point outside ±10%."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eebench.measure.latency_validation import validate_latency
from eebench.report.data import RunData
from eebench.report.tables import validation_table


def run_with(rows: list[dict]) -> RunData:
    return RunData("run-a", Path("."), {"status": "complete"}, {"validation": pd.DataFrame(rows)})


def row(model: str, v) -> dict:
    return {
        "model": model,
        "backend": "torch-cpu",
        "policy": "threshold",
        "calibration": "within-1%-of-final",
        "batch_size": 1,
        "threads": 1,
        "decision_overhead_us": 2.5,
        "agreement": 1.0,
        **v.columns(),
    }


def test_ratio_is_the_quotient_of_the_means_as_shown_and_a_miss_names_its_part():
    parts = np.zeros((30, 2, 3), dtype=np.int64)
    parts[:, 0] = (123_456, 7_891, 2_345)
    parts[:, 1] = (654_321, 9_876, 0)
    exits = np.array([0] * 10 + [1] * 20)
    slow = parts.copy()
    slow[:, 1, 0] += 150_000  # stage 1 is 150 us slower in the true run
    slow[:10, 1] = 0  # the ten that leave at exit 0 never run exit 1
    fine = parts.copy()
    fine[:10, 1] = 0
    good = validate_latency(fine.sum(axis=(1, 2)), fine, parts, exits, "wall")
    bad = validate_latency(slow.sum(axis=(1, 2)), slow, parts, exits, "wall")
    table = validation_table([run_with([row("a", good), row("b", bad)])])

    pred = table["predicted mean [ms] (parts x exit mix) [95% CI]"]
    meas = table["measured mean [ms] (true early exit) [95% CI]"]
    for p, m, r in zip(pred, meas, table["measured / predicted"], strict=True):
        shown_p, shown_m = float(p.split(" ")[0]), float(m.split(" ")[0])
        assert r == f"{shown_m / shown_p:.3f}"
    # by hand: predicted = (123456 + 7891 + 2345) + 2/3 * (654321 + 9876) = 576,490 ns
    assert pred.iloc[0].startswith("0.5765")
    assert table["measured / predicted"].iloc[0] == "1.000"
    # 2/3 of the samples pay 150 us more: 676,490 / 576,490 = 1.173
    assert table["measured / predicted"].iloc[1] == "1.173"
    why = table["outside ±10%: the part that dominates the gap"]
    assert why.iloc[0] == ""
    assert why.iloc[1].startswith("stage 1 dominates the gap: +0.1000 of +0.1000 ms (100%)")
    assert (table["clock"] == "wall").all()

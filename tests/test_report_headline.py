"""The report's opening answer: chosen on val, reported on test, measured apart from estimated.

The choice rule is checked on a hand-built table whose test rows would favour other points; the
invariance under a shuffle of the test labels on two real runs of the same suite (the
``two_runs`` fixture of ``test_choices_on_val``).
"""

from __future__ import annotations

import math

import pandas as pd
from test_choices_on_val import two_runs  # noqa: F401  (a fixture, used by name)

from eebench.report.data import load_runs
from eebench.report.headline import headlines
from eebench.suites.summary import pick_per_target, target_group

SOURCE = "measured:torch-cpu,threads=1,batch=1"


def _row(split, model, policy, calibration, accuracy, latency, macs, kind="policy"):
    return {
        "model": model,
        "family": {"a": "cascade", "b": "msdnet"}[model],
        "split": split,
        "policy": policy,
        "kind": kind,
        "confidence": "max_softmax" if kind == "policy" else "",
        "thresholds": f"({latency})" if kind == "policy" else "",
        "calibration": calibration,
        "cost_source": SOURCE,
        "accuracy": accuracy,
        "expected_latency_ms": latency,
        "expected_macs": macs,
        "expected_energy_mj": math.nan,
        "energy_source": "",
    }


def _table() -> pd.DataFrame:
    """Two models. Plain networks (final-only) on val: a 0.90, b 0.95, so the reference is 0.95
    and a candidate needs val accuracy >= 0.94. The oracle is cheaper and more accurate than
    everything (a bound: never chosen). Test rows are set to favour the points val rejects."""
    rows = []
    for split in ("val", "test"):
        flip = split == "test"
        rows += [
            _row(split, "a", "final-only", "baseline", 0.90, 1.0, 100, kind="baseline"),
            _row(split, "b", "final-only", "baseline", 0.95, 4.0, 400, kind="baseline"),
            _row(split, "b", "oracle", "baseline", 0.99, 0.1, 10, kind="baseline"),
            # accuracy target: a is cheapest but 0.93 < 0.94 on val; b/threshold (0.945, 2.0 ms)
            # beats b/patience (0.96, 3.0 ms) on val cost
            _row(split, "a", "threshold", "within-1%-of-final", 0.99 if flip else 0.93, 0.5, 50),
            _row(split, "b", "threshold", "within-1%-of-final", 0.80 if flip else 0.945, 2.0, 200),
            _row(split, "b", "patience", "within-1%-of-final", 0.99 if flip else 0.96, 3.0, 300),
            # per-model budgets: one target; nobody reaches 0.94 on val, so the most accurate
            _row(split, "a", "threshold", "budget-5e+01-macs", 0.70 if flip else 0.91, 0.5, 50),
            _row(split, "b", "threshold", "budget-2e+02-macs", 0.99 if flip else 0.92, 2.0, 200),
        ]
    return pd.DataFrame(rows)


def test_pick_per_target_chooses_on_val_across_models_and_reports_test():
    picks = pick_per_target(_table()).set_index("target")
    assert set(picks.index) == {"within-1%-of-final", "budget (per model)"}
    acc = picks.loc["within-1%-of-final"]
    assert (acc["model"], acc["policy"]) == ("b", "threshold")
    assert acc["val_accuracy"] == 0.945 and acc["accuracy"] == 0.80  # reported on test
    assert acc["reference_val_accuracy"] == 0.95
    assert (acc["final_accuracy"], acc["final_latency_ms"]) == (0.95, 4.0)  # b's plain network
    assert "cheapest on val" in acc["rule"]
    budget = picks.loc["budget (per model)"]
    assert (budget["model"], budget["calibration"]) == ("b", "budget-2e+02-macs")
    assert "the most accurate" in budget["rule"]
    assert not picks["policy"].isin(["oracle", "final-only", "aggregation"]).any()


def test_target_group_merges_per_model_budgets_only():
    assert target_group("budget-1.52e+05-macs") == "budget (per model)"
    assert target_group("budgeted-batch-2.5e+05-macs") == "budgeted-batch (per model)"
    assert target_group("within-1%-of-final") == "within-1%-of-final"
    assert target_group("exit-distribution-0.5-0.5") == "exit-distribution-0.5-0.5"


def test_shuffling_the_test_labels_leaves_the_answer_unchanged(two_runs):  # noqa: F811
    plain, shuffled = two_runs
    a = headlines(load_runs([plain.path]))
    b = headlines(load_runs([shuffled.path]))
    assert [h.source for h in a] == [h.source for h in b]
    assert all(h.kind == "estimated" for h in a)  # the suite only estimates: no measured table
    chosen = [
        "calibration target (val)",
        "recommended model",
        "policy",
        "val accuracy [%] (chose it)",
    ]
    for ha, hb in zip(a, b, strict=True):
        assert not ha.table.empty
        pd.testing.assert_frame_equal(ha.table[chosen], hb.table[chosen])
    # the shuffle reached the numbers shown: test accuracies differ somewhere
    col = "test accuracy [%] (plain network)"
    assert any(not ha.table[col].equals(hb.table[col]) for ha, hb in zip(a, b, strict=True))

"""Nothing is chosen on the test split: every choice a run makes reads val only, and baselines and
bounds (oracle, aggregation, final-only) are never on a front nor picked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import yaml

import eebench.evaluation as evaluation
from eebench.evaluation.pareto import front_chosen_on_val, is_reference, pareto_front
from eebench.report.derive import front_for_display
from eebench.results import Run
from eebench.suites.runner import RunOptions, run_suite
from eebench.suites.summary import pick_operating_points, summary_table

SUITE = {
    "name": "val-only",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 400}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 4, "lr": 0.02, "batch_size": 32},
        },
        {
            "name": "branchynet-lenet",
            "id": "lenet",
            "config": {},
            "training": {"scheme": "joint", "epochs": 3, "lr": 0.01, "batch_size": 32},
        },
    ],
    "policies": [
        {
            "name": "threshold",
            "confidence": ["max_softmax", "entropy"],
            "thresholds": {"start": 0, "stop": 1, "num": 21},
        },
        {"name": "patience", "confidence": ["max_softmax"], "thresholds": [1, 2]},
        {
            "name": "learned-gate",
            "confidence": ["max_softmax"],
            "thresholds": {"start": 0, "stop": 1, "num": 21},
        },
    ],
    "baselines": ["oracle", "final-only", "aggregation"],
    "calibration": {"accuracy_within": [0.02, 0.1], "budget_fractions": [0.6, 0.9]},
    "backends": ["simulated:jetson-orin-nano-8gb-15w"],
    "validation": {"enabled": False},
}
ID = ["model", "policy", "confidence", "calibration", "thresholds"]


def _shuffling_test_labels(real):
    """record_exits, but the test split's record gets its labels permuted (seeded)."""

    def record_exits(model, split, *args, **kwargs):
        rec = real(model, split, *args, **kwargs)
        if split.name != "test":
            return rec
        labels = np.random.default_rng(123).permutation(rec.labels)
        return dataclasses.replace(rec, labels=labels)

    return record_exits


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same suite run twice from the same checkpoints: as is, and with test labels shuffled."""
    root = tmp_path_factory.mktemp("val-only")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    opts = dict(out_root=root / "results", cache_root=root / "cache", progress=False, report=False)
    plain = run_suite(str(path), RunOptions(run_id="plain", **opts))
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(evaluation, "record_exits", _shuffling_test_labels(evaluation.record_exits))
        shuffled = run_suite(str(path), RunOptions(run_id="shuffled", **opts))
    finally:
        mp.undo()
    return Run.open(plain), Run.open(shuffled)


def _ops(run: Run) -> pd.DataFrame:
    return run.table("operating_points").fillna({"thresholds": "", "calibration": ""})


def _calibrated(ops: pd.DataFrame, split: str) -> set[tuple]:
    rows = ops[(ops["split"] == split) & ~ops["calibration"].isin(["sweep", "baseline"])]
    return set(map(tuple, rows[ID].itertuples(index=False)))


def _fronts(ops: pd.DataFrame) -> dict[str, set[tuple]]:
    """The fronts the report draws for recommendations: per family on analytic MACs, and per
    family and cost source on expected latency (point identities only)."""
    ops = ops.assign(run="r", accuracy_pct=100 * ops["accuracy"])
    macs = front_for_display(
        ops.drop_duplicates(subset=[*ID, "split"]),
        "expected_macs",
        "accuracy_pct",
        ["run", "family"],
        "test",
        ignore=["cost_source"],
    )
    out = {"macs": set(map(tuple, macs[["family", *ID]].itertuples(index=False)))}
    for source, sub in ops.groupby("cost_source"):
        lat = front_for_display(
            sub, "expected_latency_ms", "accuracy_pct", ["run", "family"], "test"
        )
        out[source] = set(map(tuple, lat[["family", *ID]].itertuples(index=False)))
    return out


def test_shuffling_the_test_labels_changes_no_choice(two_runs):
    plain, shuffled = two_runs
    a, b = _ops(plain), _ops(shuffled)
    # the shuffle reached the run: test accuracies moved, val rows did not
    test_a = a[a["split"] == "test"].reset_index(drop=True)
    test_b = b[b["split"] == "test"].reset_index(drop=True)
    assert not np.allclose(test_a["accuracy"], test_b["accuracy"])
    val_a = a[a["split"] == "val"].reset_index(drop=True)
    val_b = b[b["split"] == "val"].reset_index(drop=True)
    pd.testing.assert_frame_equal(val_a, val_b)

    # calibrated thresholds (every policy, the learned gate included), on both splits' rows
    chosen = _calibrated(a, "val")
    assert {"threshold", "patience", "learned-gate"} <= {c[1] for c in chosen}
    assert _calibrated(b, "val") == chosen
    assert _calibrated(a, "test") == _calibrated(b, "test") == chosen

    # the summary's picks: same operating point per model and cost source, reported on test
    picks_a = pick_operating_points(a)
    picks_b = pick_operating_points(b)
    assert len(picks_a) == 2  # two models, one cost source
    cols = ["model", "cost_source", *ID[1:]]
    pd.testing.assert_frame_equal(picks_a[cols], picks_b[cols])
    pd.testing.assert_series_equal(picks_a["val_accuracy"], picks_b["val_accuracy"])
    assert not picks_a["policy"].isin(["oracle", "aggregation", "final-only"]).any()
    table = summary_table({"operating_points": a})
    assert table["thresholds"].tolist() == picks_a["thresholds"].tolist()
    assert table["test acc"].tolist() == [round(v, 4) for v in picks_a["accuracy"]]

    # the fronts used for recommendations: the same points, none of them a baseline or a bound
    fronts_a, fronts_b = _fronts(a), _fronts(b)
    assert fronts_a == fronts_b
    assert all(fronts_a.values())
    for front in fronts_a.values():
        assert not {p[2] for p in front} & {"oracle", "aggregation", "final-only"}


def test_summary_reports_the_test_row_of_the_point_chosen_on_val(two_runs):
    plain, _ = two_runs
    ops = _ops(plain)
    for _, pick in pick_operating_points(ops).iterrows():
        same = ops[
            (ops["model"] == pick["model"])
            & (ops["cost_source"] == pick["cost_source"])
            & (ops["policy"] == pick["policy"])
            & (ops["confidence"] == pick["confidence"])
            & (ops["calibration"] == pick["calibration"])
            & (ops["thresholds"] == pick["thresholds"])
        ]
        val, test = same[same["split"] == "val"], same[same["split"] == "test"]
        assert len(val) == len(test) == 1
        assert pick["val_accuracy"] == val["accuracy"].iloc[0]
        assert pick["accuracy"] == test["accuracy"].iloc[0]
        assert pick["expected_latency_ms"] == test["expected_latency_ms"].iloc[0]


# ----------------------------------------------------------------- unit: bounds never chosen


def _point(split, policy, calibration, thresholds, accuracy, macs, latency, kind="policy"):
    return {
        "model": "m",
        "family": "f",
        "split": split,
        "policy": policy,
        "kind": kind,
        "confidence": "max_softmax" if kind == "policy" else "-",
        "thresholds": thresholds,
        "calibration": calibration,
        "accuracy": accuracy,
        "expected_macs": macs,
        "expected_latency_ms": latency,
        "cost_source": "estimated:x",
    }


def dominated_by_references() -> pd.DataFrame:
    """Threshold points A, B, C and calibrated points P, Q on val and test; the oracle and the
    aggregation baseline beat every one of them on both splits (cheaper and more accurate).

    On val the front is A, B (C, P, Q are dominated by B); on test it would be A, Q, C. Among calibrated
    points within 0.01 of final-only's val accuracy (0.80), P is cheaper on val; on test Q is."""
    rows = []
    val = {"A": (0.70, 1.0), "B": (0.85, 2.0), "C": (0.84, 3.0), "P": (0.80, 2.5), "Q": (0.81, 2.8)}
    test = {
        "A": (0.69, 1.0),
        "B": (0.75, 2.0),
        "C": (0.90, 3.0),
        "P": (0.70, 2.9),
        "Q": (0.83, 2.4),
    }
    for split, points in (("val", val), ("test", test)):
        for name, (acc, cost) in points.items():
            cal = "sweep" if name in "ABC" else f"target-{name}"
            rows.append(_point(split, "threshold", cal, f"({name})", acc, cost, cost / 10))
        rows.append(_point(split, "oracle", "baseline", "", 0.99, 0.5, 0.05, kind="baseline"))
        rows.append(_point(split, "aggregation", "baseline", "", 0.95, 0.9, 0.09, kind="baseline"))
        rows.append(_point(split, "final-only", "baseline", "", 0.80, 4.0, 0.4, kind="baseline"))
    return pd.DataFrame(rows)


def test_bounds_and_baselines_are_never_on_a_front_even_when_they_dominate():
    ops = dominated_by_references()
    assert is_reference(ops).sum() == 6
    val = ops[ops["split"] == "val"]
    assert pareto_front(val)["thresholds"].tolist() == ["(A)", "(B)"]
    # without the kind column, the run table's calibration = "baseline" marks them too
    no_kind = val.drop(columns="kind")
    assert not pareto_front(no_kind)["policy"].isin(["oracle", "aggregation"]).any()


def test_front_is_found_on_val_and_shown_with_the_test_rows():
    ops = dominated_by_references()
    front = front_chosen_on_val(ops, "expected_macs", "accuracy", by=["family"])
    assert front["thresholds"].tolist() == ["(A)", "(B)"]  # not A, Q, C as test would say
    assert (front["split"] == "test").all()
    assert front["accuracy"].tolist() == [0.69, 0.75]
    assert front["val_accuracy"].tolist() == [0.70, 0.85]
    # relabelling test (any test accuracies) moves the points, not the choice
    ops2 = ops.copy()
    ops2.loc[ops2["split"] == "test", "accuracy"] = np.linspace(
        1, 0, (ops2["split"] == "test").sum()
    )
    again = front_chosen_on_val(ops2, "expected_macs", "accuracy", by=["family"])
    assert again["thresholds"].tolist() == ["(A)", "(B)"]


def test_summary_picks_on_val_never_a_baseline_and_reports_test():
    ops = dominated_by_references()
    picks = pick_operating_points(ops)
    assert len(picks) == 1
    pick = picks.iloc[0]
    assert (pick["policy"], pick["calibration"], pick["thresholds"]) == (
        "threshold",
        "target-P",
        "(P)",
    )
    assert pick["chosen_by"] == "expected_latency_ms"
    assert (pick["val_accuracy"], pick["val_cost"]) == (0.80, 0.25)
    assert (pick["accuracy"], pick["expected_macs"]) == (0.70, 2.9)
    assert (pick["final_accuracy"], pick["final_macs"]) == (0.80, 4.0)


def test_report_table_marks_the_oracle_as_a_bound_and_the_others_as_baselines(two_runs):
    from eebench.report.data import load_runs
    from eebench.report.tables import operating_points_table

    plain, _ = two_runs
    table = operating_points_table(load_runs([plain.path]))
    # policy labels carry the confidence measure: 'threshold (max_softmax)', 'oracle (-)'
    by_policy = dict(zip(table["policy"].str.split(" ").str[0], table["calibration"]))
    assert by_policy["oracle"].startswith("bound (reads the labels")
    assert by_policy["final-only"].startswith("baseline")
    assert by_policy["aggregation"].startswith("baseline")
    assert (
        not table.loc[table["policy"] == "threshold (max_softmax)", "calibration"]
        .str.contains("baseline|bound")
        .any()
    )

"""Calibration on val, results on test: accuracy drop, budget, MSDNet budgeted batch, exit distribution."""

import numpy as np
import pytest

from eebench.evaluation import (
    CalibrationError,
    CostVector,
    ExitRecord,
    calibrate_accuracy_drop,
    calibrate_budget,
    calibrate_budgeted_batch,
    calibrate_exit_distribution,
    calibration_table,
    evaluate,
)
from eebench.policies import (
    LearnedGatePolicy,
    PolicyError,
    create_policy,
    geometric_exit_distribution,
)

E = 5
MACS = CostVector.macs(np.cumsum([100.0, 150.0, 200.0, 250.0, 300.0]))
LATENCY = CostVector(
    np.cumsum([0.2, 0.25, 0.3, 0.35, 0.4]), unit="ms", source="measured:torch-cpu,threads=1,batch=1"
)
COSTS = [MACS, LATENCY]


def synthetic_record(n, seed, split, model_key="model-a"):
    """Continuous logits; later exits are right more often and more confident when right."""
    rng = np.random.default_rng(seed)
    c = 6
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, E, c))
    skill = np.linspace(0.4, 3.0, E)
    right = rng.random((n, E)) < np.linspace(0.45, 0.92, E)
    logits[np.arange(n)[:, None], np.arange(E)[None, :], labels[:, None]] += right * skill * 2
    return ExitRecord(
        logits.astype(np.float32), labels, np.arange(n), model_key, f"fp-{split}", split
    )


@pytest.fixture(scope="module")
def val():
    return synthetic_record(600, 0, "val")


@pytest.fixture(scope="module")
def test():
    return synthetic_record(600, 1, "test")


def fine_grid(policy, record, costs=COSTS):
    return evaluate(record, policy, np.linspace(0, 1, 2001), costs)


@pytest.mark.parametrize("measure", ["max_softmax", "score_margin", "entropy"])
@pytest.mark.parametrize("delta", [0.0, 0.02])
def test_accuracy_drop_is_the_cheapest_point_within_delta(val, test, measure, delta):
    policy = create_policy("threshold", confidence=measure)
    cal = calibrate_accuracy_drop(val, test, policy, delta, COSTS)
    final_acc = val.exit_accuracy[-1]
    assert cal.val["accuracy"] >= final_acc - delta - 1e-12
    # no threshold on a fine grid does better
    grid = fine_grid(policy, val)
    ok = grid[grid["accuracy"] >= final_acc - delta - 1e-12]
    assert cal.val["expected_macs"] <= ok["expected_macs"].min() + 1e-9
    assert cal.val["expected_macs"] < MACS.values[-1]  # early exit actually saves something here
    # the test row is the same thresholds applied to the test record
    again = evaluate(test, policy, [cal.thresholds[0]], COSTS).iloc[0]
    assert cal.test["accuracy"] == again["accuracy"]
    assert cal.test["expected_macs"] == again["expected_macs"]
    table = cal.to_frame()
    assert table["split"].tolist() == ["val", "test"]
    assert table["calibration"].eq("accuracy-drop").all() and table["target_delta"].eq(delta).all()


def test_budget_gives_the_best_accuracy_within_budget(val, test):
    policy = create_policy("threshold", confidence="entropy")
    budget = 600.0
    cal = calibrate_budget(val, test, policy, budget, COSTS)
    assert cal.val["expected_macs"] <= budget
    grid = fine_grid(policy, val)
    assert cal.val["accuracy"] >= grid.loc[grid["expected_macs"] <= budget, "accuracy"].max()
    # a budget on measured latency works the same way and keeps its source label
    lat = calibrate_budget(val, test, policy, 0.8, COSTS, cost="latency")
    assert lat.val["expected_latency"] <= 0.8
    assert lat.test["latency_source"] == LATENCY.source
    with pytest.raises(CalibrationError, match="below every operating point"):
        calibrate_budget(val, test, policy, 50.0, COSTS)


def test_budgeted_batch_geometric_search(val, test):
    policy = create_policy("threshold", confidence="max_softmax")
    results = [calibrate_budgeted_batch(val, test, policy, b, COSTS) for b in (300.0, 500.0, 800.0)]
    qs = [r.details["q"] for r in results]
    assert qs == sorted(qs) and qs[0] < qs[-1]  # more budget: more samples reach late exits
    for budget, cal in zip((300.0, 500.0, 800.0), results):
        assert cal.val["expected_macs"] <= budget
        # the val exit distribution is the geometric one for the q found (up to rounding)
        target = geometric_exit_distribution(cal.details["q"], E)
        realised = np.array([cal.val[f"exit_frac_{i}"] for i in range(E)])
        np.testing.assert_allclose(realised, target, atol=2 / val.num_samples)
        assert cal.details["target_exit_distribution"] == pytest.approx(tuple(target))
        # the search used the budget: a slightly larger q would exceed it (unless q hit its bound)
        if cal.details["q"] < 1e4 * 0.999:
            assert cal.val["expected_macs"] > budget * 0.95
        # per-exit thresholds are applied unchanged to test
        again = evaluate(test, policy, cal.thresholds[None, :], COSTS).iloc[0]
        assert cal.test["accuracy"] == again["accuracy"]
    with pytest.raises(CalibrationError, match="raise the budget"):
        calibrate_budgeted_batch(val, test, policy, 90.0, COSTS)
    everything = calibrate_budgeted_batch(val, test, policy, 1e9, COSTS)
    assert everything.val[f"exit_frac_{E - 1}"] == pytest.approx(1.0, abs=1e-3)


def test_exit_distribution_is_realised_on_val(val, test):
    policy = create_policy("threshold", confidence="score_margin")
    target = [0.3, 0.25, 0.2, 0.15, 0.1]
    cal = calibrate_exit_distribution(val, test, policy, target, COSTS)
    realised = [cal.val[f"exit_frac_{i}"] for i in range(E)]
    np.testing.assert_allclose(realised, target)
    assert cal.to_frame()["target_exit_distribution"].iloc[1] == tuple(target)
    with pytest.raises(PolicyError, match="5 fractions"):
        calibrate_exit_distribution(val, test, policy, [0.5, 0.5], COSTS)


def test_learned_gate_and_patience_calibrate_too(val, test):
    gate = LearnedGatePolicy().fit(val)
    cal = calibrate_accuracy_drop(val, test, gate, 0.01, COSTS)
    assert cal.val["accuracy"] >= val.exit_accuracy[-1] - 0.01 - 1e-12
    assert cal.val["confidence"].startswith("gate(")
    pat = calibrate_budget(val, test, create_policy("patience"), 700.0, COSTS)
    assert pat.val["expected_macs"] <= 700.0
    table = calibration_table([cal, pat])
    assert len(table) == 4 and set(table["policy"]) == {"learned-gate", "patience"}


def test_calibration_refuses_what_it_cannot_do(val, test):
    with pytest.raises(PolicyError, match="nothing to calibrate"):
        calibrate_budget(val, test, create_policy("oracle"), 500.0, COSTS)
    other = synthetic_record(100, 3, "test", model_key="model-b")
    with pytest.raises(CalibrationError, match="same checkpoint"):
        calibrate_budget(val, other, create_policy("threshold"), 500.0, COSTS)
    with pytest.raises(CalibrationError, match="no cost vector named 'energy'"):
        calibrate_budget(val, test, create_policy("threshold"), 500.0, COSTS, cost="energy")
    with pytest.raises(CalibrationError, match="delta"):
        calibrate_accuracy_drop(val, test, create_policy("threshold"), -0.1, COSTS)

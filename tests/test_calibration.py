"""Calibration on val, results on test: accuracy drop, budget, MSDNet budgeted batch, exit distribution."""

import math

import numpy as np
import pytest

from eebench.evaluation import (
    CalibrationError,
    CostVector,
    ExitRecord,
    budgeted_batch_sweep,
    calibrate_accuracy_drop,
    calibrate_budget,
    calibrate_budgeted_batch,
    calibrate_exit_distribution,
    calibrate_idk,
    calibration_table,
    evaluate,
)
from eebench.policies import (
    MSDNET_Q_VALUES,
    LearnedGatePolicy,
    PolicyError,
    create_policy,
    exit_counts_for_distributions,
    geometric_exit_distribution,
    thresholds_for_exit_distributions,
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


# ----------------------------------------------------------------- MSDNet's published rule


def msdnet_distribution_as_published(q, num_exits):
    """The exit distribution of MSDNet's budgeted batch protocol, from the paper's text: a float32
    prior q, p_k proportional to q^k for k = 1..E, normalised (torch float32, as published)."""
    import torch

    prior = torch.full((1,), q, dtype=torch.float32)
    probs = torch.exp(torch.log(prior) * torch.arange(1, num_exits + 1, dtype=torch.float32))
    return probs / probs.sum()


def msdnet_rule(conf, p):
    """MSDNet's threshold rule as a plain loop over samples: per exit k, the floor(n * p_k)-th most
    confident sample not yet filtered out sets the threshold (none: nobody passes); everyone at or
    above it leaves there; the final exit takes the rest."""
    n, m = len(conf), len(conf[0])
    thresholds = [float("inf")] * m
    filtered = [False] * n
    for k in range(m - 1):
        wanted = math.floor(float(np.float32(n) * np.float32(p[k])))
        count = 0
        for i in sorted(range(n), key=lambda i: -conf[i][k]):
            if not filtered[i]:
                count += 1
                if count == wanted:
                    thresholds[k] = conf[i][k]
                    break
        for i in range(n):
            if conf[i][k] >= thresholds[k]:
                filtered[i] = True
    thresholds[m - 1] = -float("inf")
    return thresholds


def apply_rule(conf, correct, macs, thresholds):
    """(exit counts, correct count, expected MACs) of per-exit thresholds, one sample at a time."""
    counts, right, paid = [0] * len(thresholds), 0, 0.0
    for row, ok in zip(conf, correct):
        k = next(k for k in range(len(thresholds)) if row[k] >= thresholds[k])
        counts[k] += 1
        right += bool(ok[k])
        paid += macs[k]
    return counts, right, paid / len(conf)


def test_msdnet_rounding_reproduces_the_published_rule_for_every_q(val, test):
    policy = create_policy("threshold", confidence="max_softmax")
    sweep = budgeted_batch_sweep(val, test, policy, [MACS])  # MSDNet's 40 q, one call
    assert len(sweep.q) == 40 and sweep.q[0] == 0.05 and sweep.q[-1] == 2.0
    val_conf = val.confidence("max_softmax").tolist()
    test_conf = test.confidence("max_softmax").tolist()
    for k, q in enumerate(MSDNET_Q_VALUES):
        p = msdnet_distribution_as_published(q, E)
        np.testing.assert_array_equal(sweep.distributions[k], p.numpy())
        want = msdnet_rule(val_conf, p.tolist())
        np.testing.assert_array_equal(sweep.thresholds[k], want, err_msg=f"q={q}")
        for points, conf, record in ((sweep.val, val_conf, val), (sweep.test, test_conf, test)):
            counts, right, macs = apply_rule(conf, record.correct.tolist(), MACS.values, want)
            np.testing.assert_array_equal(points.exit_counts[k], counts, err_msg=f"q={q}")
            assert points.correct_counts[k] == right
            assert points.expected("macs")[k] == pytest.approx(macs, rel=1e-12)
    frame = sweep.to_frame()
    assert len(frame) == 80 and set(frame["split"]) == {"val", "test"}
    assert (frame["rounding"] == "msdnet").all()


def test_msdnet_counts_by_hand_and_closed_exits():
    # n = 10, p = (0.25, 0.35, 0.4): floor(2.5) = 2 at exit 0, floor(3.5) = 3 at exit 1, 5 last
    p = np.array([[0.25, 0.35, 0.4]], dtype=np.float32)
    np.testing.assert_array_equal(exit_counts_for_distributions(p, 10, "msdnet"), [[2, 3, 5]])
    # cumulative rounding: rint(2.5) = 2, rint(6.0) = 6, 10 -> (2, 4, 4)
    np.testing.assert_array_equal(exit_counts_for_distributions(p, 10, "cumulative"), [[2, 4, 4]])
    scores = np.column_stack([np.arange(10.0), np.arange(10.0)[::-1], np.zeros(10)])
    th = thresholds_for_exit_distributions(scores, p, "msdnet")[0]
    # exit 0: the 2nd largest score (8) -> samples 8, 9; exit 1: 3rd largest of samples 0..7 (7, 6, 5)
    assert th.tolist() == [8.0, 7.0, -np.inf]
    # every score tied at exit 0: all 10 leave there, exit 1 cannot reach its 3: nobody passes it
    tied = np.zeros((10, 3))
    assert thresholds_for_exit_distributions(tied, p, "msdnet")[0].tolist() == [
        0.0,
        np.inf,
        -np.inf,
    ]
    # a count of 0 (floor(10 * 0.05) = 0) also closes the exit
    p0 = np.array([[0.05, 0.05, 0.9]], dtype=np.float32)
    assert thresholds_for_exit_distributions(scores, p0, "msdnet")[0][:2].tolist() == [np.inf] * 2


def test_msdnet_rounding_differs_from_cumulative_and_calibrates_budgets(val, test):
    policy = create_policy("threshold", confidence="max_softmax")
    msd = budgeted_batch_sweep(val, test, policy, [MACS], rounding="msdnet")
    cum = budgeted_batch_sweep(val, test, policy, [MACS], rounding="cumulative")
    assert not np.array_equal(msd.val.exit_counts, cum.val.exit_counts)  # the option matters
    cal = calibrate_budgeted_batch(val, test, policy, 500.0, COSTS, rounding="msdnet")
    assert cal.val["expected_macs"] <= 500.0 and cal.details["rounding"] == "msdnet"
    p = msdnet_distribution_as_published(cal.details["q"], E)
    want = msdnet_rule(val.confidence("max_softmax").tolist(), p.tolist())
    np.testing.assert_array_equal(cal.thresholds, want)
    with pytest.raises(CalibrationError, match="unknown rounding 'nearest'"):
        calibrate_budgeted_batch(val, test, policy, 500.0, COSTS, rounding="nearest")


# ----------------------------------------------------------------- IDK cascades, patience grid


def test_idk_calibration_minimises_its_objective_on_val(val, test):
    two = val.subset(slice(None))  # a two-member cascade: the first and the last exit
    pair = [
        ExitRecord(
            r.logits[:, [0, E - 1]],
            r.labels,
            r.sample_ids,
            r.model_key,
            r.split_fingerprint,
            r.split,
        )
        for r in (two, test)
    ]
    macs = CostVector.macs(MACS.values[[0, E - 1]])
    policy = create_policy("idk-cascade", error_weight=2.0)
    cal = calibrate_idk(pair[0], pair[1], policy, [macs])
    assert cal.method == "idk-objective" and cal.target["error_weight"] == 2.0
    # by hand: every threshold where a val decision changes; J = cost / cost_all + 2 x error
    conf = pair[0].confidence("max_softmax")
    right = pair[0].correct

    def objective(t):
        early = conf[:, 0] >= t
        paid = np.where(early, macs.values[0], macs.values[1]) / macs.values[1]
        wrong = ~np.where(early, right[:, 0], right[:, 1])
        return float(np.mean(paid + 2.0 * wrong))

    best = min(objective(t) for t in [*np.unique(conf[:, 0]), np.inf])
    assert objective(cal.thresholds[0]) == pytest.approx(best, abs=1e-12)
    assert cal.details["objective_val"] == pytest.approx(best, abs=1e-12)
    again = evaluate(pair[1], policy, cal.thresholds[None, :], [macs]).iloc[0]
    assert cal.test["accuracy"] == again["accuracy"]  # chosen on val, applied unchanged to test
    within = calibrate_idk(val, test, create_policy("idk-cascade"), COSTS, accuracy_within=0.01)
    assert within.val["accuracy"] >= val.exit_accuracy[-1] - 0.01 - 1e-12
    assert within.val["expected_macs"] < MACS.values[-1]
    with pytest.raises(CalibrationError, match="needs the 'idk-cascade' policy"):
        calibrate_idk(val, test, create_policy("threshold"), COSTS)


def test_patience_is_calibrated_on_the_grid_only(val, test):
    policy = create_policy("patience")
    grid = np.array([1.0, 2.0])
    for cal in (
        calibrate_accuracy_drop(val, test, policy, 0.01, COSTS, thresholds=grid),
        calibrate_accuracy_drop(val, test, policy, 0.5, COSTS, thresholds=grid),
        calibrate_budget(val, test, policy, 1e9, COSTS, thresholds=grid),
    ):
        assert set(cal.thresholds.tolist()) <= {1.0, 2.0}
    # without a grid: every patience count 0 .. E-1 (E-1 never leaves early), never inf
    free = calibrate_accuracy_drop(val, test, policy, 0.0, COSTS)
    assert np.isfinite(free.thresholds).all() and free.thresholds[0] in range(E)
    with pytest.raises(CalibrationError, match="grid of whole values; budgeted-batch"):
        calibrate_budgeted_batch(val, test, policy, 500.0, COSTS)
    with pytest.raises(CalibrationError, match="exit-distribution calibration sets"):
        calibrate_exit_distribution(val, test, policy, [0.2] * 5, COSTS)


def test_a_suite_calibrates_each_policy_its_own_way(val, test):
    """What ``eebench run`` calibrates: the IDK cascade by its objective and accuracy targets,
    patience on the suite's grid with no rank-based targets, thresholds on every target with the
    suite's rounding."""
    from eebench.suites.runner import _calibrations
    from eebench.suites.schema import CalibrationSpec

    spec = CalibrationSpec(
        accuracy_within=[0.01],
        budget_fractions=[0.5],
        exit_distributions=[[0.2] * 5],
        rounding="msdnet",
    )

    def run(policy, grid):
        cals = _calibrations(policy, val, test, COSTS, spec, 1600.0, "m", np.asarray(grid))
        return [(method, fn()) for method, fn in cals]

    idk = run(create_policy("idk-cascade", error_weight=3.0), [0.5])
    assert [m for m, _ in idk] == ["idk-objective", "idk-accuracy"]
    assert idk[0][1].target["error_weight"] == 3.0
    patience = run(create_policy("patience"), [1.0, 2.0])
    assert [m for m, _ in patience] == ["accuracy-drop", "budget"]
    assert all(set(c.thresholds.tolist()) <= {1.0, 2.0} for _, c in patience)
    threshold = run(create_policy("threshold"), [0.5])
    assert [m for m, _ in threshold] == [
        "accuracy-drop",
        "budget",
        "budgeted-batch",
        "exit-distribution",
    ]
    assert threshold[2][1].details["rounding"] == "msdnet"
    assert threshold[3][1].details["rounding"] == "msdnet"

"""The learned accuracy-cost exit policies (Bolukbasi et al., EPNet, McGill & Perona's actor and
critics, Guan et al.): what they learn, how their trade-off sweeps, that nothing is fitted on test,
and that the map of the seed documents' methods names only things that exist.

Records are seeded and synthetic, built so that the right decisions are known by hand: on the
"separable" record exit 0 is right exactly on its confident samples and exits 1 and 2 are always
right, so for every accuracy weight theta in (1/4, 1] the reward theta [correct] - (1 - theta) cost
(cost 1/3, 2/3, 1 by exit depth) is maximised by leaving a confident sample at exit 0 and every
other at exit 1.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from eebench.evaluation import CostVector, exit_indices
from eebench.policies import (
    LogitsView,
    NotFittedError,
    PolicyError,
    create_policy,
    list_policies,
)
from eebench.policies.dynamic_routing import expected_reward_and_gradient
from eebench.policies.epnet import solve_stopping_mdp
from eebench.policies.tradeoff import CrossFittedTradeoff, TradeoffPolicy

LEARNED = [
    "bolukbasi-early-exit",
    "epnet",
    "routing-actor",
    "routing-pragmatic-critic",
    "routing-optimistic-critic",
    "guan-cascade",
]
ROOT = Path(__file__).resolve().parents[1]


def graded_record(n: int, seed: int, exits: int = 4, classes: int = 10) -> LogitsView:
    """Later exits are more often right; a sample's difficulty lowers every exit's margin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    difficulty = rng.uniform(0.0, 1.0, n)
    logits = rng.normal(0.0, 1.0, (n, exits, classes))
    for i in range(exits):
        logits[np.arange(n), i, y] += 3.0 * (i + 1) * (1.2 - difficulty)
    return LogitsView(logits.astype(np.float32), y)


def separable_record(n: int, seed: int, classes: int = 4) -> tuple[LogitsView, np.ndarray]:
    """Exit 0 right exactly on its confident ("easy") samples; exits 1 and 2 always right.
    Returns the record and the optimal exit of every sample (0 if easy, else 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    easy = rng.uniform(size=n) < 0.5
    wrong = (y + 1 + rng.integers(0, classes - 1, n)) % classes
    logits = rng.normal(0.0, 0.1, (n, 3, classes))
    rows = np.arange(n)
    logits[rows, 0, np.where(easy, y, wrong)] += np.where(easy, 4.0, 0.6)
    logits[rows, 1, y] += 2.0
    logits[rows, 2, y] += 3.0
    return LogitsView(logits, y), np.where(easy, 0, 1)


@pytest.fixture(scope="module")
def graded() -> tuple[LogitsView, LogitsView]:
    return graded_record(300, seed=0), graded_record(300, seed=1)


@pytest.fixture(scope="module")
def fitted(graded) -> dict[str, TradeoffPolicy]:
    val, _ = graded
    return {name: create_policy(name).fit(val) for name in LEARNED}


# ----------------------------------------------------------------- a plain per-sample reference


def softmax_row(logits: np.ndarray) -> list[float]:
    values = [float(v) for v in logits]
    top = max(values)
    e = [math.exp(v - top) for v in values]
    total = sum(e)
    return [v / total for v in e]


def features_row(policy: TradeoffPolicy, logits: np.ndarray) -> list[float]:
    """The policy's features of one exit, computed by hand from the softmax."""
    p = softmax_row(logits)
    if policy.name == "guan-cascade":
        return sorted(p, reverse=True)
    ordered = sorted(p, reverse=True)
    entropy = -sum(v * math.log(v) for v in p if v > 0)
    conf = {
        "max_softmax": ordered[0],
        "score_margin": ordered[0] - ordered[1],
        "entropy": min(max(1.0 - entropy / math.log(len(p)), 0.0), 1.0),
    }
    return [conf[f] for f in policy.features]


def reference_leaves(policy: TradeoffPolicy, exit_index: int, x: list[float]) -> list[bool]:
    """Whether each grid policy leaves, from the fitted parameters, one rule at a time."""
    state = policy._state
    if policy.name == "epnet":
        edges = state["edges"][exit_index]
        state_index = sum(1 for edge in edges if edge <= x[0])
        return [bool(v) for v in state["decisions"][exit_index][state_index]]
    out = []
    for k in range(policy.thetas.shape[0]):
        z = float(state["intercept"][exit_index, k])
        for f, value in enumerate(x):
            mu = float(state["mean"][exit_index, f])
            s = float(state["scale"][exit_index, f])
            z += float(state["coef"][exit_index, k, f]) * ((value - mu) / s)
        out.append(z >= 0.0)
    return out


def reference_exit(policy: TradeoffPolicy, logits: np.ndarray, theta: float) -> int:
    """Leave at the first exit where some policy trained with accuracy weight >= theta leaves."""
    exits = logits.shape[0]
    for i in range(exits - 1):
        leaves = reference_leaves(policy, i, features_row(policy, logits[i]))
        score = max([t for t, leave in zip(policy.thetas, leaves, strict=True) if leave] + [0.0])
        if score >= theta:
            return i
    return exits - 1


@pytest.mark.parametrize("name", LEARNED)
def test_vectorised_exits_equal_a_per_sample_reference(name, fitted, graded):
    policy = fitted[name]
    _, test = graded
    thetas = [0.0, 0.3, 0.6, 0.9, 0.97, 0.995, 1.0, np.inf]
    got = exit_indices(policy.scores(test), np.array(thetas))
    for t, theta in enumerate(thetas):
        want = [reference_exit(policy, test.logits[n], theta) for n in range(test.logits.shape[0])]
        assert got[t].tolist() == want, f"{name} at theta={theta}"
    assert len(set(got[3].tolist())) > 1, "theta=0.9 should send samples to 2+ exits"


# ----------------------------------------------------------------- the paper's rule, learned


@pytest.mark.parametrize("name", LEARNED)
def test_learns_to_leave_exactly_where_the_reward_says(name):
    """A confident (right) exit 0 leaves there, the rest at exit 1. Checked at theta 0.5 and 0.75:
    nearer 1 a wrong "go on" for a confident sample costs almost nothing in the reward (it only
    wastes (1 - theta) / 3), so a regularised or linear learner may rightly stop caring about it."""
    val, _ = separable_record(400, seed=3)
    test, optimal = separable_record(400, seed=4)
    policy = create_policy(name).fit(val)
    for theta in (0.5, 0.75):
        got = exit_indices(policy.scores(test), np.array([theta]))[0]
        agree = float((got == optimal).mean())
        assert agree >= 0.97, f"{name} at theta={theta}: {agree:.3f} of samples leave optimally"
    assert (exit_indices(policy.scores(test), np.array([0.0]))[0] == 0).all()


def test_epnet_backward_induction_equals_a_plain_loop():
    """The MDP solution against the Bellman recursion written out state by state."""
    rng = np.random.default_rng(7)
    sizes = [3, 4, 2, 3]
    accuracy = [rng.uniform(size=s) for s in sizes]
    transitions = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        t = rng.uniform(size=(a, b))
        transitions.append(t / t.sum(axis=1, keepdims=True))
    cost = np.array([0.2, 0.45, 0.7, 1.0])
    for theta in (0.3, 0.8, 0.97):
        got = solve_stopping_mdp(accuracy, transitions, cost, theta)
        value = [theta * a - (1 - theta) * cost[3] for a in accuracy[3]]
        for i in (2, 1, 0):
            new_value = []
            for s in range(sizes[i]):
                now = theta * accuracy[i][s] - (1 - theta) * cost[i]
                later = sum(transitions[i][s][t] * value[t] for t in range(sizes[i + 1]))
                assert bool(got[i][s]) == (now >= later), (theta, i, s)
                new_value.append(max(now, later))
            value = new_value


def test_actor_gradient_equals_finite_differences():
    rng = np.random.default_rng(2)
    r = rng.normal(size=(5, 4))
    z = rng.normal(size=(5, 3))
    value, grad = expected_reward_and_gradient(z, r)
    p = 1 / (1 + np.exp(-z))
    # the expected reward written as a sum over the exits a sample may leave from
    reach = np.cumprod(np.concatenate([np.ones((5, 1)), 1 - p], axis=1), axis=1)
    leave = reach * np.concatenate([p, np.ones((5, 1))], axis=1)
    np.testing.assert_allclose(value, (leave * r).sum(axis=1), rtol=1e-12)
    h = 1e-6
    for i in range(3):
        dz = np.zeros_like(z)
        dz[:, i] = h
        numeric = (
            expected_reward_and_gradient(z + dz, r)[0] - expected_reward_and_gradient(z - dz, r)[0]
        ) / (2 * h)
        np.testing.assert_allclose(grad[:, i], numeric, rtol=1e-6, atol=1e-9)


def test_weighted_logistic_and_ridge_solve_the_objectives_sklearn_solves():
    """Bolukbasi's weighted classifier (Newton) against sklearn's L2 logistic regression on the
    same weighted objective; the critics' ridge against sklearn's Ridge."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from eebench.policies.bolukbasi import weighted_logistic
    from eebench.policies.tradeoff import ridge

    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200)) > 0
    w = rng.uniform(0.0, 2.0, 200)
    w[:20] = 0.0
    b, coef = weighted_logistic(x, y, w, regularization=0.7)
    keep = w > 0
    clf = LogisticRegression(C=0.7, tol=1e-10, max_iter=10_000)
    clf.fit(x[keep], y[keep], sample_weight=w[keep] * (keep.sum() / w[keep].sum()))
    np.testing.assert_allclose(coef, clf.coef_[0], atol=1e-5)
    np.testing.assert_allclose(b, clf.intercept_[0], atol=1e-5)
    target = x @ np.array([0.3, 0.0, -1.0]) + rng.normal(size=200)
    b, coef = ridge(x, target, alpha=5.0)
    reg = Ridge(alpha=5.0).fit(x, target)
    np.testing.assert_allclose(coef, reg.coef_, atol=1e-10)
    np.testing.assert_allclose(b, reg.intercept_, atol=1e-10)


# ----------------------------------------------------------------- the trade-off sweeps


@pytest.mark.parametrize("name", LEARNED)
def test_more_weight_on_cost_never_costs_more(name, fitted, graded):
    policy = fitted[name]
    _, test = graded
    cost = np.array([1.0, 2.5, 4.5, 7.0])
    thetas = np.concatenate([np.linspace(0.0, 1.0, 41), policy.thetas, [np.inf]])
    thetas = np.sort(thetas)
    exits = exit_indices(policy.scores(test), thetas)
    expected = cost[exits].mean(axis=1)
    assert np.all(np.diff(expected) >= 0), f"{name}: expected cost not monotone in theta"
    assert expected[0] == cost[0] and expected[-1] == cost[-1]
    assert len(np.unique(expected)) >= 3, f"{name}: the sweep should span several points"


def test_the_cost_vector_steers_the_policy(graded):
    """Cheaper late exits (a flat cost vector) make the same theta leave later."""
    val, test = graded
    steep = CostVector(np.array([1.0, 2.0, 3.0, 4.0]), unit="MACs", source="analytic")
    flat = CostVector(np.array([1.0, 1.01, 1.02, 1.03]), unit="MACs", source="analytic")
    mean_exit = {}
    for label, vector in (("steep", steep), ("flat", flat)):
        policy = create_policy("routing-optimistic-critic").use_costs([vector]).fit(val)
        assert policy.cost_source.startswith("macs (analytic)")
        mean_exit[label] = exit_indices(policy.scores(test), np.array([0.9]))[0].mean()
    assert mean_exit["flat"] > mean_exit["steep"]


def test_guan_charges_the_runs_energy_and_says_when_it_cannot():
    macs = CostVector(np.array([1.0, 2.0, 3.0]), unit="MACs", source="analytic")
    energy = CostVector(
        np.array([0.5, 2.0, 2.5]), unit="mJ", source="measured:torch-cpu", name="energy_0"
    )
    policy = create_policy("guan-cascade").use_costs([macs, energy])
    assert policy.cost_source == "energy_0 (measured:torch-cpu)"
    assert policy.confidence_label == "tradeoff(energy_0)"
    np.testing.assert_allclose(policy._normalised_cost(3), [0.2, 0.8, 1.0])
    fallback = create_policy("guan-cascade").use_costs([macs])
    assert fallback.cost_source == "macs (analytic); no 'energy' cost in this run"
    assert fallback.confidence_label == "tradeoff(macs)"
    with pytest.raises(PolicyError, match="no cost vector named 'latency'"):
        create_policy("epnet", cost="latency").use_costs([energy])


# ----------------------------------------------------------------- nothing fitted on test


@pytest.mark.parametrize("name", LEARNED)
def test_shuffled_test_labels_change_nothing(name, fitted, graded):
    val, test = graded
    policy = fitted[name]
    shuffled = LogitsView(test.logits, np.random.default_rng(5).permutation(test.labels))
    np.testing.assert_array_equal(policy.scores(test), policy.scores(shuffled))
    refit = create_policy(name).fit(val)
    np.testing.assert_array_equal(refit.scores(shuffled), policy.scores(test))
    # the calibration view scores test with the deployed policy too
    view = policy.for_calibration(val)
    assert isinstance(view, CrossFittedTradeoff)
    np.testing.assert_array_equal(view.scores(shuffled), policy.scores(test))


@pytest.mark.parametrize("name", ["bolukbasi-early-exit", "epnet", "routing-pragmatic-critic"])
def test_val_is_scored_out_of_fold(name, graded):
    """Each val row's calibration score comes from a policy fitted without that row's fold."""
    from eebench.policies.gate import cross_fitting_folds

    val, _ = graded
    policy = create_policy(name, folds=3, seed=1).fit(val)
    oof = policy.for_calibration(val).scores(val)
    fold = cross_fitting_folds(val.logits.shape[0], 3, 1)
    for f in range(3):
        held = fold == f
        others = LogitsView(val.logits[~held], val.labels[~held])
        part = create_policy(name, folds=3, seed=1).fit(others)
        np.testing.assert_array_equal(
            oof[held], part.scores(LogitsView(val.logits[held], val.labels[held]))
        )
    assert not np.array_equal(oof, policy.scores(val)), "in-sample and out-of-fold coincide"


# ----------------------------------------------------------------- bad input


def test_bad_options_and_unfitted_use_are_refused(graded):
    val, _ = graded
    with pytest.raises(PolicyError, match="cost_weights must be >= 0"):
        create_policy("bolukbasi-early-exit", cost_weights=[0.1, -1.0])
    with pytest.raises(PolicyError, match="folds .* must be an integer >= 2"):
        create_policy("routing-actor", folds=1)
    with pytest.raises(PolicyError, match="cost must name a run's cost vector.*'enrgy'"):
        create_policy("guan-cascade", cost="enrgy")
    with pytest.raises(PolicyError, match="bins must be an integer >= 1"):
        create_policy("epnet", bins=0)
    with pytest.raises(NotFittedError, match="call policy.fit"):
        create_policy("guan-cascade").scores(val)
    policy = create_policy("epnet").fit(val)
    with pytest.raises(PolicyError, match="fitted for 4 exits"):
        policy.scores(graded_record(10, seed=0, exits=3))
    with pytest.raises(PolicyError, match="has no labels"):
        create_policy("epnet").fit(LogitsView(val.logits))


# ----------------------------------------------------------------- the map of the seeds


def test_every_registry_name_in_the_methods_map_exists():
    from eebench.models import list_models

    text = (ROOT / "docs" / "methods.md").read_text()
    names = re.findall(r"`(model|policy):([a-z0-9][a-z0-9_.-]*)`", text)
    assert len(names) >= 10, "the map should name the registry entries it points at"
    known = {"model": set(list_models()), "policy": set(list_policies())}
    missing = sorted(f"{kind}:{name}" for kind, name in names if name not in known[kind])
    assert not missing, f"docs/methods.md names registry entries that do not exist: {missing}"
    for name in LEARNED:
        assert f"`policy:{name}`" in text, f"the map does not point at policy '{name}'"


# ----------------------------------------------------------------- through a suite run


def test_a_suite_run_charges_the_estimated_energy_and_validates_the_learned_points(tmp_path):
    """A tiny run: Guan et al.'s policy charges the hardware profile's estimated energy (the run
    has no meter), every learned point is calibrated on val and reported on test, and the true
    early-exit executor takes the calibrated decisions (agreement 1.0)."""
    import pandas as pd
    import yaml

    from eebench.suites.runner import RunOptions, run_suite

    suite = {
        "name": "tiny-learned",
        "dataset": {"name": "digits", "seed": 0, "options": {"limit": 300}},
        "models": [
            {
                "name": "big-little",
                "id": "bl",
                "config": {"width": 4},
                "training": {"scheme": "cascade", "epochs": 3, "lr": 0.02, "batch_size": 32},
            }
        ],
        "policies": [
            {"name": "guan-cascade", "thresholds": {"start": 0, "stop": 1, "num": 11}},
            {"name": "bolukbasi-early-exit", "thresholds": {"start": 0, "stop": 1, "num": 11}},
        ],
        "baselines": ["final-only"],
        "calibration": {"accuracy_within": [0.05], "budget_fractions": [0.9]},
        "backends": ["torch-cpu", "simulated:jetson-orin-nano-8gb-15w"],
        "measurement": {
            "warmup": 1,
            "min_repeats": 3,
            "min_time_s": 0.0,
            "max_time_s": 0.2,
            "energy": False,
        },
        "validation": {"samples": 10, "repeats": 1},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    logged: list[str] = []
    options = RunOptions(
        out_root=tmp_path / "runs", log=logged.append, progress=False, report=False
    )
    run = run_suite(str(path), options)
    ops = pd.read_csv(run / "operating_points.csv")
    labels = ops.groupby("policy")["confidence"].unique().to_dict()
    assert list(labels["guan-cascade"]) == ["tradeoff(energy_1)"]
    assert list(labels["bolukbasi-early-exit"]) == ["tradeoff(macs)"]
    assert any(
        "guan-cascade: its reward charges energy_1 (estimated:jetson-orin-nano-8gb-15w)" in line
        for line in logged
    )
    chosen = ops[ops["calibration"] == "within-5%-of-final"]
    assert set(chosen["policy"]) == {"guan-cascade", "bolukbasi-early-exit"}
    assert set(chosen["split"]) == {"val", "test"}
    validation = pd.read_csv(run / "validation.csv")
    learned = validation[validation["policy"].isin(["guan-cascade", "bolukbasi-early-exit"])]
    assert len(learned) > 0 and (learned["agreement"] == 1.0).all()

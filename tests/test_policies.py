"""Confidence measures, every registered policy on hand-made records, and the online decider."""

import zlib

import numpy as np
import pytest

from eebench.cli import main
from eebench.errors import ConfigError
from eebench.evaluation import CostVector, ExitRecord, evaluate, exit_indices
from eebench.policies import (
    CONFIDENCE,
    POLICIES,
    LearnedGatePolicy,
    LogitsView,
    NonFiniteLogitsError,
    NotFittedError,
    PolicyError,
    confidence,
    create_policy,
    geometric_exit_distribution,
    idk_thresholds,
    idk_thresholds_for_accuracy,
    list_policies,
    patience_counters,
    thresholds_for_exit_distribution,
)
from eebench.registry import UnknownNameError


def make_record(logits, labels, split="val"):
    logits = np.asarray(logits, dtype=np.float32)
    return ExitRecord(
        logits, np.asarray(labels), np.arange(len(labels)), "model-a", "data-a", split
    )


def random_record(n=60, e=4, c=5, seed=0, split="val"):
    """Later exits are more often right and more confident, with integer logits for ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.integers(-2, 3, size=(n, e, c)).astype(np.float32)
    boost = (rng.random((n, e)) < np.linspace(0.3, 0.9, e)) * np.arange(1, e + 1)
    logits[np.arange(n)[:, None], np.arange(e)[None, :], labels[:, None]] += boost
    return make_record(logits, labels, split)


def make_policy(name, record):
    policy = create_policy(name)
    # learned policies (the gate, the accuracy-cost policies) are fitted on the record itself
    return policy.fit(record) if getattr(policy, "fitted", True) is False else policy


def run_decider(policy, record, thresholds, rng):
    """True early exit on the record: exit by exit, the batch shrinks; rows in a shuffled order."""
    n, e = record.num_samples, record.num_exits
    decider = policy.decider(thresholds, num_exits=e, labels=record.labels)
    decider.reset(n)
    active = rng.permutation(n)
    exits = np.full(n, -1)
    preds = np.full(n, -1)
    for i in range(e):
        logits = record.logits[active, i]
        fire = decider.decide(i, logits, active)
        preds[active[fire]] = decider.predict(i, logits, active)[fire]
        exits[active[fire]] = i
        active = active[~fire]
    assert active.size == 0
    return exits, preds


# ----------------------------------------------------------------- confidence measures


def test_confidence_measures_known_values():
    uniform = np.zeros((1, 4))
    assert confidence("max_softmax", uniform)[0] == pytest.approx(0.25)
    assert confidence("score_margin", uniform)[0] == 0.0
    assert confidence("entropy", uniform)[0] == pytest.approx(0.0, abs=1e-12)
    assert confidence("entropy", uniform)[0] >= 0.0  # clipped, so theta = 0 always fires
    sure = np.array([[50.0, 0.0, 0.0, 0.0]])
    for name in CONFIDENCE.names():
        assert confidence(name, sure)[0] == pytest.approx(1.0)
    two = np.array([[np.log(3.0), 0.0]])  # softmax (0.75, 0.25)
    assert confidence("max_softmax", two)[0] == pytest.approx(0.75)
    assert confidence("score_margin", two)[0] == pytest.approx(0.5)
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert confidence("entropy", two)[0] == pytest.approx(1 - h / np.log(2))


def test_every_measure_grows_with_confidence():
    logits = np.stack([np.array([t, 0.0, 0.0]) for t in (0.0, 0.5, 1.0, 2.0, 4.0)])
    for name in CONFIDENCE.names():
        assert np.all(np.diff(confidence(name, logits)) > 0), name


def test_measures_are_vectorised_over_any_leading_shape():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3, 7))
    for name in CONFIDENCE.names():
        full = confidence(name, logits)
        assert full.shape == (6, 3)
        for n in range(6):
            for e in range(3):
                assert confidence(name, logits[n, e]) == full[n, e]  # bit-identical per row


# ----------------------------------------------------------------- registry and CLI


def test_registry_lists_policies_and_baselines():
    names = list_policies()
    assert {
        "threshold",
        "patience",
        "learned-gate",
        "idk-cascade",
        "oracle",
        "final-only",
        "aggregation",
    } <= set(names)
    kinds = {n: POLICIES.get(n).kind for n in names}
    assert kinds["oracle"] == kinds["final-only"] == kinds["aggregation"] == "baseline"
    assert kinds["threshold"] == "policy"


def test_unknown_policy_and_option_are_named():
    with pytest.raises(UnknownNameError, match="Did you mean 'threshold'"):
        create_policy("treshold")
    with pytest.raises(ConfigError, match="did you mean 'confidence'"):
        create_policy("threshold", confidnce="entropy")
    with pytest.raises(
        UnknownNameError, match="confidence measure 'entrpy'.*Did you mean 'entropy'"
    ):
        create_policy("threshold", confidence="entrpy")


def test_cli_lists_policies(capsys):
    assert main(["list", "policies"]) == 0
    out = capsys.readouterr().out
    for name in list_policies():
        assert name in out
    assert "baseline" in out and "max_softmax" in out


# ----------------------------------------------------------------- hand-made records


def test_threshold_tie_leaves_and_just_above_does_not():
    # exit 0: softmax (0.5, 0.5) -> max softmax exactly 0.5; exit 1 confident
    rec = make_record([[[0.0, 0.0], [5.0, 0.0]]], [0])
    policy = create_policy("threshold")
    df = evaluate(rec, policy, [0.5, np.nextafter(0.5, 1.0)])
    assert df["exit_frac_0"].tolist() == [1.0, 0.0]
    assert df["exit_frac_1"].tolist() == [0.0, 1.0]


def test_thresholds_zero_and_one():
    rec = random_record(seed=3)
    for measure in CONFIDENCE.names():
        df = evaluate(rec, create_policy("threshold", confidence=measure), [0.0, 1.0])
        assert df.loc[0, "exit_frac_0"] == 1.0, measure  # every confidence is >= 0
        assert df.loc[0, "accuracy"] == pytest.approx(rec.exit_accuracy[0])
        # nothing is exactly 1 here: theta = 1 is the final-only operating point
        assert df.loc[1, f"exit_frac_{rec.num_exits - 1}"] == 1.0, measure
        assert df.loc[1, "accuracy"] == pytest.approx(rec.exit_accuracy[-1])


def test_every_sample_leaves_at_exit_zero_when_confident():
    logits = np.zeros((5, 3, 4), dtype=np.float32)
    logits[:, :, 2] = 60.0  # saturated: every confidence measure is exactly 1.0
    rec = make_record(logits, [2] * 5)
    strictest = {
        "patience": 0.0,
        "learned-gate": 0.99,
    }  # the gate of an always-right exit says 1 - 1e-6
    for name in list_policies():
        policy = make_policy(name, rec)
        th = [strictest.get(name, 1.0)] if policy.uses_thresholds else None
        df = evaluate(rec, policy, th)
        expected_exit = 2 if name in ("final-only", "aggregation") else 0
        assert df.loc[0, f"exit_frac_{expected_exit}"] == 1.0, name
        assert df.loc[0, "accuracy"] == 1.0, name


def test_per_exit_thresholds_and_final_exit_takes_the_rest():
    # confidences per exit (max softmax of two classes): sample 0 (0.5, 0.88, 0.5), sample 1 (0.88, 0.5, 0.5)
    a = np.log(0.88 / 0.12)
    rec = make_record([[[0, 0], [a, 0], [0, 0]], [[a, 0], [0, 0], [0, 0]]], [0, 0])
    policy = create_policy("threshold")
    df = evaluate(rec, policy, np.array([[0.9, 0.8, 5.0], [0.8, 0.9, 0.0]]))
    assert df.loc[0, ["exit_frac_0", "exit_frac_1", "exit_frac_2"]].tolist() == [0.0, 0.5, 0.5]
    assert df.loc[1, ["exit_frac_0", "exit_frac_1", "exit_frac_2"]].tolist() == [0.5, 0.0, 0.5]
    assert df.loc[0, "thresholds"] == (0.9, 0.8, 5.0)
    assert np.isnan(df.loc[0, "threshold"])


def test_single_exit_model_every_policy():
    rng = np.random.default_rng(5)
    rec = make_record(rng.normal(size=(12, 1, 3)), rng.integers(0, 3, 12))
    macs = CostVector.macs([7.0])
    for name in list_policies():
        policy = make_policy(name, rec)
        th = [0.0, 0.5, 2.0] if policy.uses_thresholds else None
        df = evaluate(rec, policy, th, [macs])
        assert (df["exit_frac_0"] == 1.0).all(), name
        assert (df["accuracy"] == rec.exit_accuracy[0]).all(), name
        assert (df["expected_macs"] == 7.0).all(), name
        assert (df["overthinking"] == 0.0).all()


def test_patience_counts_consecutive_agreement():
    # predictions per exit: 1 1 2 2 2 (class = argmax)
    preds = [1, 1, 2, 2, 2]
    logits = np.zeros((1, 5, 3), dtype=np.float32)
    logits[0, np.arange(5), preds] = 3.0
    rec = make_record(logits, [2])
    np.testing.assert_array_equal(patience_counters(rec.predictions), [[0, 1, 0, 1, 2]])
    df = evaluate(rec, create_policy("patience"), [0, 1, 2, 3])
    exits = df[[f"exit_frac_{i}" for i in range(5)]].to_numpy().argmax(axis=1)
    assert exits.tolist() == [0, 1, 4, 4]
    assert df["accuracy"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_oracle_leaves_at_first_correct_exit_or_final():
    logits = np.zeros((3, 3, 2), dtype=np.float32)
    logits[0, :, 0] = [1, 1, 1]  # right from exit 0 (label 0)
    logits[1, :, 1] = [1, 0, 0]  # wrong, right, right
    logits[2, :, 1] = [1, 1, 1]  # never right
    rec = make_record(logits, [0, 0, 0])
    df = evaluate(rec, create_policy("oracle"), None, [CostVector.macs([1, 2, 4])])
    assert df.loc[0, ["exit_frac_0", "exit_frac_1", "exit_frac_2"]].tolist() == pytest.approx(
        [1 / 3, 1 / 3, 1 / 3]
    )
    assert df.loc[0, "accuracy"] == pytest.approx(2 / 3)
    assert df.loc[0, "kind"] == "baseline"
    assert df.loc[0, "wasted_macs"] == 0.0
    with pytest.raises(PolicyError, match="labels"):
        create_policy("oracle").decider(num_exits=3)


def test_aggregation_averages_softmax_and_costs_the_final_exit():
    # exits disagree: exit 0 and 1 lean to class 0, the final exit picks class 1 narrowly
    logits = np.array([[[2.0, 0.0], [2.0, 0.0], [0.0, 0.1]]], dtype=np.float32)
    rec = make_record(logits, [0])
    macs = CostVector.macs([1.0, 3.0, 6.0])
    agg = evaluate(rec, create_policy("aggregation"), None, [macs])
    final = evaluate(rec, create_policy("final-only"), None, [macs])
    assert final.loc[0, "accuracy"] == 0.0
    assert agg.loc[0, "accuracy"] == 1.0
    assert agg.loc[0, "expected_macs"] == final.loc[0, "expected_macs"] == 6.0
    assert agg.loc[0, "rescued"] == 1.0
    with pytest.raises(PolicyError, match="without thresholds"):
        evaluate(rec, create_policy("aggregation"), [0.5])


def test_idk_cascade_decides_like_threshold():
    rec = random_record(seed=7)
    th = np.linspace(0, 1, 11)
    a = evaluate(rec, create_policy("idk-cascade", confidence="entropy"), th)
    b = evaluate(rec, create_policy("threshold", confidence="entropy"), th)
    assert a["policy"].eq("idk-cascade").all()
    cols = ["accuracy"] + [f"exit_frac_{i}" for i in range(rec.num_exits)]
    assert a[cols].equals(b[cols])


def test_nan_and_inf_logits_are_refused_by_the_decider():
    decider = create_policy("threshold").decider(0.5, num_exits=3)
    decider.reset(4)
    with pytest.raises(NonFiniteLogitsError, match="sample row 3.*exit 1"):
        decider.decide(1, np.array([[0.0, 1.0], [np.inf, 0.0]]), np.array([0, 3]))
    with pytest.raises(NonFiniteLogitsError):
        LogitsView(np.full((1, 1, 2), np.nan))


def test_decider_threshold_shapes_are_checked():
    policy = create_policy("threshold")
    with pytest.raises(PolicyError, match="3 thresholds given for 4 exits"):
        policy.decider([0.1, 0.2, 0.3], num_exits=4)
    with pytest.raises(PolicyError, match="needs thresholds"):
        policy.decider(None)
    with pytest.raises(PolicyError, match="NaN"):
        policy.decider(np.nan)
    decider = policy.decider(0.5, num_exits=2)
    with pytest.raises(PolicyError, match="reset"):
        decider.decide(0, np.zeros((1, 2)), np.array([0]))


# ----------------------------------------------------------------- learned gate


def test_learned_gate_must_be_fitted_and_round_trips(tmp_path):
    val = random_record(n=200, seed=11)
    test = random_record(n=80, seed=12, split="test")
    gate = LearnedGatePolicy()
    with pytest.raises(NotFittedError, match="fit"):
        evaluate(test, gate, [0.5])
    with pytest.raises(NotFittedError):
        gate.decider(0.5)
    gate.fit(val)
    scores = gate.scores(test)
    assert scores.shape == (80, 4) and np.all((scores > 0) & (scores < 1))
    # the gate learns something: its probability is higher where the exit is right
    assert scores[test.correct].mean() > scores[~test.correct].mean()
    path = gate.save(tmp_path / "gate.npz")
    loaded = LearnedGatePolicy.load(path)
    np.testing.assert_array_equal(loaded.scores(test), scores)
    state = gate.state_dict()
    assert set(state) == {"coef", "intercept", "mean", "scale"} and state["coef"].shape == (4, 3)
    with pytest.raises(PolicyError, match="fitted for 4 exits"):
        gate.scores(random_record(e=3))


def test_learned_gate_on_an_exit_that_is_always_right():
    logits = np.zeros((10, 2, 2), dtype=np.float32)
    logits[:, 0, 0] = np.linspace(1, 3, 10)  # exit 0 always right
    logits[:5, 1, 1] = 2.0  # exit 1 right only for the last five
    logits[5:, 1, 0] = 2.0
    rec = make_record(logits, [0] * 10)
    gate = LearnedGatePolicy().fit(rec)
    scores = gate.scores(rec)
    assert np.all(scores[:, 0] > 0.99)
    df = evaluate(rec, gate, [0.9])
    assert df.loc[0, "exit_frac_0"] == 1.0


# ----------------------------------------------------------------- online decider == vectorised


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_decider_matches_vectorised_sample_by_sample(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    rec = random_record(n=80, e=5, c=4, seed=21)
    policy = make_policy(name, rec)
    if policy.uses_thresholds:
        scores = policy.scores(rec)
        shared = np.unique(np.concatenate([[0.0, 0.5, 1.0, 2.0], rng.choice(scores.ravel(), 6)]))
        per_exit = np.column_stack([rng.choice(scores[:, i], 4) for i in range(rec.num_exits)])
        settings = [*shared, *per_exit]
    else:
        settings = [None]
    preds_table = policy.predictions(rec)
    for setting in settings:
        exits, preds = run_decider(policy, rec, setting, rng)
        if setting is None:
            th = policy.fixed_thresholds()
        else:
            th = np.atleast_1d(setting) if np.ndim(setting) == 0 else setting[None, :]
        expected = exit_indices(policy.scores(rec), th)[0]
        np.testing.assert_array_equal(exits, expected, err_msg=f"{name} {setting}")
        np.testing.assert_array_equal(preds, preds_table[np.arange(rec.num_samples), expected])


# ----------------------------------------------------------------- target exit distributions


def test_geometric_exit_distribution():
    np.testing.assert_allclose(geometric_exit_distribution(1.0, 4), [0.25] * 4)
    p = geometric_exit_distribution(0.5, 3)
    np.testing.assert_allclose(p, np.array([1, 0.5, 0.25]) / 1.75)
    assert geometric_exit_distribution(1e6, 5)[-1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(PolicyError, match="positive"):
        geometric_exit_distribution(0.0, 3)


def test_thresholds_realise_target_distribution():
    rng = np.random.default_rng(2)
    scores = rng.random((1000, 4))  # distinct values: the target is met exactly
    target = [0.4, 0.3, 0.2, 0.1]
    th = thresholds_for_exit_distribution(scores, target)
    exits = exit_indices(scores, th[None, :])[0]
    np.testing.assert_array_equal(np.bincount(exits, minlength=4), [400, 300, 200, 100])
    assert th[-1] == -np.inf
    th0 = thresholds_for_exit_distribution(scores, [0.0, 0.0, 0.0, 1.0])
    assert np.all(exit_indices(scores, th0[None, :])[0] == 3)
    with pytest.raises(PolicyError, match="sum to 1"):
        thresholds_for_exit_distribution(scores, [0.5, 0.5, 0.5, 0.0])


# ----------------------------------------------------------------- Shallow-Deep Networks' fallback


def sdn_rule(conf, preds, thresholds):
    """Shallow-Deep Networks' early exit, from the paper's text, one sample at a time: leave at the
    first exit whose confidence reaches its threshold; when none does, the sample has run the whole
    network and answers with its most confident exit (the first of equals)."""
    exits, answers = [], []
    last = len(conf[0]) - 1
    for row_conf, row_pred in zip(conf, preds):
        for k in range(last + 1):
            if k < last and row_conf[k] >= thresholds[k]:
                exits.append(k)
                answers.append(row_pred[k])
                break
        else:
            best = max(range(last + 1), key=lambda k: (row_conf[k], -k))
            exits.append(last)
            answers.append(row_pred[best])
    return exits, answers


@pytest.mark.parametrize("measure", ["max_softmax", "entropy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_most_confident_fallback_reproduces_sdn(measure, seed):
    rec = random_record(n=120, e=5, c=4, seed=40 + seed)
    sdn = create_policy("threshold", confidence=measure, fallback="most-confident")
    conf = rec.confidence(measure)
    rng = np.random.default_rng(seed)
    settings = [np.full(5, v) for v in (0.0, 0.6, 0.9, 1.0)]
    settings += [np.array([rng.choice(conf[:, i]) for i in range(5)]) for _ in range(4)]
    for th in settings:
        exits, answers = sdn_rule(conf.tolist(), rec.predictions.tolist(), th.tolist())
        point = evaluate(rec, sdn, th[None, :]).iloc[0]
        want_acc = np.mean(np.asarray(answers) == rec.labels)
        assert point["accuracy"] == want_acc, th
        for i in range(5):
            assert point[f"exit_frac_{i}"] == exits.count(i) / rec.num_samples
        # the online decider (shrinking batch, rows shuffled) gives every sample the same answer
        got_exits, got_preds = run_decider(sdn, rec, th, rng)
        assert got_exits.tolist() == exits and got_preds.tolist() == answers
    # the fallback changes answers only: exits and costs are those of the final-exit fallback
    plain = create_policy("threshold", confidence=measure)
    th = np.full(5, 0.9)
    a, b = evaluate(rec, sdn, th[None, :]).iloc[0], evaluate(rec, plain, th[None, :]).iloc[0]
    assert [a[f"exit_frac_{i}"] for i in range(5)] == [b[f"exit_frac_{i}"] for i in range(5)]


def test_most_confident_fallback_by_hand():
    # 3 exits, threshold 0.9 everywhere: nobody leaves early
    # sample 0: exit 0 most confident (right), final wrong -> SDN right, final-only answer wrong
    # sample 1: final most confident and right
    logits = [
        [[3.0, 0.0], [0.0, 1.0], [0.0, 0.5]],  # label 0
        [[0.5, 0.0], [0.0, 1.0], [0.0, 2.0]],  # label 1
    ]
    rec = make_record(logits, [0, 1])
    macs = CostVector.macs([10, 20, 30])
    sdn = evaluate(rec, create_policy("threshold", fallback="most-confident"), [0.96], [macs])
    final = evaluate(rec, create_policy("threshold"), [0.96], [macs])
    assert sdn.loc[0, "accuracy"] == 1.0 and final.loc[0, "accuracy"] == 0.5
    assert sdn.loc[0, "exit_frac_2"] == 1.0
    assert sdn.loc[0, "expected_macs"] == 30.0  # both samples ran every stage
    assert sdn.loc[0, "confidence"] == "max_softmax+most-confident"
    with pytest.raises(PolicyError, match="unknown fallback 'best'.*final, most-confident"):
        create_policy("threshold", fallback="best")


# ----------------------------------------------------------------- IDK cascades


def idk_cost(scores, correct, cost, thresholds, weight):
    """The IDK objective by hand: per sample, the member that answers (first with confidence >=
    its threshold, else the last), its cumulative cost over the whole cascade's, plus the weight
    if that answer is wrong; averaged."""
    total = 0.0
    for s, ok in zip(scores.tolist(), correct.tolist()):
        k = next((i for i in range(len(s) - 1) if s[i] >= thresholds[i]), len(s) - 1)
        total += cost[k] / cost[-1] + weight * (not ok[k])
    return total / len(scores)


def small_cascade(seed, members, n=40):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, members)), 2)
    # a member is more often right when it is confident, and later members are better
    correct = rng.random((n, members)) < 0.3 + 0.5 * scores * np.linspace(0.7, 1.0, members)
    return scores, correct, np.cumsum(np.linspace(1.0, 4.0, members))


@pytest.mark.parametrize("weight", [0.05, 0.5, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_idk_thresholds_are_the_global_optimum_of_a_two_member_cascade(seed, weight):
    scores, correct, cost = small_cascade(seed, 2)
    th = idk_thresholds(scores, correct, cost, weight)
    every = [*np.unique(scores[:, 0]), np.inf]
    best = min(idk_cost(scores, correct, cost, [t, -np.inf], weight) for t in every)
    assert idk_cost(scores, correct, cost, th, weight) == pytest.approx(best, abs=1e-12)
    assert th[0] in every and th[-1] == -np.inf


@pytest.mark.parametrize("seed", range(3))
def test_idk_thresholds_of_three_members_no_single_member_can_improve(seed):
    scores, correct, cost = small_cascade(seed, 3)
    th = idk_thresholds(scores, correct, cost, 1.0)
    j = idk_cost(scores, correct, cost, th, 1.0)
    assert j <= idk_cost(scores, correct, cost, [np.inf, np.inf, -np.inf], 1.0)
    for i in range(2):
        for t in [*np.unique(scores[:, i]), np.inf]:
            moved = th.copy()
            moved[i] = t
            assert idk_cost(scores, correct, cost, moved, 1.0) >= j - 1e-12


def test_idk_weights_trade_cost_for_accuracy_and_targets_are_met():
    scores, correct, cost = small_cascade(7, 3, n=200)
    rows = np.arange(200)

    def outcome(th):
        exits = exit_indices(scores, th[None, :])[0]
        return correct[rows, exits].mean(), cost[exits].mean()

    cheap, careful = (outcome(idk_thresholds(scores, correct, cost, w)) for w in (0.01, 100.0))
    assert cheap[1] < careful[1] and cheap[0] <= careful[0]
    target = correct[:, -1].mean() - 0.02
    acc, paid = outcome(idk_thresholds_for_accuracy(scores, correct, cost, target))
    assert acc >= target and paid <= cost[-1]
    with pytest.raises(PolicyError, match="no thresholds reach val accuracy 1.0100"):
        idk_thresholds_for_accuracy(scores, correct, cost, 1.01)


def test_idk_cascade_options_and_families(tmp_path):
    policy = create_policy("idk-cascade", error_weight=4)
    assert policy.params() == {"confidence": "max_softmax", "error_weight": 4.0}
    with pytest.raises(PolicyError, match="error_weight must be finite and >= 0"):
        create_policy("idk-cascade", error_weight=-1.0)
    from pathlib import Path

    from eebench.suites import load_suite_file
    from eebench.suites.names import check_names, model_family

    assert model_family("big-little") == "cascade" and model_family("msdnet") == "msdnet"
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\nmodels:\n  - {name: big-little}\n  - {name: branchynet-resnet, id: branchy}\n"
        "policies:\n  - {name: threshold}\n  - {name: idk-cascade, options: {error_weight: 2}}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"'idk-cascade' applies to cascade models only.*'branchy' \(models\[1\], 'branchynet-resnet'\) is of the intermediate family; use the 'threshold' policy",
    ) as err:
        check_names(load_suite_file(Path(suite)), str(suite))
    assert "policies[1].name" in str(err.value)
    suite.write_text(
        "name: s\nmodels:\n  - {name: big-little}\npolicies:\n  - {name: idk-cascade}\n"
    )
    check_names(load_suite_file(Path(suite)), str(suite))  # a cascade-only suite is fine

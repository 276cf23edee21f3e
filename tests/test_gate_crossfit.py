"""The learned gate does not grade its own homework: out-of-fold scores on val, the deployed gate
everywhere else, and each exit's gate trained on the samples that reach it."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from eebench.backends import EarlyExitExecutor, get_backend
from eebench.evaluation import (
    CostVector,
    ExitRecord,
    calibrate_accuracy_drop,
    calibrate_budget,
    record_exits,
)
from eebench.models import create_model
from eebench.policies import (
    CrossFittedGate,
    LearnedGatePolicy,
    PolicyError,
    create_policy,
    cross_fitting_folds,
)
from eebench.policies.confidence import max_softmax


def noisy_record(n: int, seed: int, split: str = "val", e: int = 3, c: int = 4) -> ExitRecord:
    """Continuous logits; later exits are right more often and more confident when right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, e, c))
    right = rng.random((n, e)) < np.linspace(0.45, 0.9, e)
    logits[np.arange(n)[:, None], np.arange(e)[None, :], labels[:, None]] += right * 2.5
    return ExitRecord(
        logits.astype(np.float32), labels, np.arange(n), "model-a", f"fp-{split}", split
    )


def with_label(record: ExitRecord, row: int, label: int) -> ExitRecord:
    labels = record.labels.copy()
    labels[row] = label
    return dataclasses.replace(record, labels=labels)


# ----------------------------------------------------------------- folds


def test_folds_are_deterministic_balanced_and_seeded():
    a = cross_fitting_folds(23, 5, seed=0)
    np.testing.assert_array_equal(a, cross_fitting_folds(23, 5, seed=0))
    assert sorted(np.bincount(a).tolist()) == [4, 4, 5, 5, 5]
    assert not np.array_equal(a, cross_fitting_folds(23, 5, seed=1))
    # fewer rows than folds: one row per fold (leave one out)
    assert sorted(cross_fitting_folds(3, 5, seed=0).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("folds", [1, 0, 2.5, True])
def test_bad_fold_count_is_refused(folds):
    with pytest.raises(PolicyError, match="folds"):
        LearnedGatePolicy(folds=folds)


# ----------------------------------------------------------------- out of fold


def test_a_rows_own_label_never_changes_its_own_val_score():
    rec = noisy_record(150, seed=3)
    row = 17
    gate = LearnedGatePolicy().fit(rec)
    flipped_rec = with_label(rec, row, (int(rec.labels[row]) + 1) % 4)
    flipped = LearnedGatePolicy().fit(flipped_rec)
    oof = gate.for_calibration(rec).scores(rec)
    oof_flipped = flipped.for_calibration(flipped_rec).scores(flipped_rec)
    # the row's own score, and its whole fold's, come from a gate that never saw the row
    fold = cross_fitting_folds(rec.num_samples, gate.folds, gate.seed)
    same_fold = fold == fold[row]
    np.testing.assert_array_equal(oof_flipped[same_fold], oof[same_fold])
    # the other folds' gates did see it, and the gate fitted on all rows too: the check can fail
    assert not np.array_equal(oof_flipped[~same_fold], oof[~same_fold])
    assert not np.array_equal(flipped.scores(rec)[row], gate.scores(rec)[row])


def test_out_of_fold_scores_are_the_scores_of_a_gate_fitted_on_the_other_folds():
    rec = noisy_record(90, seed=4)
    gate = LearnedGatePolicy(folds=3, seed=7).fit(rec)
    oof = gate.out_of_fold_scores(rec)
    fold = cross_fitting_folds(90, 3, 7)
    for f in range(3):
        held = np.flatnonzero(fold == f)
        rest = np.flatnonzero(fold != f)
        other = LearnedGatePolicy().fit(rec.subset(rest))
        np.testing.assert_array_equal(oof[held], other.scores(rec.subset(held)))
    # in-sample scores are a different (optimistic) thing
    assert not np.allclose(oof, gate.scores(rec))


def test_only_the_fitted_record_is_scored_out_of_fold():
    val, test = noisy_record(120, seed=5), noisy_record(80, seed=6, split="test")
    gate = LearnedGatePolicy().fit(val)
    view = gate.for_calibration(val)
    assert isinstance(view, CrossFittedGate)
    np.testing.assert_array_equal(view.scores(val), gate.out_of_fold_scores(val))
    # a copy of the val logits is still val; test and a subset get the deployed gate
    copy = dataclasses.replace(val, logits=val.logits.copy())
    np.testing.assert_array_equal(view.scores(copy), view.scores(val))
    np.testing.assert_array_equal(view.scores(test), gate.scores(test))
    np.testing.assert_array_equal(view.scores(val.subset(slice(0, 10))), gate.scores(val)[:10])
    assert gate.for_calibration(test) is gate
    assert view.for_calibration(val) is view
    assert view.confidence_label == gate.confidence_label and view.name == "learned-gate"
    for policy in ("threshold", "patience"):
        p = create_policy(policy)
        assert p.for_calibration(val) is p


def test_saved_gate_still_knows_the_record_it_was_fitted_on(tmp_path):
    val = noisy_record(100, seed=8)
    gate = LearnedGatePolicy(folds=4, seed=2).fit(val)
    loaded = LearnedGatePolicy.load(gate.save(tmp_path / "gate.npz"))
    assert (loaded.folds, loaded.seed) == (4, 2)
    np.testing.assert_array_equal(
        loaded.for_calibration(val).scores(val), gate.for_calibration(val).scores(val)
    )
    # parameters loaded by hand carry no provenance: nothing to cross-fit against
    bare = LearnedGatePolicy().load_state_dict(gate.state_dict())
    assert bare.for_calibration(val) is bare


def test_calibration_chooses_on_out_of_fold_scores_and_reports_the_deployed_gate():
    val, test = noisy_record(300, seed=9), noisy_record(200, seed=10, split="test")
    macs = CostVector.macs([1.0, 3.0, 6.0])
    gate = LearnedGatePolicy().fit(val)
    oof = gate.out_of_fold_scores(val)

    def by_hand(scores: np.ndarray, record: ExitRecord, theta: np.ndarray) -> tuple[float, list]:
        """Exit = first exit whose score reaches its threshold, else the last (plain loop)."""
        exits = []
        for n in range(record.num_samples):
            e = next((i for i in range(record.num_exits - 1) if scores[n, i] >= theta[i]), -1)
            exits.append(e % record.num_exits)
        preds = record.predictions[np.arange(record.num_samples), exits]
        frac = np.bincount(exits, minlength=record.num_exits) / record.num_samples
        return float((preds == record.labels).mean()), frac.tolist()

    for cal in (
        calibrate_accuracy_drop(val, test, gate, 0.02, [macs]),
        calibrate_budget(val, test, gate, 2.5, [macs]),
    ):
        acc, frac = by_hand(oof, val, cal.thresholds)
        assert cal.val["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert [cal.val[f"exit_frac_{i}"] for i in range(3)] == pytest.approx(frac, abs=1e-12)
        acc, frac = by_hand(gate.scores(test), test, cal.thresholds)
        assert cal.test["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert [cal.test[f"exit_frac_{i}"] for i in range(3)] == pytest.approx(frac, abs=1e-12)
    # the val row is not what the in-sample gate says at the same thresholds
    cal = calibrate_budget(val, test, gate, 2.5, [macs])
    in_sample = by_hand(gate.scores(val), val, cal.thresholds)
    assert (cal.val["accuracy"], [cal.val[f"exit_frac_{i}"] for i in range(3)]) != in_sample


# ----------------------------------------------------------------- which samples train exit i


def reach_record() -> ExitRecord:
    """Exit 0 is sure and right on 300 easy samples and unsure on 100 hard ones; at exit 1 the
    easy samples are right when unconfident, the hard ones when confident. Exit 2 is always right.
    Only the hard samples really reach exit 1, so its gate should follow them."""
    rng = np.random.default_rng(0)
    easy, hard = 300, 100
    n = easy + hard
    logits = np.zeros((n, 3, 2), dtype=np.float32)
    logits[:easy, 0, 0] = 8.0
    m0 = rng.uniform(0.0, 0.5, hard)
    right0 = rng.random(hard) < 0.5
    logits[easy:, 0, 0] = np.where(right0, m0, 0.0)
    logits[easy:, 0, 1] = np.where(right0, 0.0, m0)
    m1 = rng.uniform(0.0, 4.0, n)
    right1 = np.concatenate([m1[:easy] < 2.0, m1[easy:] > 2.0])
    logits[:, 1, 0] = np.where(right1, m1, 0.0)
    logits[:, 1, 1] = np.where(right1, 0.0, m1)
    logits[:, 2, 0] = 3.0
    return ExitRecord(logits, np.zeros(n, dtype=np.int64), np.arange(n), "m", "fp", "val")


def reference_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Standardise, scale weights to mean 1, fit sklearn's logistic regression: (intercept, coef)."""
    z = (x - x.mean()) / x.std()
    clf = LogisticRegression(C=1.0, max_iter=1000)
    clf.fit(z[:, None], y, sample_weight=w * (len(w) / w.sum()))
    return np.array([clf.intercept_[0], clf.coef_[0, 0]])


def test_each_exits_gate_is_trained_on_the_samples_that_reach_it():
    rec = reach_record()
    gate = LearnedGatePolicy(features=("max_softmax",)).fit(rec)
    state = gate.state_dict()
    p = gate.scores(rec)
    conf = max_softmax(rec.log_probs)
    right = rec.correct
    # exit 0: every sample, weight 1
    np.testing.assert_allclose(
        [state["intercept"][0], state["coef"][0, 0]],
        reference_fit(conf[:, 0], right[:, 0], np.ones(400)),
        rtol=1e-9,
    )
    # exit 1: weight = P(reach exit 1) = 1 - p_0 under a uniform shared threshold
    w1 = 1.0 - p[:, 0]
    assert w1[:300].max() < 0.05 < 0.3 < w1[300:].min()
    np.testing.assert_allclose(
        [state["intercept"][1], state["coef"][1, 0]],
        reference_fit(conf[:, 1], right[:, 1], w1),
        rtol=1e-9,
    )
    # exit 2 (always right): the reach-weighted rate, clipped, as its intercept
    assert state["coef"][2, 0] == 0.0 and p[:, 2].min() > 0.999
    # the weighting decides the sign: exit 1's gate follows the hard samples that reach it,
    # where all samples weighted alike would say "confident = wrong" (the easy majority)
    assert state["coef"][1, 0] > 0
    assert reference_fit(conf[:, 1], right[:, 1], np.ones(400))[1] < 0
    hard = slice(300, 400)
    assert p[hard, 1][right[hard, 1]].min() > p[hard, 1][~right[hard, 1]].max()


# ----------------------------------------------------------------- executor agreement


def random_split(model: torch.nn.Module, n: int, seed: int, name: str) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0.0, 1.5, n)[torch.randperm(n, generator=g)]
    return types.SimpleNamespace(
        name=name,
        x=torch.randn(n, *model.input_shape, generator=g) * scale.view(n, 1, 1, 1),
        y=torch.zeros(n, dtype=torch.int64),
        ids=np.array([f"{name}{i}" for i in range(n)]),
        meta={},
        fingerprint=f"random-{seed}",
    )


def test_executor_with_the_deployed_gate_takes_the_calibrated_decisions_on_test():
    """Fitted and calibrated on val (out of fold), run by the executor on test rows: the online
    gate decider and the vectorised scores of the calibration view agree sample by sample."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("cascade", num_classes=10, input_shape=(1, 8, 8)).eval()
    records, inputs = {}, {}
    for name, seed in (("val", 1), ("test", 2)):
        split = random_split(model, 60, seed, name)
        inputs[name] = split.x
        rec = record_exits(model, split)
        # labels = the answer of a random exit per sample: every exit is right for some only
        pick = np.random.default_rng(seed).integers(0, rec.num_exits, rec.num_samples)
        labels = rec.predictions[np.arange(rec.num_samples), pick]
        records[name] = dataclasses.replace(rec, labels=labels)
    val, test = records["val"], records["test"]
    gate = LearnedGatePolicy().fit(val)
    view = gate.for_calibration(val)
    scores = view.scores(test)
    np.testing.assert_array_equal(scores, gate.scores(test))
    # per-exit thresholds between the two middle distinct scores of each exit: samples go to
    # every exit, and no score is within rounding of a threshold
    theta = np.zeros(test.num_exits)
    for i in range(test.num_exits - 1):
        values = np.unique(scores[:, i])
        mid = values.size // 2
        assert values[mid] - values[mid - 1] > 1e-6, "near-tied scores; pick another seed"
        theta[i] = (values[mid] + values[mid - 1]) / 2
    want = np.array([next((i for i in range(2) if scores[n, i] >= theta[i]), 2) for n in range(60)])
    assert len(set(want.tolist())) == 3
    prepared = get_backend("torch-cpu").prepare(model, batch_size=4, threads=1)
    decider = view.decider(theta, num_exits=test.num_exits)
    for mode, bs in (("per-sample", None), ("batched", 4)):
        got = EarlyExitExecutor(prepared, decider).run(inputs["test"], mode=mode, batch_size=bs)
        np.testing.assert_array_equal(got.exit_indices, want, err_msg=mode)
        np.testing.assert_array_equal(
            got.predictions, test.predictions[np.arange(60), want], err_msg=mode
        )

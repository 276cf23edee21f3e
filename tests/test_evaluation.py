"""Exit record, vectorised evaluation (held against the per-sample reference loop), overthinking, Pareto."""

import types

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eebench.errors import ConfigError, DataError, ResultsError
from eebench.evaluation import (
    CostVector,
    ExitRecord,
    NonFiniteLogitsError,
    RecordMismatchError,
    anytime,
    count_at_most,
    evaluate,
    exit_indices,
    exit_sums,
    load_or_record,
    model_key_of,
    overthinking_table,
    pareto_front,
    record_exits,
    record_filename,
    reference_operating_points,
    sweep,
)
from eebench.models import create_model
from eebench.policies import FALLBACKS, POLICIES, PolicyError, create_policy

# ----------------------------------------------------------------- helpers


def make_record(logits, labels, split="val", **kw):
    logits = np.asarray(logits, dtype=np.float32)
    return ExitRecord(
        logits, np.asarray(labels), np.arange(len(labels)), "model-a", "data-a", split, **kw
    )


def random_record(n=60, e=4, c=5, seed=0, split="val"):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.integers(-2, 3, size=(n, e, c)).astype(np.float32)
    boost = (rng.random((n, e)) < np.linspace(0.3, 0.9, e)) * np.arange(1, e + 1)
    logits[np.arange(n)[:, None], np.arange(e)[None, :], labels[:, None]] += boost
    return make_record(logits, labels, split)


def cumulative_costs(e):
    cum_macs = np.cumsum(np.arange(1, e + 1) * 1000.0)
    # a plain network cheaper than the final exit's cumulative cost (no early heads)
    macs = CostVector.macs(cum_macs, plain=float(cum_macs[-1]) - 100.0 * (e - 1))
    latency = CostVector(
        np.cumsum(np.linspace(0.1, 0.4, e)),
        unit="ms",
        source="measured:torch-cpu,threads=2,batch=1",
    )
    return [macs, latency]


METRICS = ["accuracy", "overthinking", "lost_by_exiting_early", "rescued"]


def assert_matches_reference(record, policy, thresholds, costs):
    fast = evaluate(record, policy, thresholds, costs)
    slow = reference_operating_points(record, policy, thresholds, costs)
    assert len(fast) == len(slow)
    exact = METRICS + [f"exit_frac_{i}" for i in range(record.num_exits)]
    for col in exact:  # counts over the same samples: exactly equal
        np.testing.assert_array_equal(fast[col].to_numpy(), slow[col].to_numpy(), err_msg=col)
    for c in costs:  # sums of floats in another order
        for col in (f"expected_{c.name}", f"wasted_{c.name}", f"wasted_frac_{c.name}"):
            np.testing.assert_allclose(
                fast[col].to_numpy(), slow[col].to_numpy(), rtol=1e-9, atol=1e-12
            )
    if policy.uses_thresholds:
        exits = exit_indices(policy.scores(record), np.asarray(thresholds, dtype=np.float64))
        for row, ref in zip(exits, slow["exits"]):
            assert row.tolist() == ref


# ----------------------------------------------------------------- property test: vectorised == reference


@st.composite
def records(draw):
    n = draw(st.integers(1, 16))
    e = draw(st.integers(1, 5))
    c = draw(st.integers(2, 4))
    # small integer logits: many ties in predictions and confidences
    values = draw(st.lists(st.integers(-3, 3), min_size=n * e * c, max_size=n * e * c))
    labels = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    return make_record(np.array(values, dtype=np.float32).reshape(n, e, c), labels)


@st.composite
def record_policy_thresholds(draw):
    record = draw(records())
    name = draw(st.sampled_from(sorted(POLICIES)))
    # the threshold policy with either answer for samples no exit is confident about
    options = {"fallback": draw(st.sampled_from(FALLBACKS))} if name == "threshold" else {}
    policy = create_policy(name, **options)
    if getattr(policy, "fitted", True) is False:  # learned policies: fitted on the record itself
        policy.fit(record)
    if not policy.uses_thresholds:
        return record, policy, None
    scores = policy.scores(record).ravel()
    # thresholds at the scores themselves (ties), at the edges and anywhere in between
    value = st.one_of(
        st.sampled_from(sorted(set(scores.tolist()))),
        st.sampled_from([0.0, 1.0, -np.inf, np.inf, 0.5]),
        st.floats(-0.5, 5.0, allow_nan=False),
    )
    t = draw(st.integers(1, 4))
    if draw(st.booleans()):
        thresholds = np.array(draw(st.lists(value, min_size=t, max_size=t)))
    else:
        e = record.num_exits
        flat = draw(st.lists(value, min_size=t * e, max_size=t * e))
        thresholds = np.array(flat).reshape(t, e)
    return record, policy, thresholds


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_policy_thresholds())
def test_vectorised_evaluation_equals_per_sample_reference(case):
    record, policy, thresholds = case
    assert_matches_reference(record, policy, thresholds, cumulative_costs(record.num_exits))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_matches_reference_on_a_random_record(name):
    record = random_record(n=50, e=6, c=4, seed=4)
    policy = create_policy(name)
    if getattr(policy, "fitted", True) is False:  # learned policies: fitted on another record
        policy.fit(random_record(n=200, e=6, c=4, seed=5))
    thresholds = None
    if policy.uses_thresholds:
        rng = np.random.default_rng(0)
        scores = policy.scores(record)
        thresholds = np.concatenate(
            [policy.default_thresholds(scores, 11), rng.choice(scores.ravel(), 6)]
        )
    assert_matches_reference(record, policy, thresholds, cumulative_costs(6))
    if policy.uses_thresholds:
        per_exit = np.column_stack([rng.choice(scores[:, i], 5) for i in range(6)])
        assert_matches_reference(record, policy, per_exit, cumulative_costs(6))


# ----------------------------------------------------------------- the table


def test_table_columns_carry_units_and_sources():
    record = random_record()
    costs = cumulative_costs(4) + [
        CostVector([0.5, 1.0, 1.5, 2.0], unit="mJ", source="estimated:jetson-orin-nano")
    ]
    df = evaluate(
        record,
        create_policy("threshold", confidence="entropy"),
        np.linspace(0, 1, 5),
        costs,
        model="m1",
    )
    assert len(df) == 5
    row = df.iloc[0]
    assert row["model"] == "m1" and row["split"] == "val" and row["policy"] == "threshold"
    assert row["confidence"] == "entropy" and row["kind"] == "policy"
    assert row["macs_source"] == "analytic" and row["macs_unit"] == "MACs"
    assert (
        row["latency_source"] == "measured:torch-cpu,threads=2,batch=1"
        and row["latency_unit"] == "ms"
    )
    assert row["energy_source"] == "estimated:jetson-orin-nano" and row["energy_unit"] == "mJ"
    fractions = df[[f"exit_frac_{i}" for i in range(4)]].to_numpy()
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    np.testing.assert_allclose(df["expected_energy"], fractions @ costs[2].values)
    assert df.loc[2, "threshold"] == 0.5 and df.loc[2, "thresholds"] == (0.5,) * 4


def test_thresholds_round_trip_into_the_decider():
    record = random_record(seed=9)
    policy = create_policy("threshold", confidence="score_margin")
    df = evaluate(record, policy, [0.3])
    decider = policy.decider(np.array(df.loc[0, "thresholds"]))
    assert decider.num_exits == record.num_exits


def test_bad_thresholds_and_costs_are_refused():
    record = random_record()
    policy = create_policy("threshold")
    with pytest.raises(PolicyError, match="needs thresholds"):
        evaluate(record, policy)
    with pytest.raises(PolicyError, match="NaN"):
        evaluate(record, policy, [0.1, np.nan])
    with pytest.raises(PolicyError, match=r"shape \(points, 4\)"):
        evaluate(record, policy, np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="3 values but the record has 4 exits"):
        evaluate(record, policy, [0.5], [CostVector.macs([1, 2, 3])])
    with pytest.raises(ConfigError, match="source must say"):
        CostVector([1, 2], unit="ms", source="guess")
    with pytest.raises(ConfigError, match="cumulative"):
        CostVector([3, 2], unit="ms", source="measured:torch-cpu")
    with pytest.raises(ConfigError, match="name="):
        CostVector([1, 2], unit="furlongs", source="analytic")
    with pytest.raises(ConfigError, match="two cost vectors"):
        evaluate(record, policy, [0.5], [CostVector.macs([1, 2, 3, 4])] * 2)


def test_cost_vector_from_parts_is_cumulative():
    c = CostVector.from_parts([10, 20, 30], [1, 1, 2], unit="MACs", source="analytic")
    np.testing.assert_array_equal(c.values, [11, 32, 64])
    assert c.name == "macs"


def test_sweep_stacks_policies_and_baselines():
    record = random_record()
    policies = [
        create_policy(n) for n in ("threshold", "patience", "oracle", "final-only", "aggregation")
    ]
    df = sweep(record, policies, cumulative_costs(4), num_thresholds=11)
    assert (df["policy"] == "threshold").sum() == 11
    assert (df["policy"] == "patience").sum() == 4  # k = 0 .. E-1
    baselines = df[df["kind"] == "baseline"]
    assert sorted(baselines["policy"]) == ["aggregation", "final-only", "oracle"]
    assert baselines["thresholds"].map(len).eq(0).all()
    oracle = df[df["policy"] == "oracle"].iloc[0]
    assert oracle["accuracy"] == df["accuracy"].max()  # the upper bound


# ----------------------------------------------------------------- overthinking


def test_overthinking_lost_early_rescued_and_waste():
    # sample 0: right at exit 0, wrong at the final exit (overthought)
    # sample 1: wrong at exit 0, right later
    # sample 2: right everywhere
    logits = np.zeros((3, 3, 2), dtype=np.float32)
    logits[0] = [[4, 0], [0, 1], [0, 1]]
    logits[1] = [[0, 1], [3, 0], [3, 0]]
    logits[2] = [[5, 0], [5, 0], [5, 0]]
    record = make_record(logits, [0, 0, 0])
    macs = CostVector.macs([10, 30, 60])
    final = evaluate(record, create_policy("final-only"), None, [macs]).iloc[0]
    assert final["overthinking"] == pytest.approx(1 / 3)
    assert final["lost_by_exiting_early"] == 0 and final["rescued"] == 0
    # waste at the final exit: sample 0 -> 50, sample 1 -> 30, sample 2 -> 50
    assert final["wasted_macs"] == pytest.approx(130 / 3)
    # threshold 0.95: sample 0 and 2 leave at exit 0, sample 1 (conf 0.95 at exit 1) at exit 1
    point = evaluate(record, create_policy("threshold"), [0.95], [macs]).iloc[0]
    assert point["accuracy"] == 1.0
    assert point["rescued"] == pytest.approx(1 / 3)  # sample 0: final wrong, policy right
    assert point["lost_by_exiting_early"] == 0
    assert point["wasted_macs"] == 0
    # threshold 0.0: all leave at exit 0: sample 1 is lost (final right, exit 0 wrong)
    early = evaluate(record, create_policy("threshold"), [0.0], [macs]).iloc[0]
    assert early["lost_by_exiting_early"] == pytest.approx(1 / 3)
    table = overthinking_table(record.correct, [macs])
    assert table["first_correct_frac"].tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    assert table["overthought_frac"].tolist() == pytest.approx([1 / 3, 0, 0])
    assert table["final_only_wasted_macs"].iloc[0] == pytest.approx(130 / 3)


# ----------------------------------------------------------------- Pareto and anytime


def test_pareto_front_keeps_non_dominated_points():
    df = pd.DataFrame(
        {
            "expected_macs": [1.0, 2.0, 2.0, 3.0, 4.0, 1.0, 5.0],
            "accuracy": [0.5, 0.7, 0.6, 0.65, 0.9, 0.5, 0.9],
            "name": list("abcdefg"),
        }
    )
    front = pareto_front(df)
    assert front["name"].tolist() == ["a", "b", "e"]
    with pytest.raises(ConfigError, match="no column 'expected_latency'"):
        pareto_front(df, cost="expected_latency")


def test_pareto_front_over_policies_and_models():
    a = sweep(
        random_record(seed=1),
        [create_policy("threshold")],
        cumulative_costs(4),
        model="a",
        num_thresholds=21,
    )
    b = sweep(random_record(seed=2), [create_policy("patience")], cumulative_costs(4), model="b")
    both = pd.concat([a, b], ignore_index=True)
    front = pareto_front(both)
    c = front["expected_macs"].to_numpy()
    acc = front["accuracy"].to_numpy()
    assert np.all(np.diff(c) > 0) and np.all(np.diff(acc) > 0)
    for _, row in both.iterrows():  # nothing on the front is dominated by any point
        dominated = (
            (row["expected_macs"] <= c)
            & (row["accuracy"] >= acc)
            & ((row["expected_macs"] < c) | (row["accuracy"] > acc))
        )
        assert not dominated.any()


def test_anytime_accuracy_at_cumulative_cost():
    record = random_record()
    costs = cumulative_costs(4)
    df = anytime(record, costs)
    np.testing.assert_array_equal(df["accuracy"], record.correct.mean(axis=0))
    np.testing.assert_array_equal(df["cumulative_macs"], costs[0].values)
    assert (df["latency_source"] == costs[1].source).all()


# ----------------------------------------------------------------- the exit record


def test_nan_and_inf_logits_name_sample_and_exit():
    logits = np.zeros((4, 3, 2), dtype=np.float32)
    logits[2, 1, 0] = np.nan
    with pytest.raises(NonFiniteLogitsError, match=r"sample id .*\(row 2\).*exit 1"):
        ExitRecord(logits, [0, 1, 0, 1], np.array([10, 11, 12, 13]), "m", "f", "val")
    logits[2, 1, 0] = 0
    logits[3, 2, 1] = -np.inf
    with pytest.raises(ValueError, match="row 3.*exit 2"):
        ExitRecord(logits, [0, 1, 0, 1], np.arange(4), "m", "f", "val")


def test_record_validates_labels_and_shapes():
    logits = np.zeros((3, 2, 2))
    with pytest.raises(DataError, match="outside"):
        ExitRecord(logits, [0, 2, 1], np.arange(3), "m", "f")
    with pytest.raises(DataError, match="one id per sample"):
        ExitRecord(logits, [0, 1, 1], np.arange(2), "m", "f")
    with pytest.raises(DataError, match="meta"):
        ExitRecord(logits, [0, 1, 1], np.arange(3), "m", "f", meta={"difficulty": np.zeros(2)})
    with pytest.raises(DataError, match="no samples"):
        evaluate(
            ExitRecord(np.zeros((0, 2, 2)), np.zeros(0, int), np.arange(0), "m", "f"),
            create_policy("oracle"),
        )


def test_record_save_load_round_trip_and_key_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    record = ExitRecord(
        rng.normal(size=(9, 3, 4)).astype(np.float32),
        rng.integers(0, 4, 9),
        np.array([f"img{i}" for i in range(9)], dtype=object),
        model_key="ckpt123",
        split_fingerprint="fp456",
        split="test",
        meta={"difficulty": rng.random(9)},
    )
    path = record.save(tmp_path / "records" / record_filename("ckpt123", "fp456", "test"))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    loaded = ExitRecord.load(path, expected_model_key="ckpt123", expected_fingerprint="fp456")
    np.testing.assert_array_equal(loaded.logits, record.logits)
    np.testing.assert_array_equal(loaded.labels, record.labels)
    np.testing.assert_array_equal(loaded.sample_ids, record.sample_ids)
    np.testing.assert_array_equal(loaded.meta["difficulty"], record.meta["difficulty"])
    assert (loaded.model_key, loaded.split_fingerprint, loaded.split) == (
        "ckpt123",
        "fp456",
        "test",
    )
    with pytest.raises(RecordMismatchError, match="model_key 'ckpt123' but 'other' was expected"):
        ExitRecord.load(path, expected_model_key="other")
    with pytest.raises(RecordMismatchError, match="split_fingerprint"):
        ExitRecord.load(path, expected_model_key="ckpt123", expected_fingerprint="fp999")
    with pytest.raises(ResultsError, match="no exit record"):
        ExitRecord.load(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ResultsError, match="not a readable exit record"):
        ExitRecord.load(broken)
    frame = loaded.to_frame()
    assert len(frame) == 27 and {
        "sample_id",
        "exit",
        "max_softmax",
        "entropy",
        "difficulty",
    } <= set(frame.columns)


def test_record_exits_runs_a_real_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("cascade", num_classes=10, input_shape=(1, 8, 8), width=4)
    model.train()
    x = torch.randn(23, 1, 8, 8)
    split = types.SimpleNamespace(
        name="val",
        x=x,
        y=torch.randint(0, 10, (23,)),
        ids=np.arange(100, 123),
        meta={"difficulty": np.linspace(0, 1, 23)},
        fingerprint="split-fp",
    )
    record = record_exits(model, split, batch_size=5)
    assert model.training  # mode restored
    assert record.logits.shape == (23, model.num_exits, 10) and record.logits.dtype == np.float32
    model.eval()
    with torch.no_grad():
        expected = torch.stack(model.forward_all(x), dim=1).numpy()
    np.testing.assert_allclose(record.logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(record.labels, split.y.numpy())
    np.testing.assert_array_equal(record.sample_ids, split.ids)
    assert record.model_key == model_key_of(model) and record.split_fingerprint == "split-fp"
    assert record.meta["difficulty"][3] == split.meta["difficulty"][3]
    # cached by checkpoint and split: the second call loads the file instead of running the model
    first = load_or_record(tmp_path, model, split)
    with torch.no_grad():
        model.stages[0].body.body[0][0].weight.add_(1.0)  # a different checkpoint
    assert model_key_of(model) != first.model_key
    second = load_or_record(tmp_path, model, split)
    assert second.model_key != first.model_key
    assert len(list(tmp_path.iterdir())) == 2
    again = load_or_record(tmp_path, model, split)
    np.testing.assert_array_equal(again.logits, second.logits)
    with pytest.raises(ConfigError, match="batch_size"):
        record_exits(model, split, batch_size=0)


@pytest.mark.parametrize("kind", ["even", "clustered", "ties-and-infinities", "few-values"])
def test_count_at_most_is_searchsorted(kind):
    """The bucketed search behind the shared-threshold sweep gives np.searchsorted's integers
    (thresholds <= value), on evenly spaced, clustered (falls back), tied and infinite values."""
    rng = np.random.default_rng(len(kind))
    if kind == "even":
        th = np.linspace(0.0, 1.0, 1001)
    elif kind == "clustered":  # most thresholds within 1e-3 of 1: buckets overflow
        th = np.sort(np.concatenate([1 - rng.random(900) * 1e-3, rng.random(100)]))
    elif kind == "ties-and-infinities":
        th = np.sort(np.concatenate([rng.choice([0.0, 0.25, 1.0], 200), [-np.inf, np.inf]]))
    else:
        th = np.array([0.2, 0.7])
    values = np.concatenate([rng.random(5000), th, [np.inf, -np.inf, 0.0, 1.0, 2.0, -1.0]])
    values = rng.permutation(values).reshape(-1, 2) if values.size % 2 == 0 else values
    np.testing.assert_array_equal(count_at_most(th, values), np.searchsorted(th, values, "right"))


def test_per_exit_sums_across_chunks_equal_a_plain_loop(monkeypatch):
    import eebench.evaluation.vectorised as vectorised

    monkeypatch.setattr(vectorised, "_CHUNK_ELEMENTS", 50)  # 20 samples: 2 threshold rows a chunk
    rng = np.random.default_rng(5)
    scores = rng.random((20, 4))
    th = np.column_stack([rng.random((7, 3)), np.full(7, -np.inf)])
    th[0, :] = np.inf  # nobody leaves early
    table = rng.random((20, 4))
    flags = rng.random((20, 4)) < 0.5
    got = exit_sums(scores, th, {"value": table, "flag": flags})
    for t in range(7):
        exits = [next((i for i in range(3) if scores[n, i] >= th[t, i]), 3) for n in range(20)]
        assert got.counts[t].tolist() == [exits.count(i) for i in range(4)]
        assert got.sums["value"][t] == pytest.approx(sum(table[n, e] for n, e in enumerate(exits)))
        assert got.sums["flag"][t] == sum(int(flags[n, e]) for n, e in enumerate(exits))

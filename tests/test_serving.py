"""Early exit under load: every batching strategy answers exactly what the exit record decides
offline, on torch-cpu and onnxruntime, with and without LoadGen; a short Server run gets a VALID
LoadGen verdict with its logs; the QPS search brackets the largest rate that holds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eebench.backends import get_backend
from eebench.costs import plain_network
from eebench.data import get_splits
from eebench.errors import ConfigError
from eebench.evaluation import record_exits
from eebench.models import create_model
from eebench.policies import create_policy
from eebench.serving import (
    STRATEGIES,
    Inbox,
    LoadgenUnavailable,
    Request,
    ScenarioSettings,
    ServingSession,
    StrategyConfig,
    Worker,
    check_answers,
    find_max_qps,
    offline_decisions,
    parse_detail_log,
    require_loadgen,
)

N = 48
BACKENDS = ["torch-cpu", "onnxruntime"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An untrained (seeded) 3-exit model on digits, its exit record, and per-exit thresholds
    halfway between neighbouring confidences, so no backend's rounding flips a decision."""
    torch.manual_seed(0)
    splits = get_splits("digits", seed=0)
    model = create_model(
        "branchynet-resnet",
        num_classes=splits.num_classes,
        input_shape=splits.input_shape,
        depth=8,
        width=4,
    ).eval()
    x = np.asarray(splits.test.x[:N], dtype=np.float32)
    rec = record_exits(model, splits.test).subset(slice(0, N))
    policy = create_policy("threshold", confidence="max_softmax")
    conf = policy.scores(rec)
    th = []
    for e in range(rec.num_exits):
        s = np.sort(conf[:, e])
        gaps = np.diff(s)
        k = int(np.argmax(gaps[N // 4 : 3 * N // 4])) + N // 4  # a wide gap near the median
        th.append(float((s[k] + s[k + 1]) / 2))
    th = np.asarray(th)
    cache = tmp_path_factory.mktemp("onnx")
    return model, rec, x, policy, th, cache


def _prepared(backend: str, model, cache):
    opts = {"cache_dir": cache} if backend == "onnxruntime" else {}
    return get_backend(backend).prepare(model, threads=1, **opts)


def _expected(strategy, policy, rec, th):
    return offline_decisions(None if strategy == "plain" else policy, rec, th)


def test_offline_decisions_are_the_first_exit_that_fires(setup):
    _, rec, _, policy, th, _ = setup
    exits, preds = offline_decisions(policy, rec, th)
    # by hand: first exit whose max softmax reaches its threshold, the last exit otherwise
    z = rec.logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    conf = (p / p.sum(-1, keepdims=True)).max(-1)
    for k in range(rec.num_samples):
        fired = [e for e in range(rec.num_exits - 1) if conf[k, e] >= th[e]]
        e = fired[0] if fired else rec.num_exits - 1
        assert exits[k] == e
        assert preds[k] == int(np.argmax(rec.logits[k, e]))
    assert len(set(exits.tolist())) == rec.num_exits  # the thresholds use every exit


def _serve_directly(prepared, cfg, x, policy, th, rec, model, arrivals):
    """Feed the worker without LoadGen: ``arrivals`` lists the batches put into the inbox."""
    preds = np.full(len(x), -1)
    exits = np.full(len(x), -1)
    order: list[int] = []

    def respond(reqs, p, e):
        for r, pi, ei in zip(reqs, p, e):
            preds[r.index], exits[r.index] = pi, ei
            order.append(r.index)

    worker = Worker(
        prepared,
        cfg,
        x,
        respond,
        lambda: policy.decider(th, num_exits=rec.num_exits),
        plain_network(model.family, model.num_exits).stages,
    )
    inbox = Inbox()
    for batch in arrivals:
        inbox.put([Request(i, i, 0) for i in batch])
    inbox.close()
    with prepared.activated():
        worker.serve(inbox)
    return exits, preds, order


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_answers_the_offline_decisions(setup, backend, strategy):
    model, rec, x, policy, th, cache = setup
    prepared = _prepared(backend, model, cache)
    cfg = StrategyConfig(strategy, batch_size=5, timeout_s=0.0)
    arrivals = [list(range(0, 7)), list(range(7, 30)), list(range(30, N))]
    exits, preds, order = _serve_directly(prepared, cfg, x, policy, th, rec, model, arrivals)
    want_exits, want_preds = _expected(strategy, policy, rec, th)
    np.testing.assert_array_equal(exits, want_exits)
    np.testing.assert_array_equal(preds, want_preds)
    assert sorted(order) == list(range(N))  # every request answered exactly once


def test_batch_shrinking_answers_early_leavers_first(setup):
    """Within one batch, rows that leave at exit 0 are answered before rows that go on; a
    static batch (wait-for-slowest) answers in request order, all at once."""
    model, rec, x, policy, th, cache = setup
    prepared = _prepared("torch-cpu", model, cache)
    want_exits, _ = offline_decisions(policy, rec, th)
    batch = [list(range(N))]
    cfg = StrategyConfig("batch-shrinking", batch_size=N)
    _, _, order = _serve_directly(prepared, cfg, x, policy, th, rec, model, batch)
    assert [int(want_exits[i]) for i in order] == sorted(want_exits.tolist())
    cfg = StrategyConfig("wait-for-slowest", batch_size=N)
    _, _, order = _serve_directly(prepared, cfg, x, policy, th, rec, model, batch)
    assert order == list(range(N))


def _max_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).max(-1)


class RunningMeanDecider:
    """A stateful decider: leave when the mean max-softmax over the exits so far reaches
    ``theta[e]``; the running sums are per row of the batch it was reset for."""

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta

    def reset(self, batch_size: int) -> None:
        self.sums = np.zeros(batch_size)

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        self.sums[active] += _max_softmax(logits)
        return self.sums[active] / (exit_index + 1) >= self.theta[exit_index]


def test_regrouping_keeps_stateful_decisions_per_admitted_batch(setup):
    """Survivors of different admitted batches regrouped into one stage call must each be
    decided with their own batch's per-row state."""
    model, rec, x, _, _, cache = setup
    means = np.cumsum(_max_softmax(rec.logits), axis=1) / np.arange(1, rec.num_exits + 1)
    theta = []
    for e in range(rec.num_exits):  # halfway across a wide gap near the median
        s = np.sort(means[:, e])
        k = int(np.argmax(np.diff(s)[N // 4 : 3 * N // 4])) + N // 4
        theta.append(float((s[k] + s[k + 1]) / 2))
    theta = np.asarray(theta)
    fires = means >= theta
    fires[:, -1] = True
    want_exits = fires.argmax(axis=1)
    want_preds = rec.logits[np.arange(N), want_exits].argmax(axis=1)
    assert 0 < (want_exits < rec.num_exits - 1).sum() < N  # some leave early, some do not
    prepared = _prepared("torch-cpu", model, cache)
    preds = np.full(N, -1)
    exits = np.full(N, -1)

    def respond(reqs, p, e):
        for r, pi, ei in zip(reqs, p, e):
            preds[r.index], exits[r.index] = pi, ei

    calls: list[tuple[int, int]] = []
    run_stage = prepared.run_stage

    def counted(i, state):
        calls.append((i, int(state[0].shape[0])))
        return run_stage(i, state)

    prepared.run_stage = counted
    # a long timeout: a stage waits for a full batch of 16 until no more requests can come
    worker = Worker(
        prepared,
        StrategyConfig("regroup", batch_size=16, timeout_s=30.0),
        x,
        respond,
        lambda: RunningMeanDecider(theta),
    )
    inbox = Inbox()
    inbox.put([Request(i, i, 0) for i in range(N)])  # admitted as three batches of 16
    inbox.close()
    with prepared.activated():
        worker.serve(inbox)
    np.testing.assert_array_equal(exits, want_exits)
    np.testing.assert_array_equal(preds, want_preds)
    stage1 = [rows for i, rows in calls if i == 1]
    assert sum(stage1) == (want_exits > 0).sum()  # every survivor of exit 0 ran stage 1 once
    assert len(stage1) < 3  # survivors of different batches were regrouped into one call


def test_unknown_strategy_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'regroup'"):
        StrategyConfig("regrup")


def test_missing_loadgen_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    with pytest.raises(LoadgenUnavailable, match=r"pip install 'eebench\[serving\]'"):
        require_loadgen()


def test_qps_search_brackets_the_largest_rate_that_holds():
    limit = 137.0
    probed: list[float] = []

    def run_at(q):
        probed.append(q)
        return q

    s = find_max_qps(run_at, lambda q: q <= limit, 10.0, 1000.0, steps=8)
    assert s.max_qps <= limit
    # geometric bisection: after 8 halvings of log(1000/10) the bracket is 100**(1/256) wide
    assert s.max_qps >= limit / (1000.0 / 10.0) ** (1 / 2**8)
    assert probed[:2] == [10.0, 1000.0] and len(probed) == 10
    assert np.isnan(find_max_qps(run_at, lambda q: False, 10.0, 1000.0, steps=3).max_qps)
    assert find_max_qps(run_at, lambda q: True, 10.0, 1000.0, steps=3).at_upper_end


def test_detail_log_parsing(tmp_path):
    lines = [
        "noise",
        ':::MLLOG {"key": "result_validity", "value": "VALID"}',
        ':::MLLOG {"key": "result_completed_samples_per_sec", "value": 99.5}',
        ':::MLLOG {"key": "result_scheduled_samples_per_sec", "value": 100.1}',
        ':::MLLOG {"key": "result_query_count", "value": 300}',
        ':::MLLOG {"key": "result_50.00_percentile_latency_ns", "value": 1000000}',
        ':::MLLOG {"key": "result_99.00_percentile_latency_ns", "value": 4500000}',
        ':::MLLOG {"key": "early_stopping_met", "value": true}',
    ]
    p = tmp_path / "mlperf_log_detail.txt"
    p.write_text("\n".join(lines))
    r = parse_detail_log(p, "Server")
    assert r.valid and r.achieved_qps == 99.5 and r.query_count == 300
    assert r.percentile_ms(99.0) == 4.5 and r.percentile_ms(50.0) == 1.0
    assert np.isnan(r.percentile_ms(90.0))
    p.write_text("\n".join(lines[2:]))
    with pytest.raises(Exception, match="no 'result_validity'"):
        parse_detail_log(p, "Server")


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_server_run_is_valid_and_answers_match(setup, backend, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    model, rec, x, policy, th, cache = setup
    prepared = _prepared(backend, model, cache)
    settings = ScenarioSettings(
        "Server",
        target_qps=200.0,
        latency_bound_ms=1000.0,  # generous: a loaded shared machine still holds it
        percentile=0.9,
        min_duration_s=0.5,
        max_duration_s=5.0,
        min_query_count=100,
    )
    for strategy in ("batch-shrinking", "plain"):
        session = ServingSession(
            prepared,
            StrategyConfig(strategy, batch_size=4, timeout_s=0.001),
            x,
            lambda: policy.decider(th, num_exits=rec.num_exits),
            plain_network(model.family, model.num_exits).stages,
        )
        run = session.run(settings, tmp_path / strategy)
        summary = (tmp_path / strategy / "mlperf_log_summary.txt").read_text()
        assert "Scenario : Server" in summary and "Result is : VALID" in summary
        assert (tmp_path / strategy / "mlperf_log_detail.txt").exists()
        assert run.result.valid and run.result.query_count >= 100
        assert run.served == run.result.query_count and run.conflicts == 0
        assert 0 < run.result.percentile_ms(50.0) <= run.result.percentile_ms(99.0)
        check = check_answers(run.exits, run.predictions, *_expected(strategy, policy, rec, th))
        assert check.equal and check.served_samples > N // 2


def test_offline_and_single_stream_runs_answer_every_query(setup, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    model, rec, x, policy, th, cache = setup
    prepared = _prepared("torch-cpu", model, cache)
    session = ServingSession(
        prepared,
        StrategyConfig("regroup", batch_size=8, timeout_s=0.0005),
        x,
        lambda: policy.decider(th, num_exits=rec.num_exits),
    )
    for scenario in ("Offline", "SingleStream"):
        s = ScenarioSettings(scenario, min_duration_s=0.2, max_duration_s=2.0, min_query_count=64)
        run = session.run(s, tmp_path / scenario)
        assert run.result.scenario == scenario and run.result.query_count >= 1
        assert run.served >= 64 and run.result.achieved_qps > 0
        assert check_answers(run.exits, run.predictions, *offline_decisions(policy, rec, th)).equal
        assert Path(tmp_path / scenario / "mlperf_log_summary.txt").exists()


def test_offline_test_is_sized_from_the_measured_throughput(setup, tmp_path):
    """Without a guess, LoadGen is told twice the strategy's throughput measured just before the
    test (so its one query outlasts the minimum duration); a given guess is used as given. The
    serving table says which throughput was assumed and where it came from."""
    pytest.importorskip("mlperf_loadgen")
    from eebench.serving.offline import EXPECTED_QPS_HEADROOM
    from eebench.serving.table import serving_row

    model, rec, x, policy, th, cache = setup
    session = ServingSession(
        _prepared("torch-cpu", model, cache),
        StrategyConfig("batch-shrinking", batch_size=4),
        x,
        lambda: policy.decider(th, num_exits=rec.num_exits),
    )
    want = offline_decisions(policy, rec, th)

    def samples_per_query(folder: Path) -> int:
        text = (folder / "mlperf_log_summary.txt").read_text()
        return int(text.split("samples_per_query : ", 1)[1].split()[0])

    measured = ScenarioSettings("Offline", min_duration_s=0.2, max_duration_s=5, min_query_count=1)
    run = session.run(measured, tmp_path / "measured")
    cal = run.offline_calibration
    # the default chunk: four batches of 4, at least 32 samples; at least 5 chunks, 0.1 s in all
    assert cal is not None and cal.chunk == 32
    assert len(cal.chunk_seconds) >= 5 and sum(cal.chunk_seconds) >= 0.1
    assert EXPECTED_QPS_HEADROOM == 2.0  # twice the median chunk's rate
    typical = 32 / float(np.median(cal.chunk_seconds))
    assert run.settings.offline_expected_qps == pytest.approx(2 * typical)
    # LoadGen's Offline query holds 1.1 x expected QPS x minimum duration samples
    expected_samples = 1.1 * run.settings.offline_expected_qps * 0.2
    assert abs(samples_per_query(tmp_path / "measured") - expected_samples) <= 1
    row = serving_row(run, measured, want, rec.labels, mode="per-stage", log_root=tmp_path)
    assert row["offline_expected_qps"] == run.settings.offline_expected_qps
    assert row["offline_calibrated_qps"] == pytest.approx(typical)
    assert row["offline_expected_source"].startswith("measured: ")
    assert row["answers_equal_record"]

    given = ScenarioSettings(
        "Offline", min_duration_s=0.2, max_duration_s=5, min_query_count=1, offline_expected_qps=500
    )
    run = session.run(given, tmp_path / "given")
    assert run.offline_calibration is None and samples_per_query(tmp_path / "given") == 110
    row = serving_row(run, given, want, rec.labels, mode="per-stage", log_root=tmp_path)
    assert row["offline_expected_qps"] == 500 and np.isnan(row["offline_calibrated_qps"])
    assert row["offline_expected_source"] == "given: serving.offline_expected_qps"

    server = ScenarioSettings("Server", target_qps=200, min_duration_s=0.1, min_query_count=16)
    row = serving_row(
        session.run(server, tmp_path / "server"),
        server,
        want,
        rec.labels,
        mode="per-stage",
        log_root=tmp_path,
    )
    assert np.isnan(row["offline_expected_qps"]) and row["offline_expected_source"] == ""

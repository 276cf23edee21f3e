"""Deployment modes: the static all-exits graph and the fused graph (ONNX ``If``) give the
per-stage mode's logits within 1e-4 and the exit record's decisions, served by the strategies
each mode supports; the identity graphs behind each mode's overhead floor pass their input on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eebench.backends import get_backend
from eebench.data import get_splits
from eebench.evaluation import record_exits
from eebench.models import create_model
from eebench.policies import create_policy
from eebench.serving import (
    Inbox,
    Request,
    ScenarioSettings,
    ServingSession,
    StrategyConfig,
    Worker,
    check_answers,
    offline_decisions,
)
from eebench.serving.graphs import identity_graph, save_graph
from eebench.serving.modes import MODES, overhead_floor_us, unsupported, whole_graph
from eebench.serving.strategies import STRATEGIES
from eebench.suites.schema import SERVING_MODES

N = 40
MODELS = [
    ("branchynet-resnet", {"depth": 8, "width": 4}),
    ("msdnet", {}),  # multi-scale states: several tensors between stages
    ("big-little", {"width": 4}),  # a cascade: every member from the raw input
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


@pytest.fixture(scope="module")
def splits():
    return get_splits("digits", seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def _setup(name, config, splits):
    torch.manual_seed(0)
    model = create_model(
        name, num_classes=splits.num_classes, input_shape=splits.input_shape, **config
    ).eval()
    rec = record_exits(model, splits.test).subset(slice(0, N))
    policy = create_policy("threshold", confidence="max_softmax")
    conf = policy.scores(rec)
    th = []
    for e in range(rec.num_exits):  # halfway across a wide gap near the median
        s = np.sort(conf[:, e])
        k = int(np.argmax(np.diff(s)[N // 4 : 3 * N // 4])) + N // 4
        th.append(float((s[k] + s[k + 1]) / 2))
    x = np.asarray(splits.test.x[:N], dtype=np.float32)
    return model, rec, policy, np.asarray(th), x


def test_modes_listed_in_the_schema_are_the_serving_modes():
    assert tuple(SERVING_MODES) == tuple(MODES)


@pytest.mark.parametrize(("name", "config"), MODELS)
def test_fused_graph_equals_per_stage_within_1e4(name, config, splits, cache):
    model, rec, policy, th, x = _setup(name, config, splits)
    prepared = get_backend("onnxruntime").prepare(model, threads=1, cache_dir=cache)
    fused = whole_graph("fused", "onnxruntime", prepared, model, 1, th)
    want_exits, _ = offline_decisions(policy, rec, th)
    assert len(set(want_exits.tolist())) > 1  # the thresholds use more than one exit
    for k in range(N):
        logits, e = fused.run(x[k : k + 1])
        # per-stage mode on the same backend: stage by stage up to the exit the graph took
        state = (prepared.to_input(x[k : k + 1]),)
        for i in range(e + 1):
            state = prepared.run_stage(i, state)
        per_stage = prepared.to_numpy(prepared.run_exit(e, state))
        assert e == want_exits[k]
        np.testing.assert_allclose(logits, per_stage, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime"])
@pytest.mark.parametrize(("name", "config"), MODELS)
def test_static_graph_gives_every_exit(name, config, backend, splits, cache):
    model, rec, _, _, x = _setup(name, config, splits)
    opts = {"cache_dir": cache} if backend == "onnxruntime" else {}
    prepared = get_backend(backend).prepare(model, threads=1, **opts)
    static = whole_graph("static", backend, prepared, model, 1)
    for xb, want in ((x, rec.logits), (x[:3], rec.logits[:3]), (x[:1], rec.logits[:1])):
        np.testing.assert_allclose(static.run(xb), want, atol=1e-4, rtol=0)


def _serve(prepared, cfg, x, policy, th, rec, engine, plain_stages=None):
    """Serve every row of ``x`` once through a Worker; the (exits, predictions) it answered."""
    preds = np.full(len(x), -1)
    exits = np.full(len(x), -1)

    def respond(reqs, p, e):
        for r, pi, ei in zip(reqs, p, e):
            preds[r.index], exits[r.index] = pi, ei

    worker = Worker(
        prepared,
        cfg,
        x,
        respond,
        lambda: policy.decider(th, num_exits=rec.num_exits),
        plain_stages=plain_stages,
        engine=engine,
    )
    inbox = Inbox()
    inbox.put([Request(i, i, 0) for i in range(len(x))])
    inbox.close()
    with prepared.activated():
        worker.serve(inbox)
    return exits, preds


@pytest.mark.parametrize(
    ("backend", "mode", "strategy"),
    [
        ("torch-cpu", "static", "per-sample"),
        ("torch-cpu", "static", "wait-for-slowest"),
        ("onnxruntime", "static", "per-sample"),
        ("onnxruntime", "static", "wait-for-slowest"),
        ("onnxruntime", "fused", "per-sample"),
    ],
)
def test_one_graph_modes_answer_the_offline_decisions(backend, mode, strategy, splits, cache):
    model, rec, policy, th, x = _setup("msdnet", {}, splits)
    opts = {"cache_dir": cache} if backend == "onnxruntime" else {}
    prepared = get_backend(backend).prepare(model, threads=1, **opts)
    engine = whole_graph(mode, backend, prepared, model, 1, th)
    cfg = StrategyConfig(strategy, batch_size=6)
    exits, preds = _serve(prepared, cfg, x, policy, th, rec, engine)
    want_exits, want_preds = offline_decisions(policy, rec, th)
    np.testing.assert_array_equal(exits, want_exits)
    np.testing.assert_array_equal(preds, want_preds)


def test_fused_mode_under_loadgen(splits, cache, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    model, rec, policy, th, x = _setup("branchynet-resnet", {"depth": 8, "width": 4}, splits)
    prepared = get_backend("onnxruntime").prepare(model, threads=1, cache_dir=cache)
    engine = whole_graph("fused", "onnxruntime", prepared, model, 1, th)
    session = ServingSession(
        prepared,
        StrategyConfig("per-sample"),
        x,
        lambda: policy.decider(th, num_exits=rec.num_exits),
        engine=engine,
    )
    settings = ScenarioSettings(
        "Server",
        target_qps=200,
        latency_bound_ms=1000,
        percentile=0.9,
        min_duration_s=0.3,
        min_query_count=64,
    )
    run = session.run(settings, tmp_path)
    assert run.result.valid
    assert check_answers(run.exits, run.predictions, *offline_decisions(policy, rec, th)).equal


def test_unsupported_combinations_say_why(splits, cache):
    assert unsupported("per-stage", "regroup") is None
    assert "cannot drop rows" in unsupported("static", "batch-shrinking")
    assert "regroup survivors" in unsupported("static", "regroup")
    assert "one sample at a time" in unsupported("fused", "wait-for-slowest")
    assert "runs per stage" in unsupported("fused", "plain")
    model, rec, policy, th, x = _setup("big-little", {"width": 4}, splits)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    with pytest.raises(ValueError, match="serve it on onnxruntime"):
        whole_graph("fused", "torch-cpu", prepared, model, 1, th)
    engine = whole_graph("static", "torch-cpu", prepared, model, 1)
    with pytest.raises(ValueError, match="in mode 'static'.*cannot drop rows"):
        Worker(
            prepared,
            StrategyConfig("batch-shrinking"),
            x,
            lambda *a: None,
            lambda: None,
            engine=engine,
        )


@pytest.mark.parametrize("fused", [False, True])
def test_identity_graphs_pass_their_input_on(fused, tmp_path):
    import onnxruntime as ort

    path = save_graph(identity_graph((1, 1, 8, 8), fused, 17), tmp_path, "identity")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    np.testing.assert_array_equal(sess.run(["y"], {"x": x})[0], x)
    assert save_graph(identity_graph((1, 1, 8, 8), fused, 17), tmp_path, "identity") == path


@pytest.mark.parametrize(
    ("mode", "backend"),
    [
        ("per-stage", "torch-cpu"),
        ("static", "torch-cpu"),
        ("per-stage", "onnxruntime"),
        ("fused", "onnxruntime"),
    ],
)
def test_overhead_floor_is_a_positive_median(mode, backend, tmp_path):
    floor = overhead_floor_us(mode, backend, (1, 8, 8), 1, tmp_path, calls=50)
    assert 0 < floor < 1e6


def test_compiled_mode_refuses_onnxruntime_with_the_reason(tmp_path):
    # refused before anything is prepared or compiled
    for backend in ("onnxruntime", "onnxruntime@rpi5"):
        with pytest.raises(ValueError, match=r"runs on torch-cpu or torch-cuda.*ONNX graphs"):
            whole_graph("compiled", backend, None, None, 1)
    with pytest.raises(ValueError, match="no overhead floor for mode 'compiled'"):
        overhead_floor_us("compiled", "onnxruntime", (1, 8, 8), 1, tmp_path, calls=5)
    # the control flow stays on the host: every strategy, the plain network too
    assert all(unsupported("compiled", s) is None for s in STRATEGIES)


def test_part_wise_deployment_runs_every_strategy_through_its_parts(splits):
    """A ``compiled`` deployment's strategies run through its prepared model, not the eager one:
    here its parts are the eager static paths, counted (no compiler needed)."""
    from eebench.serving.compiled import CompiledPrepared
    from eebench.serving.modes import Deployment

    model, rec, policy, th, x = _setup("msdnet", {}, splits)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    calls = {"stage": 0, "exit": 0}

    def counted(kind, module):
        def run(*tensors):
            calls[kind] += 1
            return module(*tensors)

        return run

    m = prepared.model
    parts = CompiledPrepared(
        prepared,
        [counted("stage", m.stage_module(i)) for i in range(m.num_stages)],
        [counted("exit", m.exit_module(i)) for i in range(m.num_stages)],
    )
    engine = Deployment("compiled", "torch-cpu", None, {}, parts, build_s=0.0)
    want_exits, want_preds = offline_decisions(policy, rec, th)
    for strategy in ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup"):
        before = dict(calls)
        exits, preds = _serve(prepared, StrategyConfig(strategy, 6), x, policy, th, rec, engine)
        np.testing.assert_array_equal(exits, want_exits)
        np.testing.assert_array_equal(preds, want_preds)
        assert calls["stage"] > before["stage"] and calls["exit"] > before["exit"]

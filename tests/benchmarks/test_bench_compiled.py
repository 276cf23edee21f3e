"""The ``compiled`` deployment mode for real: a tiny two-stage cascade's stages and exit heads
compiled by ``torch.compile`` (inductor) give the eager logits within 1e-4, and every strategy
served through them answers the exit record's decisions without compiling again.

Compiling takes tens of seconds on a loaded 2-core machine, so this is a benchmark, skipped by
the default test run (``--benchmark-skip``); run it with
``pytest tests/benchmarks/test_bench_compiled.py --benchmark-only``. Skipped where inductor
cannot compile (no C++ compiler for CPU kernels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eebench.backends import get_backend
from eebench.data import get_splits
from eebench.evaluation import record_exits
from eebench.models import create_model
from eebench.policies import create_policy
from eebench.serving import StrategyConfig, offline_decisions
from eebench.serving.compiled import inductor_problem
from eebench.serving.modes import whole_graph
from tests.test_serving_modes import _serve as serve_rows

N = 40
BATCH = 4


@pytest.fixture(scope="module")
def compiled():
    why = inductor_problem("cpu")
    if why is not None:
        pytest.skip(why)
    torch.manual_seed(0)
    splits = get_splits("digits", seed=0)
    model = create_model(
        "big-little", num_classes=splits.num_classes, input_shape=splits.input_shape, width=4
    ).eval()
    assert model.num_stages == 2
    rec = record_exits(model, splits.test).subset(slice(0, N))
    policy = create_policy("threshold", confidence="max_softmax")
    s = np.sort(policy.scores(rec)[:, 0])
    k = int(np.argmax(np.diff(s)[N // 4 : 3 * N // 4])) + N // 4  # a wide gap near the median
    th = np.asarray([(s[k] + s[k + 1]) / 2, 0.0])
    x = np.asarray(splits.test.x[:N], dtype=np.float32)
    prepared = get_backend("torch-cpu").prepare(model, batch_size=BATCH, threads=1)
    engine = whole_graph("compiled", "torch-cpu", prepared, model, 1, th)
    return prepared, engine, rec, policy, th, x


def _serve(prepared, engine, strategy, x, policy, th, rec):
    """Every row served once with ``strategy``; the plain network is the cascade's last member."""
    cfg = StrategyConfig(strategy, BATCH)
    return serve_rows(prepared, cfg, x, policy, th, rec, engine, plain_stages=[0, 1])


def test_bench_compiled_parts_serve_the_exit_record(compiled, benchmark):
    prepared, engine, rec, policy, th, x = compiled
    assert engine.build_s > 0
    assert all(n >= 1 for n in engine.describe["graphs"].values())  # every part compiled
    assert set(engine.describe["graphs"]) == {"stage 0", "stage 1", "exit 0", "exit 1"}
    parts = engine.prepared
    want_exits, want_preds = offline_decisions(policy, rec, th)
    assert len(set(want_exits.tolist())) == 2  # both exits are used
    # nothing compiles while serving: a recompile would raise here
    with torch.compiler.set_stance("fail_on_recompile"):
        with parts.activated():
            for xb, want in ((x[: 2 * BATCH - 1], rec.logits), (x[:1], rec.logits)):
                got = [parts.to_numpy(v) for v in parts.run_all(parts.to_input(xb))]
                np.testing.assert_allclose(np.stack(got, 1), want[: len(xb)], atol=1e-4, rtol=0)
        for strategy in ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup"):
            exits, preds = _serve(prepared, engine, strategy, x, policy, th, rec)
            np.testing.assert_array_equal(exits, want_exits)
            np.testing.assert_array_equal(preds, want_preds)
        exits, preds = _serve(prepared, engine, "plain", x, policy, th, rec)
        np.testing.assert_array_equal(preds, rec.logits[:, -1].argmax(1))
        benchmark(_serve, prepared, engine, "batch-shrinking", x, policy, th, rec)

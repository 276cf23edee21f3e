"""The true early-exit executor: on every registered model and on torch-cpu and onnxruntime,
its predictions and exit indices equal a vectorised max-softmax threshold rule applied to
forward_all's logits, sample by sample, per sample and with batch shrinking; it does no
wasted work and makes one host copy per exit evaluated."""

import numpy as np
import pytest
import torch

from eebench.backends import (
    DeciderError,
    EarlyExitExecutor,
    ExecutionResult,
    ExitDecider,
    get_backend,
)
from eebench.costs import plain_network
from eebench.models import InputShapeError, create_model, list_models

SHAPES = [(1, 8, 8), (3, 32, 32), (3, 64, 64)]
N = 8
MIN_MARGIN = 1e-4  # the threshold sits at least this far from every confidence (ORT differs ~1e-6)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "onnx-cache"


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class MaxSoftmaxDecider:
    """Leave when the top softmax probability reaches ``theta``."""

    def __init__(self, theta: float) -> None:
        self.theta = theta
        self.resets: list[int] = []

    def reset(self, batch_size: int) -> None:
        self.resets.append(batch_size)

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        return softmax(logits).max(axis=1) >= self.theta


def vectorised_rule(logits: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, E, C): first exit whose max softmax >= theta (the last exit otherwise)."""
    conf = softmax(logits).max(axis=-1)
    fires = conf >= theta
    fires[:, -1] = True
    exits = fires.argmax(axis=1)
    preds = logits[np.arange(len(exits)), exits].argmax(axis=1)
    return preds, exits


def pick_threshold(logits: np.ndarray) -> float:
    """A threshold near the median confidence of the first exit (so about half the samples
    leave there and the rest go on), at least MIN_MARGIN from every early exit's confidence so
    that backend rounding cannot move a sample across it."""
    every = softmax(logits[:, :-1]).max(axis=-1).ravel()
    first = np.sort(softmax(logits[:, 0]).max(axis=-1))
    mids = (first[1:] + first[:-1]) / 2
    centre = len(mids) // 2
    for k in sorted(range(len(mids)), key=lambda k: abs(k - centre)):
        if np.abs(every - mids[k]).min() > MIN_MARGIN:
            return float(mids[k])
    return float(every.max() + 1.0)  # degenerate: nothing exits early


def build_small(name: str):
    for shape in SHAPES:
        try:
            return create_model(name, num_classes=10, input_shape=shape).eval()
        except InputShapeError:
            continue
    pytest.fail(f"{name} builds on none of {SHAPES}")


def reference(model, x):
    with torch.no_grad():
        logits = torch.stack(model.forward_all(x), dim=1).numpy()
    theta = pick_threshold(logits)
    return logits, theta, *vectorised_rule(logits, theta)


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime"])
@pytest.mark.parametrize("name", list_models())
def test_executor_equals_the_vectorised_rule_on_every_model(name, backend, onnx_cache):
    model = build_small(name)
    x = torch.randn(N, *model.input_shape, generator=torch.Generator().manual_seed(3))
    logits, theta, want_preds, want_exits = reference(model, x)
    opts = {"cache_dir": onnx_cache} if backend == "onnxruntime" else {}
    prepared = get_backend(backend).prepare(model, threads=1, **opts)
    decider = MaxSoftmaxDecider(theta)
    executor = EarlyExitExecutor(prepared, decider)
    for mode, bs in (("per-sample", None), ("batched", 3), ("batched", N)):
        got = executor.run(x, mode=mode, batch_size=bs)
        assert got.exit_indices.tolist() == want_exits.tolist(), f"{mode} bs={bs}"
        assert got.predictions.tolist() == want_preds.tolist(), f"{mode} bs={bs}"
        assert (got.latency_ns > 0).all()
    assert len(set(want_exits.tolist())) > 1 or theta > 1, "the threshold should mix exits"


class CountingPrepared:
    """Wraps a prepared model and counts what runs (delegating everything else)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.stages = 0
        self.heads = 0
        self.host_copies = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_stage(self, i, state):
        self.stages += 1
        return self.inner.run_stage(i, state)

    def run_exit(self, i, state):
        self.heads += 1
        return self.inner.run_exit(i, state)

    def to_numpy(self, value):
        self.host_copies += 1
        return self.inner.to_numpy(value)


def test_per_sample_mode_does_no_wasted_work_and_one_host_copy_per_exit():
    model = build_small("cascade")
    x = torch.randn(N, *model.input_shape, generator=torch.Generator().manual_seed(5))
    _, theta, _, want_exits = reference(model, x)
    counting = CountingPrepared(get_backend("torch-cpu").prepare(model, threads=1))
    decider = MaxSoftmaxDecider(theta)
    result = EarlyExitExecutor(counting, decider).run(x, mode="per-sample")
    executed = int((want_exits + 1).sum())
    assert counting.stages == counting.heads == counting.host_copies == executed
    assert decider.resets == [1] * N
    # decide() runs at every exit a sample reaches except the last, where it always leaves
    E = model.num_exits
    calls = [int((want_exits >= e).sum()) for e in range(E - 1)] + [0]
    assert result.decision_calls.tolist() == calls
    assert (
        np.isnan(result.decision_overhead_us[-1]) and (result.decision_overhead_us[:-1] > 0).all()
    )
    assert result.exit_fractions.sum() == pytest.approx(1.0)


def test_batched_mode_shrinks_the_batch():
    model = build_small("cascade")
    x = torch.randn(N, *model.input_shape, generator=torch.Generator().manual_seed(5))
    _, theta, _, want_exits = reference(model, x)
    counting = CountingPrepared(get_backend("torch-cpu").prepare(model, threads=1))
    seen_rows = []
    inner = counting.run_stage

    def run_stage(i, state):
        seen_rows.append((i, int(state[0].shape[0])))
        return inner(i, state)

    counting.run_stage = run_stage
    EarlyExitExecutor(counting, MaxSoftmaxDecider(theta)).run(x, mode="batched", batch_size=N)
    for i, rows in seen_rows:
        assert rows == int((want_exits >= i).sum())  # only samples still in flight run stage i


def test_baselines_compute_everything_and_agree_on_predictions():
    model = build_small("cascade")
    x = torch.randn(N, *model.input_shape, generator=torch.Generator().manual_seed(5))
    logits, theta, want_preds, want_exits = reference(model, x)
    counting = CountingPrepared(get_backend("torch-cpu").prepare(model, threads=1))
    agg = EarlyExitExecutor(counting, MaxSoftmaxDecider(theta)).run(x, mode="aggregation")
    assert counting.heads == N * model.num_exits  # every exit computed
    assert (
        agg.predictions.tolist() == want_preds.tolist()
        and agg.exit_indices.tolist() == want_exits.tolist()
    )
    counting.heads = counting.stages = 0
    plain = plain_network(model.family, model.num_exits).stages
    backbone = EarlyExitExecutor(counting).run(x, mode="backbone", plain_stages=plain)
    # a cascade's plain network: its last member alone (one stage, one head per sample)
    assert counting.heads == N and counting.stages == N
    assert backbone.predictions.tolist() == logits[:, -1].argmax(axis=1).tolist()
    assert (backbone.exit_indices == model.num_exits - 1).all()


def test_result_round_trips_and_is_labelled_measured():
    model = build_small("cascade")
    x = torch.randn(4, *model.input_shape)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    result = EarlyExitExecutor(prepared, MaxSoftmaxDecider(0.0)).run(x)
    assert (result.exit_indices == 0).all()  # theta 0: everything leaves at the first exit
    d = result.to_dict()
    assert d["source"] == "measured:torch-cpu" and d["backend"]["threads"] == 1
    back = ExecutionResult.from_dict(d)
    assert back.predictions.tolist() == result.predictions.tolist()
    assert back.latency_ns.tolist() == result.latency_ns.tolist()


def test_a_decider_with_the_wrong_output_is_refused():
    class Bad:
        def reset(self, batch_size):
            pass

        def decide(self, exit_index, logits, active):
            return softmax(logits).max(axis=1)  # floats, not a mask

    model = build_small("cascade")
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    assert isinstance(Bad(), ExitDecider)
    with pytest.raises(DeciderError, match="expected a boolean array of shape \\(1,\\)"):
        EarlyExitExecutor(prepared, Bad()).run(torch.zeros(2, *model.input_shape))
    with pytest.raises(ValueError, match="needs an exit decider"):
        EarlyExitExecutor(prepared).run(torch.zeros(2, *model.input_shape))


def test_batched_baselines_agree_with_batched_early_exit():
    model = build_small("cascade")
    x = torch.randn(N, *model.input_shape, generator=torch.Generator().manual_seed(5))
    logits, theta, want_preds, want_exits = reference(model, x)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    agg = EarlyExitExecutor(prepared, MaxSoftmaxDecider(theta)).run(
        x, mode="aggregation", batch_size=3
    )
    assert agg.batch_size == 3
    assert (
        agg.predictions.tolist() == want_preds.tolist()
        and agg.exit_indices.tolist() == want_exits.tolist()
    )
    assert len(set(agg.latency_ns[:3].tolist())) == 1  # a batch finishes together
    bb = EarlyExitExecutor(prepared).run(
        x, mode="backbone", batch_size=4, plain_stages=(model.num_stages - 1,)
    )
    assert bb.predictions.tolist() == logits[:, -1].argmax(axis=1).tolist()


class ScriptedClock:
    """A fake clock that the scripted model and decider advance by known amounts."""

    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


class ScriptedPrepared:
    """Three stages whose stage, head and host copy take known times on a :class:`ScriptedClock`;
    the logits say which exit a max-softmax rule leaves at (row k of ``confident`` per exit)."""

    num_stages = 3
    STAGE_NS = (100, 200, 400)
    HEAD_NS = (10, 20, 40)
    COPY_NS = 3

    def __init__(self, clock: ScriptedClock, leave_at: list[int]) -> None:
        self.clock = clock
        self.leave_at = leave_at

    def activated(self):
        import contextlib

        return contextlib.nullcontext(self)

    def describe(self):
        return {"backend": "scripted", "device": "cpu", "threads": 1}

    def to_input(self, x):
        return int(x[0, 0])

    def run_stage(self, i, state):
        self.clock.now += self.STAGE_NS[i]
        return state

    def run_exit(self, i, state):
        self.clock.now += self.HEAD_NS[i]
        return np.array([[9.0, 0.0]]) if self.leave_at[state[0]] == i else np.zeros((1, 2))

    def to_numpy(self, value):
        self.clock.now += self.COPY_NS
        return value


class ScriptedDecider:
    DECIDE_NS = 7

    def __init__(self, clock: ScriptedClock) -> None:
        self.clock = clock
        self.calls: list[int] = []

    def reset(self, batch_size: int) -> None:
        pass

    def decide(self, exit_index, logits, active):
        self.clock.now += self.DECIDE_NS
        self.calls.append(exit_index)
        return logits[:, 0] > 1.0


def test_per_sample_latency_splits_into_stage_head_and_decision_intervals_that_sum_to_it():
    clock = ScriptedClock()
    leave_at = [0, 1, 2, 1]  # sample k leaves at this exit (2 = the final one)
    prepared = ScriptedPrepared(clock, leave_at)
    decider = ScriptedDecider(clock)
    x = np.arange(4)[:, None]
    res = EarlyExitExecutor(prepared, decider, clock=clock).run(x, mode="per-sample")
    s, h, c, d = prepared.STAGE_NS, prepared.HEAD_NS, prepared.COPY_NS, decider.DECIDE_NS
    assert res.exit_indices.tolist() == leave_at
    for k, e in enumerate(leave_at):
        want = np.zeros((3, 3), dtype=np.int64)
        for i in range(e + 1):
            want[i] = (s[i], h[i] + c, d if i < 2 else 0)
        assert res.part_ns[k].tolist() == want.tolist(), k
        assert res.latency_ns[k] == want.sum()
    # decisions: exit 0 for every sample, exit 1 for the three that got past exit 0
    assert res.decision_calls.tolist() == [4, 3, 0]
    assert res.decision_ns.tolist() == [4 * d, 3 * d, 0]
    back = ExecutionResult.from_dict(res.to_dict())
    assert back.part_ns.tolist() == res.part_ns.tolist()


def test_parts_mode_times_every_part_and_still_leaves_where_the_decision_fired():
    clock = ScriptedClock()
    leave_at = [0, 1, 2]
    prepared = ScriptedPrepared(clock, leave_at)
    decider = ScriptedDecider(clock)
    x = np.arange(3)[:, None]
    res = EarlyExitExecutor(prepared, decider, clock=clock).run(x, mode="parts")
    s, h, c, d = prepared.STAGE_NS, prepared.HEAD_NS, prepared.COPY_NS, decider.DECIDE_NS
    full = [[s[i], h[i] + c, d if i < 2 else 0] for i in range(3)]
    assert res.part_ns.tolist() == [full] * 3  # every part of every sample, left early or not
    assert res.exit_indices.tolist() == leave_at
    assert res.predictions.tolist() == [0, 0, 0]
    assert decider.calls == [0, 1] * 3
    # latency is still up to the decision that fired: exit 0 -> stage 0, head 0, decision 0
    assert res.latency_ns.tolist() == [
        s[0] + h[0] + c + d,
        s[0] + s[1] + h[0] + h[1] + 2 * c + 2 * d,
        sum(s) + sum(h) + 3 * c + 2 * d,
    ]
    assert res.decision_calls.tolist() == [3, 3, 0]


def test_results_of_consecutive_slices_concatenate_into_one_run():
    clock = ScriptedClock()
    leave_at = [0, 1, 2, 1]
    prepared = ScriptedPrepared(clock, leave_at)
    executor = EarlyExitExecutor(prepared, ScriptedDecider(clock), clock=clock)
    x = np.arange(4)[:, None]
    whole = executor.run(x)
    joined = ExecutionResult.concatenate([executor.run(x[k : k + 1]) for k in range(4)])
    for name in ("exit_indices", "predictions", "latency_ns", "decision_ns", "decision_calls"):
        assert getattr(joined, name).tolist() == getattr(whole, name).tolist(), name
    assert joined.part_ns.tolist() == whole.part_ns.tolist()
    with pytest.raises(ValueError, match="differ in mode"):
        ExecutionResult.concatenate([whole, executor.run(x, mode="parts")])

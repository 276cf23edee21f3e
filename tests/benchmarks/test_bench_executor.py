"""The true early-exit executor's per-exit decision, alone and in the per-sample loop.

A per-sample early-exit run pays, at every exit it passes, one head, one
host copy and one ``decide`` call: ``decide`` must stay a few microseconds
(goal: <= 5 us at batch 1) or it eats the saving of leaving early.
``test_bench_decide`` times ``reset(1)`` plus one ``decide`` per policy on one
row of exit-0 logits as the backend hands them to the executor (torch-cpu:
a tensor's numpy view; onnxruntime: the session's output array).
``test_bench_executor_per_sample`` times the whole loop on both backends at
the calibrated operating point and at a fixed threshold; its ``extra_info``
carries the decision time per exit inside the loop (the executor's own clock,
right after each stage and head: caches are colder there than in the tight
``decide`` loop), the exit rates and the expected and full-network MACs
(analytic).

Run: ``pytest tests/benchmarks/test_bench_executor.py --benchmark-only``
"""

import numpy as np
import pytest

from eebench.backends import EarlyExitExecutor, get_backend
from eebench.policies import LearnedGatePolicy, PatiencePolicy, ThresholdPolicy

DECIDERS = {
    "threshold[max_softmax]": lambda trained: (ThresholdPolicy("max_softmax"), 0.9),
    "threshold[score_margin]": lambda trained: (ThresholdPolicy("score_margin"), 0.8),
    "threshold[entropy]": lambda trained: (ThresholdPolicy("entropy"), 0.9),
    "patience": lambda trained: (PatiencePolicy(), 2),
    "learned-gate": lambda trained: (LearnedGatePolicy().fit(trained.val), 0.9),
}
BACKENDS = ["torch-cpu", "onnxruntime"]
SAMPLES = 100


def prepare(trained, backend: str, tmp_path_factory):
    opts = (
        {"cache_dir": tmp_path_factory.getbasetemp() / "onnx"} if backend == "onnxruntime" else {}
    )
    return get_backend(backend).prepare(trained.model, batch_size=1, threads=1, **opts)


def exit0_logits(prepared, x) -> np.ndarray:
    """Exit 0's logits of one sample exactly as the executor hands them to ``decide``."""
    with prepared.activated():
        state = prepared.run_stage(0, (prepared.to_input(x[:1]),))
        return prepared.to_numpy(prepared.run_exit(0, state))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("policy_name", list(DECIDERS))
def test_bench_decide(benchmark, trained, policy_name, backend, tmp_path_factory):
    policy, threshold = DECIDERS[policy_name](trained)
    e = trained.test.num_exits
    decider = policy.decider(threshold, num_exits=e)
    row = exit0_logits(prepare(trained, backend, tmp_path_factory), trained.splits.test.x)
    active = np.zeros(1, dtype=np.int64)

    def decide_first_exit():
        decider.reset(1)
        return decider.decide(0, row, active)

    fire = benchmark(decide_first_exit)
    assert fire.shape == (1,) and fire.dtype == np.bool_

    # exit rates of this decider over the test record, through the same online decisions
    exits = np.full(trained.test.num_samples, e - 1)
    for k in range(trained.test.num_samples):
        decider.reset(1)
        for i in range(e - 1):
            if decider.decide(i, trained.test.logits[k : k + 1, i, :], active)[0]:
                exits[k] = i
                break
    rates = np.bincount(exits, minlength=e) / len(exits)
    macs = trained.cumulative_macs
    benchmark.extra_info.update(
        {
            "model": trained.label,
            "backend": backend,
            "logits": f"{type(row).__name__} {row.dtype} {row.shape}",
            "policy": policy_name,
            "threshold": threshold,
            "decide_us": benchmark.stats.stats.median * 1e6,
            "exit_rates": [round(float(r), 4) for r in rates],
            "expected_macs": float(rates @ macs),
            "final_exit_macs": float(macs[-1]),
            "macs_source": "analytic (1 MAC = one multiply-add; FLOPs = 2 x MACs)",
        }
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("operating_point", ["calibrated", "max_softmax>=0.9"])
def test_bench_executor_per_sample(
    benchmark, trained, calibrated, operating_point, backend, tmp_path_factory
):
    """``calibrated``: the quick suite's first target; on digits it sends nearly every sample
    out at exit 0, so ``max_softmax>=0.9`` (a fixed threshold) exercises every exit too."""
    policy, cal = calibrated
    test = trained.test
    if operating_point == "calibrated":
        thresholds = cal.thresholds
        described = "threshold[max_softmax], within 1% of the final exit's val accuracy"
    else:
        thresholds = np.full(test.num_exits, 0.9)
        described = "threshold[max_softmax] >= 0.9 at every exit (fixed)"
    prepared = prepare(trained, backend, tmp_path_factory)
    decider = policy.decider(thresholds, num_exits=test.num_exits)
    executor = EarlyExitExecutor(prepared, decider)
    x = trained.splits.test.x[:SAMPLES]
    executor.run(x[:5])  # warm up
    result = benchmark.pedantic(executor.run, args=(x,), rounds=3, iterations=1)

    # the executor leaves where the vectorised evaluation of the same thresholds says
    from eebench.evaluation import exit_indices

    expected = np.asarray(
        exit_indices(policy.scores(test.subset(slice(0, SAMPLES))), thresholds[None, :])
    )[0]
    np.testing.assert_array_equal(result.exit_indices, expected)
    macs = trained.cumulative_macs
    rates = result.exit_fractions
    benchmark.extra_info.update(
        {
            "model": trained.label,
            "backend": prepared.describe(),
            "samples": SAMPLES,
            "operating_point": described,
            "thresholds": [float(t) for t in thresholds],
            "exit_rates": [round(float(r), 4) for r in rates],
            "expected_macs": float(rates @ macs),
            "final_exit_macs": float(macs[-1]),
            "macs_source": "analytic (1 MAC = one multiply-add; FLOPs = 2 x MACs)",
            "mean_latency_us_measured": result.mean_latency_ns / 1e3,
            "decide_us_per_exit_measured": [
                None if np.isnan(v) else round(float(v), 2) for v in result.decision_overhead_us
            ],
            "accuracy": result.accuracy(test.labels[:SAMPLES]),
        }
    )

"""The true early-exit executor's per-exit decision, alone and in the per-sample loop.

A per-sample early-exit run pays, at every exit it passes, one head, one
host copy and one ``decide`` call: ``decide`` must stay a few microseconds or
it eats the saving of leaving early. ``test_bench_decide`` times one call on
one row of logits per policy; ``test_bench_executor_per_sample`` times the
whole loop on torch-cpu at the calibrated operating point. ``extra_info``
carries the exit rates and the expected and full-network MACs (analytic).

Run: ``pytest tests/benchmarks --benchmark-only``
"""

import numpy as np
import pytest

from eebench.backends import EarlyExitExecutor, get_backend
from eebench.policies import PatiencePolicy, ThresholdPolicy

DECIDERS = {
    "threshold[max_softmax]": lambda: (ThresholdPolicy("max_softmax"), 0.9),
    "threshold[score_margin]": lambda: (ThresholdPolicy("score_margin"), 0.8),
    "threshold[entropy]": lambda: (ThresholdPolicy("entropy"), 0.9),
    "patience": lambda: (PatiencePolicy(), 2),
}
SAMPLES = 100


@pytest.mark.parametrize("policy_name", list(DECIDERS))
def test_bench_decide(benchmark, trained, policy_name):
    policy, threshold = DECIDERS[policy_name]()
    e = trained.test.num_exits
    decider = policy.decider(threshold, num_exits=e)
    row = np.ascontiguousarray(trained.test.logits[:1, 0, :])
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
            "policy": policy_name,
            "threshold": threshold,
            "decide_us": benchmark.stats.stats.median * 1e6,
            "exit_rates": [round(float(r), 4) for r in rates],
            "expected_macs": float(rates @ macs),
            "final_exit_macs": float(macs[-1]),
            "macs_source": "analytic (1 MAC = one multiply-add; FLOPs = 2 x MACs)",
        }
    )


@pytest.mark.parametrize("operating_point", ["calibrated", "max_softmax>=0.9"])
def test_bench_executor_per_sample(benchmark, trained, calibrated, operating_point):
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
    prepared = get_backend("torch-cpu").prepare(trained.model, batch_size=1, threads=1)
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

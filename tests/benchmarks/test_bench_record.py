"""Exit recording: one pass of ``forward_all`` over a split, every exit's logits kept.

Recording is the only time eebench runs a model over a whole split; every
policy, threshold and budget is evaluated on the record afterwards.
``extra_info`` carries the analytic MACs a sample costs when every exit runs
and the exit rates of the calibrated max-softmax operating point on the
record just made.

Run: ``pytest tests/benchmarks --benchmark-only``
"""

import numpy as np
import pytest
import torch

from eebench.evaluation import exit_indices, record_exits


@pytest.mark.parametrize("batch_size", [1, 256])
def test_bench_record_exits(benchmark, trained, calibrated, batch_size):
    split = trained.splits.test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = benchmark.pedantic(
            record_exits,
            args=(trained.model, split),
            kwargs={"batch_size": batch_size},
            rounds=3,
            iterations=1,
            warmup_rounds=1,
        )
    finally:
        torch.set_num_threads(threads)
    n, e = record.num_samples, record.num_exits
    assert record.logits.shape == (n, e, trained.model.num_classes)
    assert n == len(split.y)
    # the same weights give the same record as the fixture's (batch size must not matter)
    np.testing.assert_allclose(record.logits, trained.test.logits, rtol=1e-4, atol=1e-4)

    policy, cal = calibrated
    exits = np.asarray(exit_indices(policy.scores(record), cal.thresholds[None, :]))[0]
    rates = np.bincount(exits, minlength=e) / n
    macs = trained.cumulative_macs
    benchmark.extra_info.update(
        {
            "model": trained.label,
            "samples": n,
            "exits": e,
            "batch_size": batch_size,
            "threads": 1,
            "macs_per_sample_all_exits": float(macs[-1]),
            "macs_source": "analytic (1 MAC = one multiply-add; FLOPs = 2 x MACs)",
            "exit_accuracy": [round(float(a), 4) for a in record.exit_accuracy],
            "exit_rates_calibrated": [round(float(r), 4) for r in rates],
            "calibration": "threshold[max_softmax], within 1% of the final exit's val accuracy",
            "expected_macs_calibrated": float(rates @ macs),
            "samples_per_s": n / benchmark.stats.stats.mean,
        }
    )

"""One stage per backend: the building block of every latency eebench measures and predicts.

Every registered backend (not the ``simulated:`` family, which estimates
rather than runs) runs stage 1 of the trained model on the state stage 0
produced for one test sample (batch 1, one thread). A backend that cannot
run here (``torch-cuda`` without a GPU) is skipped with its reason.
``extra_info`` carries the stage's analytic MACs and the exit rates of the
calibrated operating point (the fraction of samples that reach this stage is
what the stage's latency is weighted by).

Run: ``pytest tests/benchmarks --benchmark-only``
"""

import pytest

from eebench.backends import BACKENDS, get_backend

STAGE = 1


@pytest.mark.parametrize("backend_name", BACKENDS.names())
def test_bench_stage(benchmark, trained, calibrated, backend_name, pytestconfig):
    backend = get_backend(backend_name)
    ok, reason = backend.available()
    if not ok:
        pytest.skip(f"{backend_name}: {reason}")
    cache = pytestconfig.rootpath / "results" / "cache" / "onnx"  # shared with eebench run and asv
    options = {"cache_dir": cache} if backend_name == "onnxruntime" else {}
    prepared = backend.prepare(trained.model, batch_size=1, threads=1, **options)
    with prepared.activated():
        states = prepared.stage_inputs(prepared.to_input(trained.splits.test.x[:1]))
        stage_in = states[STAGE]

        def run_stage():
            out = prepared.run_stage(STAGE, stage_in)
            prepared.sync()
            return out

        out = benchmark(run_stage)
    assert len(out) == len(states[STAGE + 1])

    _, cal = calibrated
    rates = [float(cal.test[f"exit_frac_{i}"]) for i in range(trained.test.num_exits)]
    reach = 1.0 - sum(rates[:STAGE])
    benchmark.extra_info.update(
        {
            "model": trained.label,
            "stage": STAGE,
            "backend": prepared.describe(),
            "stage_macs": float(trained.costs.stage_macs[STAGE]),
            "macs_source": "analytic (1 MAC = one multiply-add; FLOPs = 2 x MACs)",
            "exit_rates_calibrated": [round(r, 4) for r in rates],
            "fraction_reaching_stage": round(reach, 4),
            "expected_stage_macs_per_sample": reach * float(trained.costs.stage_macs[STAGE]),
        }
    )

#!/usr/bin/env bash
# Smoke test of the asv benchmarks in the current Python environment (no virtualenv builds,
# no network): `asv check`, then one benchmark of each kind (time_, peakmem_, track_) run
# once (--quick) on the small suite benchmarks/smoke.yaml. Nothing is saved to results/asv
# (an existing environment without --set-commit-hash never saves), so the smoke suite's numbers
# never mix with the history of the real suite. Exits non-zero when a benchmark fails.
#
#   bash benchmarks/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export EEBENCH_ASV_SUITE=benchmarks/smoke.yaml
asv=(python -m asv)

# asv needs a description of this machine; write the default one only if there is none
if [ ! -f "${ASV_MACHINE_FILE:-$HOME/.asv-machine.json}" ]; then
    "${asv[@]}" machine --yes >/dev/null
fi

"${asv[@]}" check -E existing:same

model="'lenet-smoke'"
"${asv[@]}" run -E existing:same --quick --show-stderr \
    -b "^bench_stages\.StageLatency\.time_stage\($model, 'torch-cpu', 1, 1, 0\)$" \
    -b "^bench_stages\.PeakMemory\.peakmem_prepare_and_run\($model, 'onnxruntime', 1, 1\)$" \
    -b "^bench_operating_points\.CalibratedOperatingPoints\.track_accuracy\($model," \
    -b "^bench_operating_points\.LatencyPrediction\.track_latency_ratio\($model, 'torch-cpu'\)$" \
    -b "^bench_models\.RegisteredModels\.track_macs\('big-little'\)$"

"""Backends report: per-part latency per backend, predicted vs measured true early-exit latency,
speedups over aggregation and over the plain network, and the onnxruntime/torch ratio.

For every registered model on digits-shaped (1x8x8) and CIFAR-shaped (3x32x32) input:

1. The model is trained briefly (joint loss over all exits, a few seconds) on scikit-learn's
   bundled digits; for the CIFAR shape the digits are resized to 32x32 and repeated over 3
   channels. Nothing is downloaded.
2. A max-softmax threshold is chosen on a calibration half of the held-out digits: the
   smallest one whose early-exit accuracy reaches the final exit's (the plain backbone's)
   accuracy there. All three runs are then compared on the other half.
3. Per backend (torch-cpu and onnxruntime, equal thread counts, batch 1): every stage and
   exit head is timed on its own; the true early-exit executor runs sample by sample, then
   the aggregation baseline (every exit computed) and the plain network (every stage, final
   head only; a cascade's last member alone). Predicted latency per sample = the sum of the mean latencies of the parts it ran
   (so the mean of the predictions is comparable with the measured mean).

Run:  python benchmarks/backends_report.py [--models 'sdn-*'] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_cal: torch.Tensor
    y_cal: np.ndarray
    x_test: torch.Tensor
    y_test: np.ndarray


def digits_data(shape: tuple[int, int, int], seed: int = 0) -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    if shape[1:] != (8, 8):
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
    x = x.repeat(1, shape[0], 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train, n_cal = 1200, 300
    return Data(
        x[:n_train],
        y[:n_train],
        x[n_train : n_train + n_cal],
        y[n_train : n_train + n_cal].numpy(),
        x[n_train + n_cal :],
        y[n_train + n_cal :].numpy(),
    )


def train_briefly(model, data: Data, seconds: float, max_epochs: int = 8) -> tuple[int, float]:
    """Joint training (sum of the exits' cross-entropies) until the time budget is spent."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    start = time.perf_counter()
    epochs = 0
    g = torch.Generator().manual_seed(0)
    while epochs < max_epochs and time.perf_counter() - start < seconds:
        for idx in torch.randperm(len(data.y_train), generator=g).split(64):
            loss = sum(
                F.cross_entropy(z, data.y_train[idx]) for z in model.forward_all(data.x_train[idx])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if time.perf_counter() - start >= seconds:
                break
        epochs += 1
    model.eval()
    return epochs, time.perf_counter() - start


def all_logits(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.stack(model.forward_all(x), dim=1).numpy()


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rule(logits: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    fires = softmax(logits).max(axis=-1) >= theta
    fires[:, -1] = True
    exits = fires.argmax(axis=1)
    return logits[np.arange(len(exits)), exits].argmax(axis=1), exits


MIN_TRAINED_ACCURACY = 0.5


def pick_threshold(logits: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """The smallest threshold whose early-exit accuracy reaches the final exit's (basis
    ``accuracy``). A model the training budget left near chance would then send everything out
    at the first exit; it gets the median confidence of the first exit instead (basis
    ``median``), so that exits mix."""
    if (logits[:, -1].argmax(axis=1) == labels).mean() < MIN_TRAINED_ACCURACY:
        return float(np.median(softmax(logits[:, 0]).max(axis=-1))), "median"
    target = (logits[:, -1].argmax(axis=1) == labels).mean()
    for theta in np.unique(softmax(logits[:, :-1]).max(axis=-1)):
        preds, _ = rule(logits, theta)
        if (preds == labels).mean() >= target:
            return float(theta), "accuracy"
    return 1.0 + 1e-6, "accuracy"


class Threshold:
    """The online form of the max-softmax rule, for the executor."""

    def __init__(self, theta: float) -> None:
        self.theta = theta

    def reset(self, batch_size: int) -> None:
        pass

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        # max softmax = 1 / sum(exp(z - max z))
        return np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1) * self.theta <= 1.0


def run_backend(
    backend_name, model, data, theta, threads, budget_s, max_samples, cache_dir, clock, context
):
    from eebench.backends import EarlyExitExecutor, get_backend
    from eebench.costs import plain_network
    from eebench.measure import TimingConfig, measure_cold_start, measure_parts

    opts = {"cache_dir": cache_dir} if backend_name == "onnxruntime" else {}
    prepared, cold = measure_cold_start(
        get_backend(backend_name), model, batch_size=1, threads=threads, **opts
    )
    cfg = TimingConfig(warmup=3, min_runs=10, min_time_s=0.03, max_time_s=0.5)
    parts = measure_parts(prepared, data.x_test[:1], config=cfg, clock=clock, context=context)
    full = float(parts.cumulative_ns()[-1]) / 1e9
    n = int(np.clip(budget_s / max(3 * full, 1e-6), 30, max_samples))
    x, y = data.x_test[:n], data.y_test[:n]
    executor = EarlyExitExecutor(prepared, Threshold(theta), clock=clock)
    executor.run(x[:5], mode="per-sample")  # warm the loop
    ee = executor.run(x, mode="per-sample")
    agg = executor.run(x, mode="aggregation")
    plain = plain_network(model.family, model.num_exits)
    backbone = EarlyExitExecutor(prepared, clock=clock).run(
        x, mode="backbone", plain_stages=plain.stages
    )
    predicted_mean = parts.predict(ee.exit_indices, stat="mean")  # mean of sums = sum of means
    predicted_median = parts.predict(ee.exit_indices, stat="median")
    return {
        "backend": backend_name,
        "describe": prepared.describe(),
        "cold_start_ms": cold.total_ns / 1e6,
        "stage_us": (parts.stage_ns() / 1e3).tolist(),
        "head_us": (parts.head_ns() / 1e3).tolist(),
        "noisy_parts": sum(m.noisy for m in parts.all),
        "samples": n,
        "exit_fractions": ee.exit_fractions.tolist(),
        "ee_mean_us": ee.mean_latency_ns / 1e3,
        "predicted_mean_us": float(predicted_mean.mean()) / 1e3,
        "ratio_mean": ee.mean_latency_ns / float(predicted_mean.mean()),
        "ratio_median": float(np.median(ee.latency_ns)) / float(np.median(predicted_median)),
        "decision_us": float(np.nanmean(ee.decision_overhead_us[:-1]))
        if ee.num_exits > 1
        else float("nan"),
        "decision_per_sample_us": float(ee.decision_ns.sum()) / n / 1e3,
        "ratio_mean_with_decisions": ee.mean_latency_ns
        / (float(predicted_mean.mean()) + float(ee.decision_ns.sum()) / n),
        "aggregation_mean_us": agg.mean_latency_ns / 1e3,
        "backbone_mean_us": backbone.mean_latency_ns / 1e3,
        "speedup_vs_aggregation": agg.mean_latency_ns / ee.mean_latency_ns,
        "speedup_vs_backbone": backbone.mean_latency_ns / ee.mean_latency_ns,
        "acc_ee": ee.accuracy(y),
        "acc_aggregation": agg.accuracy(y),
        "acc_backbone": backbone.accuracy(y),
        "same_predictions_as_aggregation": bool((ee.predictions == agg.predictions).all()),
    }


HEADER = (
    "model", "input", "backend", "theta", "stages us", "heads us", "exits %", "EE us", "pred us",
    "meas/pred", "decide us", "meas/(pred+dec)", "x agg", "x backbone", "acc EE/bb", "ort/torch",
)  # fmt: skip


def fmt_parts(values: list[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def table_row(r: dict, ort_ratio: float | None) -> tuple[str, ...]:
    mark = "*" if r["threshold_basis"] == "median" else ""
    return (
        r["model"], r["input"], r["backend"], f"{r['theta']:.3f}{mark}",
        fmt_parts(r["stage_us"]), fmt_parts(r["head_us"]),
        "/".join(f"{100 * f:.0f}" for f in r["exit_fractions"]),
        f"{r['ee_mean_us']:.0f}", f"{r['predicted_mean_us']:.0f}", f"{r['ratio_mean']:.2f}",
        f"{r['decision_us']:.1f}", f"{r['ratio_mean_with_decisions']:.2f}",
        f"{r['speedup_vs_aggregation']:.2f}", f"{r['speedup_vs_backbone']:.2f}",
        f"{100 * r['acc_ee']:.1f}/{100 * r['acc_backbone']:.1f}",
        f"{ort_ratio:.2f}" if ort_ratio is not None else "",
    )  # fmt: skip


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Full rows aligned in columns; a short row (a model not runnable on an input) as one line."""
    full = [r for r in rows if len(r) == len(HEADER)]
    widths = [max(len(str(r[i])) for r in [HEADER, *full]) for i in range(len(HEADER))]
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        if len(r) == len(HEADER):
            print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        else:
            print(
                " | ".join(str(c).ljust(w) for c, w in zip(r[:2], widths)) + " | " + " ".join(r[2:])
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="*", help="glob over registered model names")
    parser.add_argument("--threads", type=int, default=1, help="threads for every backend (equal)")
    parser.add_argument("--train-seconds", type=float, default=3.0)
    parser.add_argument(
        "--budget-seconds", type=float, default=1.5, help="per backend, for the executor runs"
    )
    parser.add_argument("--max-samples", type=int, default=120)
    parser.add_argument("--json", default=None, help="write every number here")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="ONNX export cache (default: a temporary folder, removed at the end: the briefly trained "
        "weights are never seen again)",
    )
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "thread-cpu"),
        default="auto",
        help="wall = latency; thread-cpu = CPU time of the (single) working thread, which leaves out "
        "time lost to other processes; auto = thread-cpu when threads=1 and the machine is "
        "oversubscribed (load average above the core count), else wall",
    )
    parser.add_argument(
        "--context",
        choices=("isolated", "pipeline"),
        default="isolated",
        help="how parts are timed: each on its own, or inside whole forward passes (see measure_parts)",
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import os

    from eebench.measure import CLOCKS, capture_environment
    from eebench.models import InputShapeError, create_model, list_models

    torch.manual_seed(0)
    env = capture_environment()
    load = os.getloadavg()[0]
    clock_choice = args.clock
    if clock_choice == "auto":
        busy = load > (os.cpu_count() or 1)
        clock_choice = "thread-cpu" if (busy and args.threads == 1) else "wall"
    clock = CLOCKS[clock_choice]
    command = " ".join(
        ["python benchmarks/backends_report.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(
        f"# eebench backends report: {env.cpu_model}, {env.cores_logical} logical cores, torch "
        f"{env.packages['torch']}, onnxruntime {env.packages['onnxruntime']}; threads={args.threads} for "
        "every backend; batch 1"
    )
    print(f"# command: {command}")
    print(
        f"# models trained briefly (joint loss over all exits, <= {args.train_seconds:.0f} s each) on "
        "scikit-learn digits; CIFAR shape = the digits resized to 3x32x32"
    )
    print(
        "# theta: smallest max-softmax threshold whose early-exit accuracy reaches the final exit's on a "
        "calibration half; accuracies are on the other half"
    )
    print(
        f"# clock: {clock_choice} (load average {load:.1f} on {os.cpu_count()} cores); all latencies are "
        "measured on the host; stages/heads us = medians, parts timed in "
        f"{args.context} context; pred us = per sample, the sum of the mean "
        "latencies of the stages and heads it ran\n"
    )

    import tempfile

    scratch = (
        tempfile.TemporaryDirectory(prefix="eebench-onnx-") if args.cache_dir is None else None
    )
    cache_dir = args.cache_dir or scratch.name  # type: ignore[union-attr]
    rows: list[tuple[str, ...]] = []
    results: list[dict] = []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for name in [n for n in list_models() if fnmatch.fnmatch(n, args.models)]:
            for shape_name, shape in (("1x8x8", (1, 8, 8)), ("3x32x32", (3, 32, 32))):
                try:
                    model = create_model(name, num_classes=10, input_shape=shape)
                except InputShapeError:
                    rows.append(
                        (name, shape_name, "(not runnable: the architecture needs a larger input)")
                    )
                    continue
                data = digits_data(shape)
                epochs, secs = train_briefly(model, data, args.train_seconds)
                theta, basis = pick_threshold(all_logits(model, data.x_cal), data.y_cal)
                per_backend = {}
                for backend in ("torch-cpu", "onnxruntime"):
                    r = run_backend(backend, model, data, theta, args.threads, args.budget_seconds,
                                    args.max_samples, cache_dir, clock, args.context)  # fmt: skip
                    r.update(model=name, input=shape_name, theta=theta, threshold_basis=basis,
                             train_epochs=epochs, train_seconds=secs, clock=clock_choice)  # fmt: skip
                    per_backend[backend] = r
                    results.append(r)
                ort = (
                    per_backend["onnxruntime"]["ee_mean_us"]
                    / per_backend["torch-cpu"]["ee_mean_us"]
                )
                rows.append(table_row(per_backend["torch-cpu"], None))
                rows.append(table_row(per_backend["onnxruntime"], ort))
                print(
                    f"  done {name} {shape_name} (theta={theta:.3f} by {basis}, {epochs} epochs)",
                    file=sys.stderr,
                )
    finally:
        torch.set_num_threads(threads_before)
        if scratch is not None:
            scratch.cleanup()

    print_table(rows)
    if results:
        within = sum(abs(r["ratio_mean"] - 1) <= 0.10 for r in results)
        print(
            f"\nmeasured/predicted within 10%: {within} of {len(results)} (model, input, backend) runs."
        )
    print(
        "* the model stayed near chance within the training budget (final-exit accuracy < 50%): theta is "
        "the median confidence of the first exit, so exits mix; x backbone is then not at equal accuracy."
    )
    print("decide us = mean time per exit decision; meas/(pred+dec) adds each sample's decision time to its "
          "prediction; x agg / x backbone = mean latency of aggregation (every exit computed, same "
          "predictions) / of the plain network (every stage, final head; a cascade's last member alone) "
          "over the true early-exit mean; "
          "acc EE/bb = accuracy of early exit / plain backbone; ort/torch = onnxruntime's early-exit mean "
          "over torch-cpu's.")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            payload = {
                "environment": env.to_dict(),
                "clock": clock_choice,
                "load_average": load,
                "results": results,
            }
            json.dump(payload, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well does the hardware-profile estimator predict measured latency on this machine?

For every registered model on CIFAR-shaped input (3x32x32, batch 1), each
stage's latency is estimated from a profile of this machine
(``estimated:<profile>``) and measured with the ``torch-cpu`` backend at the
thread count, clock and statistic the profile was measured with
(``measured:torch-cpu``). The tables give the mean absolute percentage error
(MAPE) over the stages above 1 M MACs, per model and per model family; the
target is 30 %. Each estimate's split into compute-bound, memory-bound and
per-operator overhead time is printed beside it.

Held-out validation. The micro-benchmark shapes are disjoint from every layer
of every registered model (a test asserts it), so no estimate is a look-up of
its own measurement. The stricter figure is the **leave-one-family-out MAPE**:

* a micro-benchmark shape ``b`` (convolution or GEMM) is *similar* to a model
  family ``F`` when some convolution or linear layer ``l`` of a model of ``F``
  has the same estimator kind (GEMM, 3x3-style conv, strided, 1x1, depthwise)
  and lies within a factor :data:`SIMILAR_FACTOR` of ``b`` in both weight reuse
  ``P = MACs / weights`` and weight count ``W``;
* the profile without ``F``'s similar shapes (memory-bound operators, overheads,
  bandwidth and the in-sequence slowdown kept) estimates ``F``'s stages;
* the leave-one-family-out MAPE of ``F`` is the MAPE of those estimates over
  ``F``'s stages above 1 M MACs, and the overall figure is the mean over all
  counted stages, each estimated without its own family's similar shapes.

By default the machine is profiled here, in rounds interleaved with the
rounds of stage measurements, so that on a machine shared with other work both
see the same conditions (a profile measured ten minutes earlier under a
different load would add that difference to the error). ``--profile`` checks a
stored profile instead.

Run::

    python benchmarks/estimator_accuracy.py                        # profile + validate, interleaved
    python benchmarks/estimator_accuracy.py --profile amd-epyc-1t  # a stored profile

asv runs :class:`EstimatorAccuracy` (``track_*`` = the overall MAPE in %).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TARGET_MAPE = 30.0
MIN_MACS = 1_000_000
INPUT_SHAPE = (3, 32, 32)
SIMILAR_FACTOR = 2.0


@dataclass
class StageTimer:
    """Times every stage and head of the models with torch-cpu, one round at a time, and
    summarises the rounds with the profile's statistic."""

    models: dict
    threads: int
    clock: str
    statistic: str
    min_time_s: float
    rounds: int
    passes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from eebench.backends import get_backend

        backend = get_backend("torch-cpu")
        self.prepared = {
            n: backend.prepare(m, batch_size=1, threads=self.threads)
            for n, m in self.models.items()
        }

    def round(self, r: int = 0) -> None:
        from eebench.measure.parts import measure_parts
        from eebench.measure.timing import TimingConfig
        from eebench.profiles.microbench import clock_named

        config = TimingConfig(warmup=3, min_runs=10, min_time_s=self.min_time_s / self.rounds)
        clock = clock_named(self.clock, self.threads)
        for name, prepared in self.prepared.items():
            parts = measure_parts(prepared, clock=clock, batch_size=1, config=config)
            self.passes.setdefault(name, []).append(parts)
        print(f"  stage measurements: round {r + 1} of {self.rounds} done", file=sys.stderr)

    def stage_ms(self, name: str):
        import numpy as np

        combine = np.min if self.statistic == "min" else np.median
        return combine([p.stage_ns(self.statistic) for p in self.passes[name]], axis=0) / 1e6


def build_models(names: list[str] | None):
    """The registered models that run on 3x32x32, and a note for those that do not."""
    from eebench.models import create_model, list_models
    from eebench.models.base import InputShapeError

    models, skipped = {}, {}
    for name in names or list_models():
        try:
            models[name] = create_model(name, num_classes=10, input_shape=INPUT_SHAPE)
        except InputShapeError as err:
            skipped[name] = f"not runnable on {'x'.join(map(str, INPUT_SHAPE))}: {err}"
    return models, skipped


def profile_interleaved(timer: StageTimer, min_time_s: float, save: str | None = None):
    """Profile this machine with the stage measurements interleaved between its rounds;
    ``save`` keeps the profile file (validate and submit it like any other)."""
    from eebench.profiles import load_profile_file
    from eebench.profiles.measure import default_name, measure_profile, write_profile

    data = measure_profile(
        default_name(timer.threads),
        threads=timer.threads,
        clock=timer.clock,
        statistic=timer.statistic,
        min_time_s=min_time_s,
        rounds=timer.rounds,
        between_rounds=timer.round,
        command="python benchmarks/estimator_accuracy.py (interleaved with the stage measurements)",
    )
    if save is not None:
        path = write_profile(data, save)
        print(f"profile of this machine written to {path}", file=sys.stderr)
        return load_profile_file(path)
    with tempfile.TemporaryDirectory(prefix="eebench-profile-") as tmp:
        return load_profile_file(write_profile(data, Path(tmp) / f"{data['name']}.yaml"))


def _ape(est: float, meas: float) -> float:
    return 100 * abs(est - meas) / meas


def stage_table(profile, models: dict, stage_ms):
    """Per stage of ``models``: estimated latency with its breakdown, measured latency
    (``stage_ms(name)``, ms per stage) and the APE."""
    import pandas as pd

    from eebench.profiles import estimate_model

    rows = []
    for name, model in models.items():
        est = estimate_model(model, profile, batch_size=1)
        st = est[est["part"] == "stage"].reset_index(drop=True)
        measured = stage_ms(name)
        for i, r in st.iterrows():
            rows.append(
                {
                    "model": name,
                    "family": model.family,
                    "stage": i,
                    "macs": int(r["macs"]),
                    "layers": int(r["layers"]),
                    "estimated_ms": float(r["latency_ms"]),
                    "compute_ms": float(r["compute_bound_ms"]),
                    "memory_ms": float(r["memory_bound_ms"]),
                    "overhead_ms": float(r["overhead_ms"]),
                    "measured_ms": float(measured[i]),
                    "ape_%": _ape(float(r["latency_ms"]), float(measured[i])),
                }
            )
    return pd.DataFrame(rows)


def _summary(group, key: str, value: str):
    big = group[group["macs"] > MIN_MACS]
    est = group["estimated_ms"].sum()
    return {
        key: value,
        "stages": len(group),
        "counted": len(big),
        "mape_%": big["ape_%"].mean() if len(big) else float("nan"),
        "max_ape_%": big["ape_%"].max() if len(big) else float("nan"),
        "estimated_ms": est,
        "measured_ms": group["measured_ms"].sum(),
        "compute_%": 100 * group["compute_ms"].sum() / est if est else float("nan"),
        "memory_%": 100 * group["memory_ms"].sum() / est if est else float("nan"),
        "overhead_%": 100 * group["overhead_ms"].sum() / est if est else float("nan"),
    }


def accuracy_tables(profile, timer: StageTimer, skipped: dict):
    """Per-model MAPE over stages above MIN_MACS (with the estimate's breakdown in % of the
    estimated time), and the per-stage table behind it."""
    import pandas as pd

    stages = stage_table(profile, timer.models, timer.stage_ms)
    rows = []
    for name in timer.models:
        row = _summary(stages[stages["model"] == name], "model", name)
        row["note"] = "" if row["counted"] else "no stage above 1 M MACs"
        rows.append(row)
    rows += [{"model": n, "stages": 0, "counted": 0, "note": note} for n, note in skipped.items()]
    return pd.DataFrame(rows), stages


def _kind_of(op) -> str:
    from eebench.profiles.estimator import Estimator

    return Estimator._kind(op)


def similar_shapes(profile, models: dict, factor: float = SIMILAR_FACTOR) -> dict[str, dict]:
    """Per family: the indices of ``measured.conv`` and ``measured.gemm`` shapes similar to one
    of its layers (same estimator kind, within ``factor`` in weight reuse and in weight count)."""
    import math

    from eebench.profiles import model_operators

    layers: dict[str, list[tuple[str, float, float]]] = {}
    for model in models.values():
        for op in model_operators(model, 1):
            if op.macs and op.op in ("conv", "depthwise_conv", "linear", "matmul"):
                w = max(op.weight_elements, 1)
                layers.setdefault(model.family, []).append((_kind_of(op), op.macs / w, w))
    m = profile.measured
    tol = math.log(factor)

    def near(kind: str, reuse: float, weights: float, family: str) -> bool:
        return any(
            k == kind
            and abs(math.log(reuse / p)) <= tol + 1e-12
            and abs(math.log(weights / w)) <= tol + 1e-12
            for k, p, w in layers[family]
        )

    out = {}
    for family in layers:
        out[family] = {
            "conv": [
                i
                for i, c in enumerate(m.conv)
                if near(c.kind, c.macs / c.weights, c.weights, family)
            ],
            "gemm": [
                i
                for i, g in enumerate(m.gemm)
                if near("gemm", g.macs / g.weights, g.weights, family)
            ],
        }
    return out


def without_shapes(profile, conv: list[int], gemm: list[int]):
    """The profile with the given ``measured.conv`` / ``measured.gemm`` entries removed."""
    m = profile.measured
    kept = m.model_copy(
        update={
            "conv": [c for i, c in enumerate(m.conv) if i not in set(conv)],
            "gemm": [g for i, g in enumerate(m.gemm) if i not in set(gemm)],
        }
    )
    return profile.model_copy(update={"measured": kept})


def family_tables(profile, timer: StageTimer, stages):
    """Per family: MAPE with the whole profile and leave-one-family-out MAPE (see the module
    docstring), plus the LOFO per-stage table."""
    import pandas as pd

    similar = similar_shapes(profile, timer.models)
    rows, lofo_stages = [], []
    for family, drop in similar.items():
        held_out = without_shapes(profile, drop["conv"], drop["gemm"])
        members = {n: m for n, m in timer.models.items() if m.family == family}
        lofo = stage_table(held_out, members, timer.stage_ms)
        lofo_stages.append(lofo)
        full = _summary(stages[stages["family"] == family], "family", family)
        out = _summary(lofo, "family", family)
        rows.append(
            {
                "family": family,
                "models": len(members),
                "counted": full["counted"],
                "mape_%": full["mape_%"],
                "lofo_mape_%": out["mape_%"],
                "lofo_max_ape_%": out["max_ape_%"],
                "shapes_held_out": f"{len(drop['conv'])} conv + {len(drop['gemm'])} gemm of "
                f"{len(profile.measured.conv)} + {len(profile.measured.gemm)}",
                "overhead_%": full["overhead_%"],
            }
        )
    return pd.DataFrame(rows), pd.concat(lofo_stages, ignore_index=True)


def evaluate(
    profile_ref: str | None,
    models: list[str] | None = None,
    threads: int = 1,
    clock: str | None = None,
    statistic: str | None = None,
    min_time_s: float = 0.3,
    rounds: int = 6,
    save: str | None = None,
):
    """(profile, per-model table, per-stage table, stage timer); profiles the machine when
    ``profile_ref`` is None."""
    from eebench.profiles import load_profile

    built, skipped = build_models(models)
    if profile_ref is None:
        clock = clock or ("thread" if threads == 1 else "wall")
        statistic = statistic or ("min" if clock == "thread" else "median")
        timer = StageTimer(built, threads, clock, statistic, min_time_s, rounds)
        profile = profile_interleaved(timer, min_time_s, save)
    else:
        profile = load_profile(profile_ref)
        if profile.measured is None:
            raise SystemExit(f"profile '{profile.name}' has no micro-benchmarks of this machine")
        src = profile.resolve(profile.measured.provenance)
        timer = StageTimer(
            built,
            src.threads or 1,
            src.clock or "wall",
            src.statistic or "median",
            min_time_s,
            rounds,
        )
        for r in range(rounds):
            timer.round(r)
    table, stages = accuracy_tables(profile, timer, skipped)
    return profile, table, stages, timer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        default=None,
        help="check this stored profile (name or file) instead of profiling the machine here",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads when profiling here (default 1)"
    )
    parser.add_argument(
        "--clock",
        default=None,
        choices=["wall", "thread"],
        help="clock when profiling here (default: thread with one thread, else wall)",
    )
    parser.add_argument(
        "--statistic",
        default=None,
        choices=["median", "min"],
        help="statistic when profiling here (default: min with the thread clock, else median)",
    )
    parser.add_argument(
        "--models", nargs="*", default=None, help="models (default: every registered model)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.3,
        help="seconds of timing per micro-benchmark and per stage, over all rounds (default 0.3)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds of measurement (default 6)")
    parser.add_argument("--stages", action="store_true", help="also print the per-stage table")
    parser.add_argument(
        "--save-profile",
        default=None,
        metavar="FILE",
        help="when profiling here, keep the profile in FILE",
    )
    args = parser.parse_args(argv)

    import pandas as pd

    profile, table, stages, timer = evaluate(
        args.profile,
        args.models,
        args.threads,
        args.clock,
        args.statistic,
        args.min_time,
        args.rounds,
        args.save_profile,
    )
    src = profile.resolve(profile.measured.provenance)
    from eebench.measure.environment import capture_environment
    from eebench.profiles import host_mismatch

    mismatch = host_mismatch(profile, capture_environment())
    if mismatch is not None:
        print(f"WARNING: {mismatch.message()}", file=sys.stderr)
    how = (
        "profiled here, interleaved with the stage measurements"
        if args.profile is None
        else "stored profile"
    )
    print(
        f"Estimator accuracy on CIFAR-shaped input (3x32x32, batch 1): estimated:{profile.name} ({how}, "
        f"measured {src.date}) vs measured:torch-cpu; {src.threads} thread(s), {src.clock or 'wall'} clock, "
        f"{src.statistic or 'median'} of repeated calls over {args.rounds} rounds."
    )
    print(
        f"MAPE over stages above {MIN_MACS / 1e6:g} M MACs (analytic; FLOPs = 2 x MACs); "
        f"target {TARGET_MAPE:g}%."
    )
    with pd.option_context(
        "display.float_format", "{:.2f}".format, "display.width", 200, "display.max_colwidth", 60
    ):
        print(table.to_string(index=False))
        if args.stages:
            print(stages.to_string(index=False))
    families, lofo = family_tables(profile, timer, stages)
    print(
        "\nPer model family: MAPE with the whole profile and leave-one-family-out MAPE (the "
        f"family's similar micro-benchmark shapes -- same kind, within {SIMILAR_FACTOR:g}x in weight "
        "reuse and weight count -- held out):"
    )
    with pd.option_context(
        "display.float_format", "{:.2f}".format, "display.width", 200, "display.max_colwidth", 60
    ):
        print(families.to_string(index=False))
    counted = stages[stages["macs"] > MIN_MACS]
    overall = float(counted["ape_%"].mean()) if len(counted) else float("nan")
    held = lofo[lofo["macs"] > MIN_MACS]
    overall_lofo = float(held["ape_%"].mean()) if len(held) else float("nan")
    worst = float(table["mape_%"].max())
    met = worst <= TARGET_MAPE
    print(
        f"overall MAPE {overall:.1f}% over {len(counted)} stages (micro-benchmark shapes disjoint "
        f"from every model layer); leave-one-family-out MAPE {overall_lofo:.1f}%; worst model "
        f"{worst:.1f}%: {'target met' if met else 'target NOT met'}"
    )
    return 0 if met else 1


class EstimatorAccuracy:
    """asv: overall MAPE (%) of the estimator against torch-cpu measurements on this machine."""

    timeout = 1800

    def setup_cache(self):
        _, _, stages, _ = evaluate(None)
        return float(stages[stages["macs"] > MIN_MACS]["ape_%"].mean())

    def track_overall_mape(self, overall):
        return overall

    track_overall_mape.unit = "%"


if __name__ == "__main__":
    sys.exit(main())

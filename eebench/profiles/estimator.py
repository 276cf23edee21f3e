"""Latency and energy of each stage and exit head estimated from a hardware profile.

Per operator (a roofline plus a fixed dispatch cost)::

    time   = max(MACs / achievable compute, bytes moved / bandwidth) + per-op overhead
    energy = time x active power                      (power figures of the mode), or
           = MACs x energy/MAC + bytes x energy/byte  (+ time x idle power, when given)

summed over the operators of a stage or head. The operators are the analytic
cost table's (:mod:`eebench.profiles.operators`). Every part's latency is
split three ways that add up to it, so a reader sees what dominates:
``compute_bound_ms`` (operators whose arithmetic term is the larger),
``memory_bound_ms`` (operators whose memory term is the larger) and
``overhead_ms`` (the fixed cost per operator and per module call).
Where the numbers come from, in order of preference:

* **achievable compute**: the profile's measured micro-benchmarks of the same
  engine and precision. Each benchmark gives a net throughput
  ``MACs / (time - per-op overhead)`` (the overhead is added back per layer).
  A layer takes the throughput of the measured layers of its family -- GEMM-like
  (linear, matmul), convolution, strided convolution, 1x1 convolution or
  depthwise convolution -- nearest to it in (log weight reuse, log weight
  count), see :class:`ScatterTime`, and never less time than the fastest
  measured layer of the family. The micro-benchmark shapes are disjoint from
  the layers of the registered models, so an estimate is always an
  interpolation, never a look-up. Without micro-benchmarks: the datasheet
  peak times the profile's ``estimation.compute_efficiency`` of the engine,
  else :data:`DEFAULT_EFFICIENCY` (an unsourced assumption, listed as such).
* **bandwidth**: for memory-bound operators (pooling, normalisation,
  activations, element-wise arithmetic) the measured bytes/s of the same
  operator kind, interpolated on log(bytes) (:class:`ThroughputCurve`); for
  the others, and without such benchmarks, the measured copy bandwidth; else
  the datasheet peak times ``estimation.bandwidth_efficiency``, else
  :data:`DEFAULT_BANDWIDTH_EFFICIENCY` (unsourced).
* **per-op overhead**: measured (the slope of chains of tiny operators, see
  :mod:`eebench.profiles.overhead`), else the profile's ``overhead.per_op``
  (with its provenance), else :data:`DEFAULT_OVERHEAD_S` of the engine
  (unsourced); calls that do no work (container modules, flatten) cost the
  measured module-call overhead, else nothing.
* **in-sequence slowdown**: micro-benchmarks repeat one layer in a loop, which
  keeps its weights, its input and the dispatcher's caches warm; in a network
  they are not. A measured profile carries the slowdown of a small network
  timed whole against its layers timed alone, and every layer time of that
  profile is multiplied by it.

Every constant used is listed in the ``assumptions`` column with where it comes
from (an unsourced assumption says so), and every number is labelled
``estimated:<profile>``: an estimate is never a measurement.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from torch import nn

from eebench.costs import CostTable
from eebench.errors import ConfigError
from eebench.profiles.operators import Operator, model_operators
from eebench.profiles.schema import (
    BYTES_PER_ELEMENT,
    ENGINES,
    MEMORY_OPS,
    PRECISIONS,
    HardwareProfile,
    Quantity,
)

# Last-resort constants for a profile that states neither micro-benchmarks nor its own
# estimation constants. They are unsourced assumptions and every estimate using one says so.
# Fraction of the datasheet peak a framework sustains on the small layers of
# early-exit CNNs: roughly what cuDNN/oneDNN reach on layers of a few MMACs (far
# below their large-GEMM efficiency); tensor cores and DLAs need large, aligned
# layers to approach their peak, hence lower factors.
DEFAULT_EFFICIENCY: dict[str, float] = {
    "cpu": 0.5,
    "cuda_cores": 0.4,
    "tensor_cores": 0.25,
    "dla": 0.25,
}
# Sustained fraction of the theoretical DRAM bandwidth (STREAM-like copies
# reach 60-80% on LPDDR4/5 SoCs and desktop DDR).
DEFAULT_BANDWIDTH_EFFICIENCY = 0.7
# Fixed cost per operator when the profile states none: framework dispatch on
# a CPU; kernel launch plus runtime overhead on an accelerator.
DEFAULT_OVERHEAD_S: dict[str, float] = {
    "cpu": 5e-6,
    "cuda_cores": 10e-6,
    "tensor_cores": 10e-6,
    "dla": 20e-6,
}
# Preference order of engines when none is asked for.
_ENGINE_ORDER = {
    "fp32": ("cuda_cores", "cpu", "tensor_cores", "dla"),
    "fp16": ("tensor_cores", "cuda_cores", "dla", "cpu"),
    "int8": ("tensor_cores", "dla", "cuda_cores", "cpu"),
}
_GEMM_OPS = {"linear", "matmul"}
# layer families with their own micro-benchmarks, and where a family without any borrows from
_COMPUTE_KINDS = ("gemm", "conv", "strided", "pointwise", "depthwise")
_FALLBACKS = {
    "gemm": ("pointwise", "conv"),
    "conv": ("strided", "pointwise", "gemm"),
    "strided": ("conv", "pointwise", "gemm"),
    "pointwise": ("gemm", "conv"),
    "depthwise": ("conv", "strided"),
}
# a benchmark's net time is never taken below this fraction of its measured time
_MIN_NET_FRACTION = 0.25


class ThroughputCurve:
    """Net throughput as a function of one size (MACs or bytes), from measured points.

    Interpolated linearly in (log size, log throughput); clamped to the end
    points outside the measured range (no extrapolation of a trend).
    """

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points:
            raise ValueError("a throughput curve needs at least one point")
        merged: dict[float, list[float]] = {}
        for size, rate in points:
            merged.setdefault(math.log(max(size, 1.0)), []).append(math.log(rate))
        self._x = sorted(merged)
        self._y = [sum(merged[x]) / len(merged[x]) for x in self._x]

    def __call__(self, size: float) -> float:
        x = math.log(max(size, 1.0))
        if x <= self._x[0]:
            return math.exp(self._y[0])
        if x >= self._x[-1]:
            return math.exp(self._y[-1])
        j = bisect.bisect_right(self._x, x)
        x0, x1, y0, y1 = self._x[j - 1], self._x[j], self._y[j - 1], self._y[j]
        return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


class ScatterTime:
    """Net seconds of a GEMM-like or convolution layer from measured layers of the same family.

    A layer is placed by two numbers: how many weights it has (``W``) and how
    often each weight is reused (``P = MACs / W``: output positions of a
    convolution, rows of a GEMM). Small ``P`` makes a layer stream its weights
    (memory-bound); small ``W`` makes it overhead-bound. The estimate is the
    inverse-distance-weighted mean, over the ``k`` nearest measured layers in
    (log P, log W), of their log times, each scaled to the layer's MACs with
    the family's exponent ``beta`` (time ~ MACs^beta, the least-squares slope of
    log time on log MACs over the family's measurements, within [0, 1]): beta
    near 1 for compute-bound families, near 0 for ones whose time hardly
    depends on size (a depthwise convolution on a CPU). A layer of exactly a
    measured shape would get that time back; the shipped micro-benchmark shapes
    are disjoint from the models' layers (tests hold them apart), so model
    estimates are interpolations.
    """

    def __init__(self, points: Sequence[tuple[float, float, float]], k: int = 4) -> None:
        if not points:
            raise ValueError("a layer-time model needs at least one point")
        self._pts = [
            (math.log(max(p, 1.0)), math.log(max(w, 1.0)), math.log(t)) for p, w, t in points
        ]
        self._k = k
        xs = [px + pw for px, pw, _ in self._pts]
        ys = [lt for _, _, lt in self._pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var > 0 else 1.0
        self.beta = min(max(slope, 0.0), 1.0)

    def __call__(self, reuse: float, weights: float) -> float:
        x, y = math.log(max(reuse, 1.0)), math.log(max(weights, 1.0))
        near = sorted(((px - x) ** 2 + (py - y) ** 2, px + py, lt) for px, py, lt in self._pts)[
            : self._k
        ]
        if near[0][0] < 1e-12:
            return math.exp(near[0][2])
        num = den = 0.0
        for d, lm, lt in near:
            num += (lt + self.beta * (x + y - lm)) / d
            den += 1.0 / d
        return math.exp(num / den)


@dataclass(frozen=True)
class LayerEstimate:
    """The estimate of one operator; times in seconds, energy in joules."""

    layer: Operator
    bytes: int
    compute_s: float
    memory_s: float
    overhead_s: float
    energy_j: float

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @property
    def compute_bound_s(self) -> float:
        """The roofline time when arithmetic bounds this operator, else 0."""
        return self.compute_s if self.compute_s >= self.memory_s else 0.0

    @property
    def memory_bound_s(self) -> float:
        """The roofline time when memory traffic bounds this operator, else 0."""
        return self.memory_s if self.memory_s > self.compute_s else 0.0


def _origin(profile: HardwareProfile, path: str, q: Quantity) -> str:
    """Where a profile constant comes from, for the assumptions column."""
    prov = q.provenance
    if prov is None:
        return f"profile {path}"
    prov = profile.resolve(prov)
    if prov.kind == "assumption":
        return f"profile {path}: unsourced assumption"
    return f"profile {path}, {prov.kind}"


@dataclass
class Estimator:
    """The roofline of one profile for one engine and precision.

    ``efficiency`` overrides :data:`DEFAULT_EFFICIENCY` for the engine when the
    profile has no micro-benchmarks.
    """

    profile: HardwareProfile
    precision: str = "fp32"
    engine: str | None = None
    efficiency: float | None = None
    assumptions: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision '{self.precision}'; expected one of {', '.join(PRECISIONS)}"
            )
        self.engine = self._choose_engine()
        self.label = f"estimated:{self.profile.name}"
        self._bytes_per_element = BYTES_PER_ELEMENT[self.precision]
        self._measured_curves()
        self._flat_rate = None if self._times else self._peak_rate()
        self._bandwidth = self._choose_bandwidth()
        self._overhead = self._choose_overhead()
        m = self.profile.measured
        # calls that do no work (containers, views) cost a module call where one was measured;
        # compiled runtimes (TensorRT, ONNX Runtime) have no such calls
        self._module_overhead = (
            m.module_overhead.base
            if self._uses_measured() and m is not None and m.module_overhead is not None
            else 0.0
        )
        # layers timed alone in a loop keep caches and predictors warm; inside a network
        # they do not: the measured slowdown of a chain scales every layer of a measured profile
        self._slowdown = (
            m.sequence_slowdown.base
            if self._uses_measured() and m is not None and m.sequence_slowdown is not None
            else 1.0
        )
        if self._uses_measured() and m is not None and m.sequence_slowdown is not None:
            self.assumptions.append(
                f"every operator x {self._slowdown:.3g} (measured.sequence_slowdown)"
            )
        self._note_energy()

    # ------------------------------------------------------------ choices
    def _uses_measured(self) -> bool:
        m = self.profile.measured
        return m is not None and m.engine == self.engine and m.precision == self.precision

    def _choose_engine(self) -> str:
        p = self.profile
        available = set(p.engines(self.precision))
        if p.measured is not None and p.measured.precision == self.precision:
            available.add(p.measured.engine)
        if self.engine is not None:
            if self.engine not in ENGINES:
                raise ConfigError(
                    f"unknown engine '{self.engine}'; expected one of {', '.join(ENGINES)}"
                )
            if self.engine not in available:
                raise ConfigError(
                    f"profile '{p.name}' has no {self.precision} figure for engine '{self.engine}'; "
                    f"it has: {', '.join(sorted(available)) or '(none)'}"
                )
            return self.engine
        if p.measured is not None and p.measured.precision == self.precision:
            return p.measured.engine
        for engine in _ENGINE_ORDER[self.precision]:
            if engine in available:
                return engine
        have = [f"{pr}/{e}" for pr in PRECISIONS for e in p.engines(pr)]
        raise ConfigError(
            f"profile '{p.name}' has no {self.precision} compute figure (peak or micro-benchmark); "
            f"it has: {', '.join(have) or '(none)'}; pick another precision"
        )

    def _measured_curves(self) -> None:
        """Rate models from the micro-benchmarks (net of the per-op overhead)."""
        self._times: dict[str, ScatterTime] = {}
        self._floor: dict[str, float] = {}
        self._op_bandwidth: dict[str, ThroughputCurve] = {}
        m = self.profile.measured
        if m is None or not self._uses_measured():
            return
        overhead = m.per_op_overhead.base if m.per_op_overhead is not None else 0.0

        def net(seconds: float) -> float:
            return max(seconds - overhead, seconds * _MIN_NET_FRACTION)

        groups: dict[str, list[tuple[float, float, float]]] = {k: [] for k in _COMPUTE_KINDS}
        groups["gemm"] = [(p.m, p.weights, net(p.time.base)) for p in m.gemm]
        for p in m.conv:
            groups[p.kind].append((p.macs / p.weights, p.weights, net(p.time.base)))
        for kind, pts in groups.items():
            if pts:
                self._times[kind] = ScatterTime(pts)
                self._floor[kind] = min(t for _, _, t in pts)
        if self._times:
            for kind in _COMPUTE_KINDS:
                if kind in self._times:
                    continue
                fallback = next((f for f in _FALLBACKS[kind] if f in self._times), None)
                source = fallback or next(iter(self._times))
                self._times[kind] = self._times[source]
                self._floor[kind] = self._floor[source]
                self.assumptions.append(f"{kind} layers use the {source} micro-benchmarks")
        for op in MEMORY_OPS:
            pts = [(p.bytes, p.bytes / net(p.time.base)) for p in m.ops if p.op == op]
            if pts:
                self._op_bandwidth[op] = ThroughputCurve(pts)

    def _peak_rate(self) -> float:
        peak = self.profile.peak(self.precision, self.engine)
        if peak is None:
            raise ConfigError(
                f"profile '{self.profile.name}' has no peak compute.{self.precision}.{self.engine} "
                "and no micro-benchmarks for it"
            )
        stated = getattr(self.profile.estimation.compute_efficiency, self.engine)
        path = f"estimation.compute_efficiency.{self.engine}"
        if self.efficiency is not None:
            eff, origin = self.efficiency, "given by the caller"
        elif stated is not None:
            eff, origin = stated.base, _origin(self.profile, path, stated)
        else:
            eff = DEFAULT_EFFICIENCY[self.engine]
            origin = "eebench default: unsourced assumption"
        if not 0 < eff <= 1:
            raise ConfigError(f"efficiency must be in (0, 1], got {eff}")
        self.assumptions.append(
            f"compute = {eff:g} x peak {self.precision}/{self.engine}, no micro-benchmarks "
            f"({origin})"
        )
        return peak.base * eff

    def _choose_bandwidth(self) -> float:
        m = self.profile.measured
        if self._uses_measured() and m is not None and m.bandwidth is not None:
            return m.bandwidth.base
        bw = self.profile.memory.bandwidth
        if bw is None:
            raise ConfigError(
                f"profile '{self.profile.name}' has no memory.bandwidth and no measured bandwidth"
            )
        stated = self.profile.estimation.bandwidth_efficiency
        if stated is not None:
            eff = stated.base
            origin = _origin(self.profile, "estimation.bandwidth_efficiency", stated)
        else:
            eff, origin = DEFAULT_BANDWIDTH_EFFICIENCY, "eebench default: unsourced assumption"
        self.assumptions.append(f"bandwidth = {eff:g} x peak ({origin})")
        return bw.base * eff

    def _choose_overhead(self) -> float:
        m = self.profile.measured
        if self._uses_measured() and m is not None and m.per_op_overhead is not None:
            how = (
                f"slope of chains of {', '.join(str(c.ops) for c in m.overhead_chain)} operators"
                if m.overhead_chain
                else "one tiny operator timed alone"
            )
            self.assumptions.append(
                f"per-op overhead {m.per_op_overhead.base * 1e6:.3g} us (measured: {how})"
            )
            return m.per_op_overhead.base
        per_op = self.profile.overhead.per_op
        if per_op is not None:
            self.assumptions.append(
                f"per-op overhead {per_op.base * 1e6:.3g} us "
                f"({_origin(self.profile, 'overhead.per_op', per_op)})"
            )
            return per_op.base
        value = DEFAULT_OVERHEAD_S[self.engine]
        self.assumptions.append(
            f"per-op overhead {value * 1e6:g} us (eebench default: unsourced assumption)"
        )
        return value

    def _note_energy(self) -> None:
        pw = self.profile.power
        if pw.energy_per_mac is not None and pw.energy_per_byte is not None:
            return
        if pw.active is not None:
            self.assumptions.append("energy = time x active power of the mode")
            return
        self.assumptions.append(
            f"no energy: {pw.unavailable or 'the profile has no power figures'}"
        )

    # ------------------------------------------------------------ estimates
    def compute_rate(self, layer: Operator) -> float:
        """Achievable MAC/s for this layer."""
        if self._flat_rate is not None or not layer.macs:
            return self._flat_rate or 0.0
        return layer.macs / self.compute_time(layer)

    @staticmethod
    def _kind(layer: Operator) -> str:
        if layer.op in _GEMM_OPS:
            return "gemm"
        if layer.op == "depthwise_conv":
            return "depthwise"
        if layer.kernel == 1:
            return "pointwise"
        return "strided" if layer.stride > 1 else "conv"

    def bandwidth(self, layer: Operator, nbytes: int) -> float:
        """Achievable bytes/s for this layer: its kind's micro-benchmarks, else DRAM bandwidth."""
        op = layer.op if layer.op in MEMORY_OPS else "elementwise" if layer.op == "other" else None
        if op is not None and op in self._op_bandwidth:
            return self._op_bandwidth[op](nbytes)
        return self._bandwidth

    def compute_time(self, layer: Operator) -> float:
        """Seconds of arithmetic, net of the per-op overhead.

        From micro-benchmarks: :class:`ScatterTime` of the layer's family, never below
        the fastest measured layer of that family (below the measured sizes setup and
        loop costs remain). Otherwise MACs at the efficiency-scaled peak.
        """
        if not layer.macs:
            return 0.0
        if self._flat_rate is not None:
            return layer.macs / self._flat_rate
        kind = self._kind(layer)
        weights = max(layer.weight_elements, 1)
        return max(self._times[kind](layer.macs / weights, weights), self._floor[kind])

    def layer(self, layer: Operator) -> LayerEstimate:
        k = self._slowdown
        if layer.is_call_only:
            t = self._module_overhead * k
            return LayerEstimate(layer, 0, 0.0, 0.0, t, self._energy(layer, 0, t))
        nbytes = layer.bytes(self._bytes_per_element)
        compute_s = self.compute_time(layer) * k
        memory_s = nbytes / self.bandwidth(layer, nbytes) * k
        overhead_s = self._overhead * k
        time_s = max(compute_s, memory_s) + overhead_s
        return LayerEstimate(
            layer, nbytes, compute_s, memory_s, overhead_s, self._energy(layer, nbytes, time_s)
        )

    def _energy(self, layer: Operator, nbytes: int, time_s: float) -> float:
        pw = self.profile.power
        if pw.energy_per_mac is not None and pw.energy_per_byte is not None:
            energy = layer.macs * pw.energy_per_mac.base + nbytes * pw.energy_per_byte.base
            if pw.idle is not None:
                energy += time_s * pw.idle.base
        elif pw.active is not None:
            energy = time_s * pw.active.base
        else:
            energy = math.nan
        return energy

    def layers_table(self, layers: Sequence[Operator]) -> pd.DataFrame:
        """One row per operator (views included, at zero cost)."""
        rows = []
        for est in (self.layer(lc) for lc in layers):
            lc = est.layer
            rows.append(
                {
                    "part": lc.part,
                    "index": lc.index,
                    "layer": lc.name,
                    "op": lc.op,
                    "macs": lc.macs,
                    "bytes": est.bytes,
                    "compute_ms": est.compute_s * 1e3,
                    "memory_ms": est.memory_s * 1e3,
                    "overhead_ms": est.overhead_s * 1e3,
                    "compute_bound_ms": est.compute_bound_s * 1e3,
                    "memory_bound_ms": est.memory_bound_s * 1e3,
                    "latency_ms": est.time_s * 1e3,
                    "energy_mj": est.energy_j * 1e3,
                    "source": self.label,
                }
            )
        return pd.DataFrame(rows)

    def parts_table(self, layers: Sequence[Operator]) -> pd.DataFrame:
        """One row per stage and per exit head: the sums of their operators."""
        per_layer = self.layers_table(layers)
        if per_layer.empty:
            return per_layer
        real = per_layer[~per_layer["op"].isin(["view", "container"])]
        grouped = per_layer.groupby(["part", "index"], sort=False)
        counts = real.groupby(["part", "index"], sort=False).size()
        out = (
            grouped[
                [
                    "macs",
                    "bytes",
                    "compute_ms",
                    "memory_ms",
                    "compute_bound_ms",
                    "memory_bound_ms",
                    "overhead_ms",
                    "latency_ms",
                    "energy_mj",
                ]
            ]
            .sum(min_count=1)
            .reset_index()
        )
        out["layers"] = [int(counts.get((p, i), 0)) for p, i in zip(out["part"], out["index"])]
        out["name"] = [f"{p}{i}" for p, i in zip(out["part"], out["index"])]
        out["source"] = self.label
        out["profile"] = self.profile.name
        out["engine"] = self.engine
        out["precision"] = self.precision
        out["assumptions"] = "; ".join(self.assumptions)
        cols = [
            "part",
            "index",
            "name",
            "layers",
            "macs",
            "bytes",
            "compute_ms",
            "memory_ms",
            "compute_bound_ms",
            "memory_bound_ms",
            "overhead_ms",
            "latency_ms",
            "energy_mj",
            "source",
            "profile",
            "engine",
            "precision",
            "assumptions",
        ]
        return out[cols].reset_index(drop=True)


def _as_profile(profile: HardwareProfile | str) -> HardwareProfile:
    if isinstance(profile, HardwareProfile):
        return profile
    from eebench.profiles.locate import load_profile

    return load_profile(profile)


def estimate_layers(
    model: nn.Module,
    profile: HardwareProfile | str,
    batch_size: int = 1,
    precision: str = "fp32",
    engine: str | None = None,
    cost_table: CostTable | None = None,
) -> pd.DataFrame:
    """Per-operator estimates for every stage and exit head of ``model``."""
    est = Estimator(_as_profile(profile), precision=precision, engine=engine)
    return est.layers_table(model_operators(model, batch_size, cost_table))


def estimate_model(
    model: nn.Module,
    profile: HardwareProfile | str,
    batch_size: int = 1,
    precision: str = "fp32",
    engine: str | None = None,
    cost_table: CostTable | None = None,
) -> pd.DataFrame:
    """Estimated latency (ms) and energy (mJ) of every stage and exit head of ``model``.

    One row per stage and per exit head (``part`` = stage|exit, ``index``),
    with MACs, bytes, the latency split into ``compute_bound_ms`` +
    ``memory_bound_ms`` + ``overhead_ms`` (which add up to ``latency_ms``),
    ``source`` = ``estimated:<profile>`` and the assumptions that were needed.
    ``cost_table`` is the model's analytic cost table when the caller has it already.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    est = Estimator(_as_profile(profile), precision=precision, engine=engine)
    table = est.parts_table(model_operators(model, batch_size, cost_table))
    table.insert(0, "batch_size", batch_size)
    meta = getattr(model, "metadata", None)
    table.insert(0, "model", meta.name if meta is not None else type(model).__name__)
    return table

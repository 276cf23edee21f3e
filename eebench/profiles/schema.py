"""The hardware profile: a device described by numbers that each say where they come from.

A profile is one device in one power mode (peaks depend on the clocks a mode
allows, so "Jetson Nano 5 W" and "Jetson Nano 10 W" are two profiles). Every
number is a :class:`Quantity` ``{value, unit, provenance}``:

* ``value`` is finite and > 0 (a zero peak or a negative bandwidth is a typo);
* ``unit`` belongs to the field's dimension (see :mod:`eebench.profiles.units`);
* ``provenance`` is either the id of an entry in the profile's ``sources``
  table or an inline source, of kind ``datasheet`` (document + URL or document
  number), ``measured`` (date, tool, method), ``derived`` (from what) or
  ``assumption`` (an *unsourced assumption*: a ``note`` says what it rests on, and
  every estimate that uses it lists it).
  Numbers inside ``measured`` (the micro-benchmarks) inherit the section's
  provenance. ``uncertain: true`` plus a ``note`` marks a figure that could not
  be confirmed.

Unknown keys are refused (``extra="forbid"``) so a misspelt field is an error,
not a silently ignored number. Checks that span fields (provenance present and
resolvable, achieved <= peak, ...) live in :mod:`eebench.profiles.validate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eebench.profiles import units
from eebench.profiles.units import Dimension

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
ENGINES = ("cpu", "cuda_cores", "tensor_cores", "dla")
PROVENANCE_KINDS = ("datasheet", "measured", "derived", "assumption")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}

Precision = Literal["fp32", "fp16", "int8"]
Engine = Literal["cpu", "cuda_cores", "tensor_cores", "dla"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Provenance(_Strict):
    """Where a number comes from: a reference to ``sources`` or a source written inline.

    In YAML a bare string (``provenance: nano-datasheet``) is a reference.
    """

    ref: str | None = None
    kind: Literal["datasheet", "measured", "derived", "assumption"] | None = None
    # datasheet
    document: str | None = None
    document_number: str | None = None
    url: str | None = None
    locator: str | None = None
    # measured
    date: str | None = None
    tool: str | None = None
    method: str | None = None
    eebench_version: str | None = None
    backend: str | None = None
    threads: int | None = None
    clock: Literal["wall", "thread"] | None = None
    statistic: Literal["median", "min"] | None = None
    command: str | None = None
    host: str | None = None
    # derived
    derived_from: str | None = Field(None, alias="from")
    formula: str | None = None
    note: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _string_is_reference(cls, data: Any) -> Any:
        return {"ref": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _complete(self) -> Provenance:
        if self.ref is not None:
            others = [k for k in self.model_fields_set if k != "ref"]
            if others:
                raise ValueError(
                    f"a provenance is either a reference to 'sources' or an inline source, not both "
                    f"(got ref '{self.ref}' and {sorted(others)})"
                )
            return self
        if self.kind is None:
            raise ValueError(
                f"missing provenance kind: expected one of {', '.join(PROVENANCE_KINDS)} "
                "(or a string naming an entry of 'sources')"
            )
        if self.kind == "datasheet" and not (self.document and (self.url or self.document_number)):
            raise ValueError(
                "a datasheet source needs 'document' (its title) and 'url' or 'document_number'"
            )
        if self.kind == "measured":
            missing = [k for k in ("date", "tool", "method") if not getattr(self, k)]
            if missing:
                raise ValueError(
                    f"a measured source needs {', '.join(missing)} (when, with what, how)"
                )
        if self.kind == "derived" and not self.derived_from:
            raise ValueError("a derived value needs 'from' (the figures or method it comes from)")
        if self.kind == "assumption" and not self.note:
            raise ValueError(
                "an unsourced assumption needs a 'note' saying what the value rests on"
            )
        return self

    @property
    def unsourced(self) -> bool:
        return self.kind == "assumption"

    def describe(self) -> str:
        """One line for humans: kind plus the reference a reader would follow."""
        if self.ref:
            return f"-> {self.ref}"
        if self.kind == "datasheet":
            ref = self.document_number or self.url
            return f"datasheet: {self.document} ({ref})"
        if self.kind == "measured":
            extra = f", {self.backend}, {self.threads} threads" if self.backend else ""
            return f"measured {self.date} with {self.tool}{extra}: {self.method}"
        if self.kind == "assumption":
            return f"unsourced assumption: {self.note}"
        return f"derived from {self.derived_from}" + (f" ({self.formula})" if self.formula else "")


class Quantity(_Strict):
    """A number with its unit and provenance; subclasses fix the dimension."""

    dimension: ClassVar[Dimension] = units.COUNT

    value: float
    unit: str
    provenance: Provenance | None = None
    uncertain: bool = False
    note: str | None = None

    @field_validator("value")
    @classmethod
    def _finite_positive(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v}")
        if v <= 0:
            raise ValueError(f"must be > 0, got {v:g}")
        return v

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        dim = cls.dimension
        if v not in dim.factors:
            hint = dim.suggest(v)
            did = f" (did you mean '{hint}'?)" if hint else ""
            raise ValueError(
                f"unknown unit '{v}' for a {dim.name}{did}; expected one of {', '.join(dim.factors)}"
            )
        return v

    @model_validator(mode="after")
    def _uncertain_needs_note(self) -> Quantity:
        if self.uncertain and not self.note:
            raise ValueError("an uncertain value needs a 'note' saying why")
        return self

    @property
    def base(self) -> float:
        """The value in the dimension's base unit (MAC/s, B/s, s, W, J, B, Hz)."""
        return self.dimension.to_base(self.value, self.unit)


class Compute(Quantity):
    dimension: ClassVar[Dimension] = units.COMPUTE


class Bandwidth(Quantity):
    dimension: ClassVar[Dimension] = units.BANDWIDTH


class Time(Quantity):
    dimension: ClassVar[Dimension] = units.TIME


class Power(Quantity):
    dimension: ClassVar[Dimension] = units.POWER


class Energy(Quantity):
    dimension: ClassVar[Dimension] = units.ENERGY


class Size(Quantity):
    dimension: ClassVar[Dimension] = units.SIZE


class Frequency(Quantity):
    dimension: ClassVar[Dimension] = units.FREQUENCY


class Count(Quantity):
    dimension: ClassVar[Dimension] = units.COUNT


class Ratio(Quantity):
    dimension: ClassVar[Dimension] = units.RATIO


# ------------------------------------------------------------------ sections
class Clocks(_Strict):
    """Maximum clocks the power mode allows."""

    cpu_max: Frequency | None = None
    gpu_max: Frequency | None = None
    memory_max: Frequency | None = None
    dla_max: Frequency | None = None


class Cores(_Strict):
    cpu: Count | None = None
    cuda: Count | None = None
    tensor: Count | None = None
    dla: Count | None = None


class Identity(_Strict):
    vendor: str
    device: str
    power_mode: str
    soc: str | None = None
    cpu: str | None = None
    gpu: str | None = None
    memory: Size | None = None
    clocks: Clocks = Field(default_factory=Clocks)
    cores: Cores = Field(default_factory=Cores)
    cpu_flags: list[str] | None = Field(
        None,
        description="instruction-set flags of the CPU a host profile was measured on (the "
        "speed-relevant subset of /proc/cpuinfo's flags, e.g. avx2, avx512f, amx_tile)",
    )


class EnginePeaks(_Strict):
    """Dense peak throughput of each engine at one precision."""

    cpu: Compute | None = None
    cuda_cores: Compute | None = None
    tensor_cores: Compute | None = None
    dla: Compute | None = None


class ComputePeaks(_Strict):
    fp32: EnginePeaks = Field(default_factory=EnginePeaks)
    fp16: EnginePeaks = Field(default_factory=EnginePeaks)
    int8: EnginePeaks = Field(default_factory=EnginePeaks)


class Memory(_Strict):
    bandwidth: Bandwidth | None = None


class Overhead(_Strict):
    """Fixed cost of dispatching one operator (framework + kernel launch)."""

    per_op: Time | None = None


class EngineRatios(_Strict):
    """One fraction per engine."""

    cpu: Ratio | None = None
    cuda_cores: Ratio | None = None
    tensor_cores: Ratio | None = None
    dla: Ratio | None = None


class Estimation(_Strict):
    """The constants a datasheet-only estimate rests on, each with its provenance.

    ``compute_efficiency``: the fraction of an engine's datasheet peak a framework
    sustains on small early-exit layers; ``bandwidth_efficiency``: the sustained
    fraction of the datasheet memory bandwidth. Both are in (0, 1]. A value nobody
    has measured or published is written with provenance kind ``assumption``.
    """

    compute_efficiency: EngineRatios = Field(default_factory=EngineRatios)
    bandwidth_efficiency: Ratio | None = None


class PowerSection(_Strict):
    """Power of the profile's mode, or energy per MAC and per byte moved.

    ``unavailable`` records why a measured profile has no power figures.
    """

    idle: Power | None = None
    active: Power | None = None
    energy_per_mac: Energy | None = None
    energy_per_byte: Energy | None = None
    unavailable: str | None = None


class GemmPoint(_Strict):
    """Achieved throughput of ``(m x k) @ (k x n)`` (``m`` is the batch of a linear layer)."""

    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    time: Time
    achieved: Compute

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k

    @property
    def weights(self) -> int:
        """Weight elements (the layer's reuse of each weight is ``macs / weights`` = ``m``)."""
        return self.n * self.k


class ConvPoint(_Strict):
    """Achieved throughput of one 2-D convolution (square kernel, 'same'-style padding)."""

    batch: int = Field(1, gt=0)
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    kernel: int = Field(gt=0)
    stride: int = Field(1, gt=0)
    padding: int | None = Field(None, ge=0)
    groups: int = Field(1, gt=0)
    time: Time
    achieved: Compute

    @property
    def out_hw(self) -> tuple[int, int]:
        pad = self.kernel // 2 if self.padding is None else self.padding
        h = (self.height + 2 * pad - self.kernel) // self.stride + 1
        w = (self.width + 2 * pad - self.kernel) // self.stride + 1
        return h, w

    @property
    def macs(self) -> int:
        h, w = self.out_hw
        per_out = (self.in_channels // self.groups) * self.kernel * self.kernel
        return self.batch * self.out_channels * h * w * per_out

    @property
    def weights(self) -> int:
        """Weight elements (each is used ``macs / weights`` = batch x output positions times)."""
        return (self.in_channels // self.groups) * self.kernel * self.kernel * self.out_channels

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    @property
    def kind(self) -> str:
        """The estimator's layer family: depthwise, pointwise (1x1), strided or conv."""
        if self.depthwise:
            return "depthwise"
        if self.kernel == 1:
            return "pointwise"
        return "strided" if self.stride > 1 else "conv"


MEMORY_OPS = ("maxpool", "avgpool", "norm", "lrn", "activation", "elementwise")
MemoryOp = Literal["maxpool", "avgpool", "norm", "lrn", "activation", "elementwise"]


class OpPoint(_Strict):
    """Achieved bandwidth of one memory-bound operator: ``bytes`` (input + output + weights,
    float32) moved in ``time``. ``shape`` is the input shape, for readers.

    These are not checked against ``memory.bandwidth``: a small tensor stays in cache and
    can move faster than DRAM allows.
    """

    op: MemoryOp
    shape: list[int] = Field(default_factory=list)
    bytes: int = Field(gt=0)
    time: Time
    achieved: Bandwidth


class ChainPoint(_Strict):
    """The time of one call of a chain of ``ops`` tiny operators (the slope over ``ops`` is the
    cost each operator adds; the intercept is the fixed cost of calling the chain)."""

    ops: int = Field(gt=0)
    time: Time


class MicroBenchmarks(_Strict):
    """What ``eebench profile measure`` (or a user's own tool) measured on the device.

    ``provenance`` covers every number in this section.
    """

    provenance: Provenance
    engine: Engine
    precision: Precision
    gemm: list[GemmPoint] = Field(default_factory=list)
    conv: list[ConvPoint] = Field(default_factory=list)
    ops: list[OpPoint] = Field(default_factory=list)
    bandwidth: Bandwidth | None = None
    per_op_overhead: Time | None = Field(
        None,
        description="cost each operator adds: the least-squares slope of overhead_chain when "
        "it is given",
    )
    overhead_chain: list[ChainPoint] = Field(
        default_factory=list,
        description="chains of k nn.ReLU calls on a one-element tensor, for several k",
    )
    module_chain: list[ChainPoint] = Field(
        default_factory=list,
        description="chains of k empty nn.Sequential calls, for several k",
    )
    module_overhead: Time | None = Field(
        None, description="cost of a module call that does no work (an empty nn.Sequential)"
    )
    sequence_slowdown: Ratio | None = Field(
        None,
        description="time of a chain of layers run as one network over the sum of the same "
        "layers each timed alone: the cost of caches and predictors that a layer repeated "
        "in a loop keeps warm and a real network does not",
    )


class HardwareProfile(_Strict):
    """A device in one power mode: identity, peaks, bandwidth, overhead, power, micro-benchmarks."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    description: str = ""
    identity: Identity
    compute: ComputePeaks = Field(default_factory=ComputePeaks)
    memory: Memory = Field(default_factory=Memory)
    overhead: Overhead = Field(default_factory=Overhead)
    power: PowerSection = Field(default_factory=PowerSection)
    estimation: Estimation = Field(default_factory=Estimation)
    measured: MicroBenchmarks | None = None
    sources: dict[str, Provenance] = Field(default_factory=dict)

    def peak(self, precision: str, engine: str) -> Compute | None:
        """The dense peak of ``engine`` at ``precision``, or None when the profile has none."""
        return getattr(getattr(self.compute, precision), engine)

    def engines(self, precision: str) -> list[str]:
        """Engines with a peak at ``precision`` (in the order of :data:`ENGINES`)."""
        return [e for e in ENGINES if self.peak(precision, e) is not None]

    def resolve(self, provenance: Provenance) -> Provenance:
        """Follow a reference into ``sources`` (an unknown id is a validation error)."""
        return self.sources[provenance.ref] if provenance.ref else provenance

    def quantities(self) -> Iterator[tuple[str, Quantity, Provenance | None]]:
        """Every number in the profile with its dotted path and its effective provenance."""
        yield from _walk(self, "", None)


def _walk(
    node: BaseModel, prefix: str, inherited: Provenance | None
) -> Iterator[tuple[str, Quantity, Provenance | None]]:
    if isinstance(node, MicroBenchmarks):
        inherited = node.provenance
    for name in type(node).model_fields:
        if name == "sources":
            continue
        value = getattr(node, name)
        field = type(node).model_fields[name]
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Quantity):
            yield path, value, value.provenance or inherited
        elif isinstance(value, Provenance):
            continue
        elif isinstance(value, BaseModel):
            yield from _walk(value, path, inherited)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _walk(item, f"{path}[{i}]", inherited)

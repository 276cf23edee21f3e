"""Micro-benchmarks of one device: GEMM, convolution and memory-bound operators, bandwidth, overhead.

The shapes cover the range of the layers of early-exit CNNs at small batch
without being any of them (see :data:`CONV_SHAPES`). Convolutions form a grid
over the two things that set their speed: how often each weight is reused
(output positions: 36x36 down to 1x1) and how many weights there are (3 -> 20
up to 1200 -> 1200 channels), with 1x1, strided and depthwise variants.
Memory-bound operators (max/avg pooling, batch norm, local response norm,
ReLU, addition) are timed over tensor sizes from 432 to 250 K elements,
because their cost on a CPU is far from a DRAM-bandwidth roofline.

Layers run as ``nn.Module`` calls, exactly as model stages run them. The
per-op overhead is measured, not assumed: chains of k ``nn.ReLU`` calls on a
one-element tensor for k in :data:`CHAIN_LENGTHS`, and the least-squares slope
over k is what each operator adds (the intercept, the cost of calling the
chain and of the timer, is not charged per operator). The module-call overhead
is the slope of chains of k empty ``nn.Sequential`` calls: what each container
module call adds. Timing uses the measure package's timer
(:func:`eebench.measure.timing.collect_samples`).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from eebench.errors import BackendUnavailable, ConfigError
from eebench.measure.timing import CLOCKS, Clock, HostTimer, TimingConfig, collect_samples
from eebench.profiles.overhead import ChainFit, fit_chain

PROFILE_CLOCKS = {"wall": "wall", "thread": "thread-cpu"}
"""Clock names in a profile -> the measure package's clocks. ``wall``: elapsed time.
``thread``: CPU time of the calling thread -- on a shared machine it excludes the time the
thread waited for a core, and with one torch thread (all compute on the calling thread) it
equals the latency on an idle core. Meaningless with more than one thread."""
STATISTICS = ("median", "min")


def clock_named(name: str, threads: int, device: str = "cpu") -> Clock:
    """The clock a profile calls ``name``; refuses the thread clock where it would under-count."""
    if name not in PROFILE_CLOCKS:
        raise ConfigError(
            f"unknown clock '{name}'; expected one of {', '.join(PROFILE_CLOCKS)}", field="clock"
        )
    if name == "thread" and (threads != 1 or device != "cpu"):
        raise ConfigError(
            "the thread clock counts only the calling thread's CPU time: use it with --threads 1 on "
            f"the CPU (got {threads} threads on {device}), or use --clock wall",
            field="clock",
        )
    return CLOCKS[PROFILE_CLOCKS[name]]


def statistic_s(samples_ns: list[int], statistic: str) -> float:
    """``median`` (typical call) or ``min`` (the call least disturbed by other work), seconds.

    Samples of zero nanoseconds are dropped: the thread clock does not advance when the
    work was not accounted to the calling thread (seen on a busy virtual machine), and a
    minimum of zero would make a throughput infinite.
    """
    if statistic not in STATISTICS:
        raise ConfigError(
            f"unknown statistic '{statistic}'; expected one of {', '.join(STATISTICS)}"
        )
    positive = [s for s in samples_ns if s > 0]
    if not positive:
        raise ConfigError(
            f"every one of {len(samples_ns)} timings read 0 ns: the clock did not advance; "
            "use --clock wall"
        )
    value = statistics.median(positive) if statistic == "median" else min(positive)
    return value * 1e-9


# (m, k, n): a batch of m rows through a k -> n linear layer
GEMM_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 48, 12),
    (1, 200, 12),
    (1, 600, 12),
    (1, 3000, 12),
    (1, 12000, 12),
    (1, 400, 400),
    (1, 800, 200),
    (1, 1500, 1500),
    (1, 3000, 1200),
    (16, 300, 300),
    (64, 600, 600),
    (256, 1200, 1200),
)


@dataclass(frozen=True)
class ConvShape:
    in_channels: int
    out_channels: int
    size: int  # square input side
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    batch: int = 1

    @property
    def out_side(self) -> int:
        return (self.size + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        per_out = (self.in_channels // self.groups) * self.kernel**2
        return self.batch * self.out_channels * self.out_side**2 * per_out


def _c(cin: int, cout: int, size: int, **kw: int) -> ConvShape:
    return ConvShape(cin, cout, size, **kw)


# Sides (36, 28, 24, 14, 12, 10, 7, 6, 5, 3, 1) and channel counts (multiples of 6, 10 and 12)
# deliberately off the power-of-two grid of CIFAR/ImageNet networks: no shape here is a
# layer of a registered model (tests/test_profiles.py holds them apart), so the accuracy
# check measures interpolation, not look-up. Together they span the same range of weight
# reuse (output positions, 1 .. 1296) and weight count (1e2 .. 4e6) as those layers.
CONV_SHAPES: tuple[ConvShape, ...] = (
    # 3x3, stride 1
    _c(3, 24, 36),
    _c(12, 12, 36),
    _c(24, 24, 36),
    _c(48, 48, 36),
    _c(3, 20, 28),
    _c(6, 6, 28),
    _c(20, 20, 28),
    _c(20, 40, 28),
    _c(40, 40, 28),
    _c(60, 60, 28),
    _c(24, 48, 24),
    _c(10, 10, 14),
    _c(20, 40, 14),
    _c(40, 40, 14),
    _c(40, 80, 14),
    _c(80, 80, 14),
    _c(120, 120, 14),
    _c(24, 48, 12),
    _c(72, 72, 12),
    _c(6, 6, 7),
    _c(40, 80, 7),
    _c(80, 80, 7),
    _c(80, 160, 7),
    _c(160, 160, 7),
    _c(240, 240, 7),
    _c(48, 96, 6),
    _c(144, 144, 6),
    _c(240, 480, 5),
    _c(384, 384, 5),
    _c(600, 600, 5),
    _c(12, 12, 3),
    _c(160, 320, 3),
    _c(320, 320, 3),
    _c(320, 640, 3),
    _c(640, 640, 3),
    _c(96, 96, 1),
    _c(480, 480, 1),
    # 5x5
    _c(3, 24, 28, kernel=5),
    _c(8, 16, 14, kernel=5),
    _c(24, 48, 14, kernel=5),
    _c(12, 24, 7, kernel=5),
    # 1x1
    _c(12, 6, 28, kernel=1),
    _c(24, 12, 28, kernel=1),
    _c(60, 20, 28, kernel=1),
    _c(120, 30, 28, kernel=1),
    _c(20, 10, 14, kernel=1),
    _c(60, 30, 14, kernel=1),
    _c(120, 60, 14, kernel=1),
    _c(150, 90, 14, kernel=1),
    _c(60, 30, 7, kernel=1),
    _c(150, 60, 7, kernel=1),
    _c(240, 120, 7, kernel=1),
    _c(300, 150, 7, kernel=1),
    _c(200, 400, 10, kernel=1),
    _c(400, 400, 5, kernel=1),
    _c(720, 720, 5, kernel=1),
    _c(300, 600, 3, kernel=1),
    _c(600, 600, 3, kernel=1),
    _c(1200, 1200, 1, kernel=1),
    # strided
    _c(6, 6, 28, stride=2),
    _c(12, 24, 28, stride=2),
    _c(20, 40, 28, stride=2),
    _c(24, 24, 14, stride=2),
    _c(40, 80, 14, stride=2),
    _c(60, 120, 14, stride=2),
    _c(100, 120, 7, stride=2),
    _c(180, 120, 7, stride=2),
    _c(240, 160, 7, stride=2),
    # depthwise
    _c(24, 24, 28, groups=24),
    _c(48, 48, 14, groups=48),
    _c(96, 96, 14, stride=2, groups=96),
    _c(192, 192, 7, groups=192),
    _c(600, 600, 5, groups=600),
    _c(384, 384, 3, groups=384),
    _c(768, 768, 3, groups=768),
)

# (channels, side): 432 .. 250 K elements, off the power-of-two grid like the conv shapes
OP_SHAPES: tuple[tuple[int, int], ...] = (
    (12, 6),
    (240, 3),
    (60, 7),
    (20, 28),
    (60, 28),
    (320, 28),
)
OP_KINDS = ("maxpool", "avgpool", "norm", "lrn", "activation", "elementwise")

# chain lengths for the per-operator and module-call overheads (slope of time over length)
CHAIN_LENGTHS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)

BANDWIDTH_BYTES = 64 * 2**20


def sequence_chain() -> nn.Sequential:
    """A small CIFAR-scale network (conv/BN/ReLU blocks, pooling, a 1x1 and a strided conv,
    a linear head) for the in-sequence slowdown: the chain timed as one network against
    the sum of its layers each timed alone."""

    def block(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(3, 16),
        *block(16, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 64, k=1),
        *block(64, 128, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


def _chain_cases(device: torch.device) -> list[tuple[str, Callable[[], object]]]:
    """The chain as a whole, then each of its layers alone on the input it gets in the chain."""
    chain = sequence_chain().to(device)
    x = torch.randn(1, 3, 32, 32, device=device)
    inputs: list[torch.Tensor] = []
    h = x
    for layer in chain:
        inputs.append(h.clone())
        h = layer(h)
    cases: list[tuple[str, Callable[[], object]]] = [("sequence: whole chain", lambda: chain(x))]
    for i, (layer, inp) in enumerate(zip(chain, inputs)):
        if isinstance(layer, nn.ReLU):  # in place: give it a fresh copy's worth of work each time
            layer = nn.ReLU()
        cases.append((f"sequence: layer {i} alone", lambda layer=layer, inp=inp: layer(inp)))
    return cases


@dataclass(frozen=True)
class GemmResult:
    m: int
    k: int
    n: int
    seconds: float


@dataclass(frozen=True)
class ConvResult:
    shape: ConvShape
    seconds: float


@dataclass(frozen=True)
class OpResult:
    op: str
    shape: tuple[int, ...]
    bytes: int
    seconds: float


@dataclass(frozen=True)
class MicroBenchResults:
    """Medians (seconds) of every micro-benchmark, and how they were taken.

    ``overhead_chain`` / ``module_chain`` are ``(chain length, seconds)``; the per-op and
    module-call overheads are the slopes of their least-squares lines.
    """

    device: str
    threads: int
    gemm: list[GemmResult]
    conv: list[ConvResult]
    ops: list[OpResult]
    bandwidth_bytes_per_s: float
    overhead_chain: list[tuple[int, float]]
    module_chain: list[tuple[int, float]]
    sequence_slowdown: float = 1.0
    clock: str = "wall"
    statistic: str = "median"

    @property
    def overhead_fit(self) -> ChainFit:
        return fit_chain(self.overhead_chain)

    @property
    def module_fit(self) -> ChainFit:
        return fit_chain(self.module_chain)

    @property
    def per_op_overhead_s(self) -> float:
        """What each operator adds (slope of the operator chains), never below 0."""
        return max(self.overhead_fit.slope_s, 0.0)

    @property
    def module_overhead_s(self) -> float:
        """What each container module call adds (slope of the module chains), never below 0."""
        return max(self.module_fit.slope_s, 0.0)


def _device(backend: str) -> torch.device:
    if backend == "torch-cpu":
        return torch.device("cpu")
    if backend == "torch-cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                backend, "torch.cuda.is_available() is False (no CUDA device or driver)"
            )
        return torch.device("cuda")
    raise BackendUnavailable(
        backend, "profile measure supports the backends torch-cpu and torch-cuda"
    )


def _op_case(op: str, c: int, side: int, device: torch.device) -> tuple[Callable[[], object], int]:
    """The call to time for a memory-bound operator and the float32 bytes it moves
    (input + output + weights, as :mod:`eebench.profiles.operators` counts an operator)."""
    x = torch.randn(1, c, side, side, device=device)
    n = x.numel()
    if op == "maxpool":
        mod = nn.MaxPool2d(2).to(device)
        return (lambda: mod(x)), 4 * (n + n // 4)
    if op == "avgpool":
        mod = nn.AdaptiveAvgPool2d(1).to(device)
        return (lambda: mod(x)), 4 * (n + c)
    if op == "norm":
        mod = nn.BatchNorm2d(c).to(device).eval()
        return (lambda: mod(x)), 4 * (2 * n + 4 * c)
    if op == "lrn":
        mod = nn.LocalResponseNorm(3).to(device)
        return (lambda: mod(x)), 4 * 2 * n
    if op == "activation":
        mod = nn.ReLU(inplace=True)
        return (lambda: mod(x)), 4 * 2 * n
    y = torch.randn_like(x)
    return (lambda: torch.add(x, y)), 4 * 3 * n


@dataclass
class _Case:
    """One micro-benchmark: its label, the call to time and the samples gathered so far."""

    label: str
    fn: Callable[[], object]
    min_repeats: int = 10
    samples_ns: list[int] = field(default_factory=list)


def _conv_layer(s: ConvShape, device: torch.device) -> Callable[[], object]:
    layer = nn.Conv2d(
        s.in_channels,
        s.out_channels,
        s.kernel,
        s.stride,
        s.kernel // 2,
        groups=s.groups,
        bias=False,
    )
    layer = layer.to(device).eval()
    x = torch.randn(s.batch, s.in_channels, s.size, s.size, device=device)
    return lambda: layer(x)


def _linear_layer(m: int, k: int, n: int, device: torch.device) -> Callable[[], object]:
    layer = nn.Linear(k, n).to(device).eval()
    x = torch.randn(m, k, device=device)
    return lambda: layer(x)


def run_microbenchmarks(
    backend: str = "torch-cpu",
    threads: int | None = None,
    min_time_s: float = 0.3,
    progress: bool = True,
    gemm_shapes: tuple[tuple[int, int, int], ...] = GEMM_SHAPES,
    conv_shapes: tuple[ConvShape, ...] = CONV_SHAPES,
    op_shapes: tuple[tuple[int, int], ...] = OP_SHAPES,
    bandwidth_bytes: int = BANDWIDTH_BYTES,
    clock: str = "wall",
    statistic: str = "median",
    rounds: int = 3,
    between_rounds: Callable[[int], None] | None = None,
    chain_lengths: tuple[int, ...] = CHAIN_LENGTHS,
) -> MicroBenchResults:
    """Time every benchmark at ``threads`` torch threads (restored afterwards).

    Each benchmark runs for ``min_time_s`` in total, split over ``rounds`` passes through
    the whole list, so that a burst of other work on the machine disturbs a part of every
    benchmark's samples rather than all samples of a few. ``statistic`` is what each
    benchmark reports from its pooled samples: the ``median`` call, or the ``min`` (the
    call least disturbed by other work, for a machine shared with other jobs).
    ``between_rounds(r)`` runs after round ``r``: a validation can time its own work in
    between, so that both see the same conditions on a shared machine.
    """
    device = _device(backend)
    sync: Callable[[], None] | None = torch.cuda.synchronize if device.type == "cuda" else None
    previous = torch.get_num_threads()
    threads = threads or previous
    tick = clock_named(clock, threads, device.type)
    statistic_s([1], statistic)  # refuse an unknown statistic before timing anything
    if len(set(chain_lengths)) < 2:
        raise ConfigError(
            f"chain_lengths needs at least two different lengths, got {chain_lengths}"
        )
    rounds = max(1, int(rounds))
    timer = HostTimer(tick, sync)
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            tiny = torch.zeros(1, device=device)
            src = torch.ones(bandwidth_bytes // 4, device=device)
            dst = torch.empty_like(src)
            cases = []
            for k in chain_lengths:
                ops = nn.Sequential(*[nn.ReLU() for _ in range(k)])
                cases.append(_Case(f"overhead: chain of {k} ops", lambda f=ops: f(tiny), 50))
            for k in chain_lengths:
                calls = nn.Sequential(*[nn.Sequential() for _ in range(k)])
                cases.append(
                    _Case(f"overhead: chain of {k} module calls", lambda f=calls: f(tiny), 50)
                )
            cases.append(_Case("bandwidth", lambda: dst.copy_(src), 3))
            cases += [
                _Case(f"gemm {m}x{k}x{n}", _linear_layer(m, k, n, device))
                for m, k, n in gemm_shapes
            ]
            cases += [
                _Case(
                    f"conv {s.in_channels}->{s.out_channels} {s.size}x{s.size} k{s.kernel} s{s.stride} "
                    f"g{s.groups}",
                    _conv_layer(s, device),
                )
                for s in conv_shapes
            ]
            chain_cases = _chain_cases(device)
            cases += [_Case(label, fn) for label, fn in chain_cases]
            op_bytes = []
            for op in OP_KINDS:
                for c, side in op_shapes:
                    fn, nbytes = _op_case(op, c, side, device)
                    cases.append(_Case(f"{op} {c}x{side}x{side}", fn))
                    op_bytes.append((op, (1, c, side, side), nbytes))
            bar = tqdm(
                total=rounds * len(cases),
                desc="profile measure",
                unit="bench",
                file=sys.stderr,
                disable=not progress,
            )
            try:
                for r in range(rounds):
                    for case in cases:
                        bar.set_postfix_str(f"round {r + 1}/{rounds}: {case.label}")
                        config = TimingConfig(
                            warmup=2,
                            min_runs=max(1, case.min_repeats // rounds),
                            min_time_s=min_time_s / rounds,
                            max_time_s=max(10 * min_time_s / rounds, 2.0),
                            max_runs=5000,
                        )
                        run = collect_samples(case.fn, config, timer=timer, clock=tick)
                        case.samples_ns.extend(run.samples_ns)
                        bar.update()
                    if between_rounds is not None:
                        between_rounds(r)
            finally:
                bar.close()
    finally:
        torch.set_num_threads(previous)

    values = [statistic_s(c.samples_ns, statistic) for c in cases]
    it = iter(values)
    overhead_chain = [(k, next(it)) for k in chain_lengths]
    module_chain = [(k, next(it)) for k in chain_lengths]
    copy_s = next(it)
    gemm = [GemmResult(m, k, n, next(it)) for m, k, n in gemm_shapes]
    conv = [ConvResult(s, next(it)) for s in conv_shapes]
    chain_s = next(it)
    alone_s = sum(next(it) for _ in range(len(chain_cases) - 1))
    ops = [OpResult(op, shape, nbytes, next(it)) for op, shape, nbytes in op_bytes]
    # the chain's own container call is not one of the layers timed alone
    module_overhead = max(fit_chain(module_chain).slope_s, 0.0)
    slowdown = max(chain_s - module_overhead, 1e-12) / alone_s
    bandwidth = 2 * (bandwidth_bytes // 4) * 4 / copy_s  # read + write
    return MicroBenchResults(
        str(device),
        threads,
        gemm,
        conv,
        ops,
        bandwidth,
        overhead_chain,
        module_chain,
        slowdown,
        clock,
        statistic,
    )

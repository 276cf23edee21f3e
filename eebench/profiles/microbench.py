"""Micro-benchmarks of one device: GEMM, convolution and memory-bound operators, bandwidth, overhead.

The shapes cover the layers of early-exit CNNs at small batch. Convolutions
form a grid over the two things that set their speed: how often each weight is
reused (output positions: 32x32 down to 2x2) and how many weights there are
(3 -> 16 up to 512 -> 512 channels), with 1x1, strided and depthwise variants.
Memory-bound operators (max/avg pooling, batch norm, local response norm,
ReLU, addition) are timed
over tensor sizes from 1 K to 256 K elements, because their cost on a CPU is
far from a DRAM-bandwidth roofline.

Layers run as ``nn.Module`` calls, exactly as model stages run them, so the
per-op overhead measured here (a module call on a one-element tensor) is the
one a stage pays per layer; the module-call overhead (an empty
``nn.Sequential``) is what each container module call adds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from eebench.errors import BackendUnavailable
from eebench.profiles.timing import Timing, clock_named, time_call

# (m, k, n): a batch of m rows through a k -> n linear layer
GEMM_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 64, 10),
    (1, 256, 10),
    (1, 512, 512),
    (1, 1024, 1024),
    (1, 4096, 1024),
    (16, 256, 256),
    (64, 512, 512),
    (256, 1024, 1024),
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


CONV_SHAPES: tuple[ConvShape, ...] = (
    # 32x32 outputs
    _c(3, 16, 32),
    _c(3, 64, 32),
    _c(4, 4, 32),
    _c(16, 16, 32),
    _c(16, 32, 32),
    _c(32, 32, 32),
    _c(64, 64, 32),
    # 16x16
    _c(8, 8, 16),
    _c(12, 6, 16),
    _c(16, 32, 16),
    _c(32, 64, 16),
    _c(64, 64, 16),
    _c(64, 128, 16),
    _c(128, 128, 16),
    # 8x8
    _c(4, 4, 8),
    _c(24, 12, 8),
    _c(64, 128, 8),
    _c(128, 128, 8),
    _c(128, 256, 8),
    _c(256, 256, 8),
    # 4x4
    _c(16, 8, 4),
    _c(128, 256, 4),
    _c(256, 256, 4),
    _c(256, 512, 4),
    _c(512, 512, 4),
    # 2x2
    _c(64, 64, 2),
    _c(256, 512, 2),
    _c(512, 512, 2),
    # 1x1
    _c(8, 4, 32, kernel=1),
    _c(32, 8, 32, kernel=1),
    _c(96, 24, 32, kernel=1),
    _c(16, 8, 16, kernel=1),
    _c(64, 32, 16, kernel=1),
    _c(64, 128, 16, kernel=1),
    _c(32, 16, 8, kernel=1),
    _c(112, 48, 8, kernel=1),
    _c(128, 256, 8, kernel=1),
    _c(256, 512, 4, kernel=1),
    _c(512, 512, 2, kernel=1),
    _c(1024, 1024, 2, kernel=1),
    # 5x5
    _c(3, 32, 32, kernel=5),
    _c(32, 64, 16, kernel=5),
    # strided
    _c(4, 4, 32, stride=2),
    _c(6, 6, 32, stride=2),
    _c(16, 8, 32, stride=2),
    _c(16, 32, 32, stride=2),
    _c(24, 12, 16, stride=2),
    _c(32, 32, 16, stride=2),
    _c(64, 128, 16, stride=2),
    _c(48, 32, 8, stride=2),
    _c(128, 256, 8, stride=2),
    # depthwise
    _c(32, 32, 32, groups=32),
    _c(64, 64, 16, groups=64),
    _c(128, 128, 8, groups=128),
    _c(256, 256, 4, groups=256),
    _c(512, 512, 2, groups=512),
    _c(1024, 1024, 2, groups=1024),
)

# (channels, side): 1 K .. 256 K elements
OP_SHAPES: tuple[tuple[int, int], ...] = ((256, 2), (64, 8), (16, 32), (64, 32), (256, 32))
OP_KINDS = ("maxpool", "avgpool", "norm", "lrn", "activation", "elementwise")

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
    """Medians (seconds) of every micro-benchmark, and how they were taken."""

    device: str
    threads: int
    gemm: list[GemmResult]
    conv: list[ConvResult]
    ops: list[OpResult]
    bandwidth_bytes_per_s: float
    per_op_overhead_s: float
    module_overhead_s: float
    sequence_slowdown: float = 1.0
    clock: str = "wall"
    statistic: str = "median"


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
    (input + output + weights, counted as :mod:`eebench.profiles.layers` counts a layer)."""
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
    rounds = max(1, int(rounds))
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            tiny = torch.zeros(1, device=device)
            relu, empty = nn.ReLU(), nn.Sequential()
            src = torch.ones(bandwidth_bytes // 4, device=device)
            dst = torch.empty_like(src)
            cases = [
                _Case("per-op overhead", lambda: relu(tiny), 50),
                _Case("module-call overhead", lambda: empty(tiny), 50),
                _Case("bandwidth", lambda: dst.copy_(src), 3),
            ]
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
                        run = time_call(
                            case.fn,
                            min_time_s=min_time_s / rounds,
                            sync=sync,
                            clock=tick,
                            min_repeats=max(1, case.min_repeats // rounds),
                            warmup=2,
                        )
                        case.samples_ns.extend(run.samples_ns)
                        bar.update()
                    if between_rounds is not None:
                        between_rounds(r)
            finally:
                bar.close()
    finally:
        torch.set_num_threads(previous)

    values = [Timing(c.samples_ns).statistic_s(statistic) for c in cases]
    overhead, module_overhead, copy_s = values[:3]
    it = iter(values[3:])
    gemm = [GemmResult(m, k, n, next(it)) for m, k, n in gemm_shapes]
    conv = [ConvResult(s, next(it)) for s in conv_shapes]
    chain_s = next(it)
    alone_s = sum(next(it) for _ in range(len(chain_cases) - 1))
    ops = [OpResult(op, shape, nbytes, next(it)) for op, shape, nbytes in op_bytes]
    # the chain's own container call is not one of the layers timed alone
    slowdown = max(chain_s - module_overhead, 1e-12) / alone_s
    bandwidth = 2 * (bandwidth_bytes // 4) * 4 / copy_s  # read + write
    return MicroBenchResults(
        str(device),
        threads,
        gemm,
        conv,
        ops,
        bandwidth,
        overhead,
        module_overhead,
        slowdown,
        clock,
        statistic,
    )

"""Micro-benchmarks of one device: GEMM, convolution and memory-bound operators, bandwidth, overhead.

The shapes cover the layers of early-exit CNNs at small batch. Convolutions
form a grid over the two things that set their speed: how often each weight is
reused (output positions: 32x32 down to 2x2) and how many weights there are
(3 -> 16 up to 512 -> 512 channels), with 1x1, strided and depthwise variants.
Memory-bound operators (max/avg pooling, batch norm, ReLU, addition) are timed
over tensor sizes from 1 K to 256 K elements, because their cost on a CPU is
far from a DRAM-bandwidth roofline.

Layers run as ``nn.Module`` calls, exactly as model stages run them, so the
per-op overhead measured here (a module call on a one-element tensor) is the
one a stage pays per layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from eebench.errors import BackendUnavailable
from eebench.profiles.timing import clock_named, time_call

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
    _c(16, 16, 32),
    _c(16, 32, 32),
    _c(32, 32, 32),
    _c(64, 64, 32),
    # 16x16
    _c(16, 32, 16),
    _c(32, 64, 16),
    _c(64, 64, 16),
    _c(64, 128, 16),
    _c(128, 128, 16),
    # 8x8
    _c(64, 128, 8),
    _c(128, 128, 8),
    _c(128, 256, 8),
    _c(256, 256, 8),
    # 4x4
    _c(128, 256, 4),
    _c(256, 256, 4),
    _c(256, 512, 4),
    _c(512, 512, 4),
    # 2x2
    _c(256, 512, 2),
    _c(512, 512, 2),
    # 1x1 and strided
    _c(64, 128, 16, kernel=1),
    _c(128, 256, 8, kernel=1),
    _c(256, 512, 4, kernel=1),
    _c(16, 32, 32, stride=2),
    _c(64, 128, 16, stride=2),
    # depthwise
    _c(32, 32, 32, groups=32),
    _c(64, 64, 16, groups=64),
    _c(128, 128, 8, groups=128),
    _c(256, 256, 4, groups=256),
    _c(512, 512, 2, groups=512),
)

# (channels, side): 1 K .. 256 K elements
OP_SHAPES: tuple[tuple[int, int], ...] = ((256, 2), (64, 8), (16, 32), (64, 32), (256, 32))
OP_KINDS = ("maxpool", "avgpool", "norm", "activation", "elementwise")

BANDWIDTH_BYTES = 64 * 2**20


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
    if op == "activation":
        mod = nn.ReLU(inplace=True)
        return (lambda: mod(x)), 4 * 2 * n
    y = torch.randn_like(x)
    return (lambda: torch.add(x, y)), 4 * 3 * n


def _copy_bandwidth(
    nbytes: int,
    device: torch.device,
    min_time_s: float,
    sync: Callable[[], None] | None,
    clock: Callable[[], int],
    statistic: str = "median",
) -> float:
    """Bytes per second of a large tensor copy, counting the read and the write."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = time_call(
        lambda: dst.copy_(src), min_time_s=min_time_s, min_repeats=5, sync=sync, clock=clock
    ).statistic_s(statistic)
    return 2 * src.numel() * 4 / seconds


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
) -> MicroBenchResults:
    """Time every benchmark at ``threads`` torch threads (restored afterwards).

    ``statistic`` is what each benchmark reports: the ``median`` call, or the ``min`` (the
    call least disturbed by other work, for a machine shared with other jobs).
    """
    device = _device(backend)
    sync: Callable[[], None] | None = torch.cuda.synchronize if device.type == "cuda" else None
    previous = torch.get_num_threads()
    threads = threads or previous
    tick = clock_named(clock, threads, device.type)
    steps = len(gemm_shapes) + len(conv_shapes) + len(OP_KINDS) * len(op_shapes) + 2
    bar = tqdm(
        total=steps, desc="profile measure", unit="bench", file=sys.stderr, disable=not progress
    )

    def timed(fn: Callable[[], object], label: str, **kw: int) -> float:
        bar.set_postfix_str(label)
        t = time_call(fn, min_time_s=min_time_s, sync=sync, clock=tick, **kw).statistic_s(statistic)
        bar.update()
        return t

    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            tiny = torch.zeros(1, device=device)
            relu = nn.ReLU()
            overhead = timed(lambda: relu(tiny), "per-op overhead", min_repeats=50)
            bar.set_postfix_str("bandwidth")
            bandwidth = _copy_bandwidth(bandwidth_bytes, device, min_time_s, sync, tick, statistic)
            bar.update()

            gemm = []
            for m, k, n in gemm_shapes:
                layer = nn.Linear(k, n).to(device).eval()
                x = torch.randn(m, k, device=device)
                gemm.append(
                    GemmResult(
                        m, k, n, timed(lambda layer=layer, x=x: layer(x), f"gemm {m}x{k}x{n}")
                    )
                )

            conv = []
            for s in conv_shapes:
                layer = (
                    nn.Conv2d(
                        s.in_channels,
                        s.out_channels,
                        s.kernel,
                        s.stride,
                        s.kernel // 2,
                        groups=s.groups,
                        bias=False,
                    )
                    .to(device)
                    .eval()
                )
                x = torch.randn(s.batch, s.in_channels, s.size, s.size, device=device)
                label = f"conv {s.in_channels}->{s.out_channels} {s.size}x{s.size} k{s.kernel}"
                conv.append(ConvResult(s, timed(lambda layer=layer, x=x: layer(x), label)))

            ops = []
            for op in OP_KINDS:
                for c, side in op_shapes:
                    fn, nbytes = _op_case(op, c, side, device)
                    ops.append(
                        OpResult(
                            op, (1, c, side, side), nbytes, timed(fn, f"{op} {c}x{side}x{side}")
                        )
                    )
    finally:
        torch.set_num_threads(previous)
        bar.close()
    return MicroBenchResults(
        str(device), threads, gemm, conv, ops, bandwidth, overhead, clock, statistic
    )

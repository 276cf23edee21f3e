"""Micro-benchmarks of one device: GEMM and convolution throughput, bandwidth, per-op overhead.

The shapes span the layers of early-exit CNNs on CIFAR- to ImageNet-sized
inputs at small batch: from sub-MMAC heads to convolutions of tens of MMACs,
including a 1x1 and two depthwise convolutions. Layers run as ``nn.Module``
calls, exactly as model stages run them, so the per-op overhead measured here
(a module call on a one-element tensor) is the same overhead a stage pays per
layer.
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
    (1, 256, 256),
    (1, 1024, 1024),
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
    def macs(self) -> int:
        out = (self.size + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        return (
            self.batch
            * self.out_channels
            * out
            * out
            * (self.in_channels // self.groups)
            * self.kernel**2
        )


CONV_SHAPES: tuple[ConvShape, ...] = (
    ConvShape(3, 16, 32),
    ConvShape(16, 32, 16),
    ConvShape(16, 16, 32),
    ConvShape(64, 64, 8),
    ConvShape(32, 64, 16),
    ConvShape(64, 128, 8),
    ConvShape(64, 128, 16, kernel=1),
    ConvShape(64, 128, 16),
    ConvShape(128, 256, 8),
    ConvShape(128, 128, 16),
    ConvShape(256, 256, 8),
    ConvShape(32, 32, 16, groups=32),
    ConvShape(128, 128, 8, groups=128),
)

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
class MicroBenchResults:
    """Medians (seconds) of every micro-benchmark, and how they were taken."""

    device: str
    threads: int
    gemm: list[GemmResult]
    conv: list[ConvResult]
    bandwidth_bytes_per_s: float
    per_op_overhead_s: float
    clock: str = "wall"


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


def _copy_bandwidth(
    nbytes: int,
    device: torch.device,
    min_time_s: float,
    sync: Callable[[], None] | None,
    clock: Callable[[], int],
) -> float:
    """Bytes per second of a large tensor copy, counting the read and the write."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = time_call(
        lambda: dst.copy_(src), min_time_s=min_time_s, min_repeats=5, sync=sync, clock=clock
    ).median_s
    return 2 * src.numel() * 4 / seconds


def run_microbenchmarks(
    backend: str = "torch-cpu",
    threads: int | None = None,
    min_time_s: float = 0.3,
    progress: bool = True,
    gemm_shapes: tuple[tuple[int, int, int], ...] = GEMM_SHAPES,
    conv_shapes: tuple[ConvShape, ...] = CONV_SHAPES,
    bandwidth_bytes: int = BANDWIDTH_BYTES,
    clock: str = "wall",
) -> MicroBenchResults:
    """Time every benchmark at ``threads`` torch threads (restored afterwards)."""
    device = _device(backend)
    sync: Callable[[], None] | None = torch.cuda.synchronize if device.type == "cuda" else None
    previous = torch.get_num_threads()
    threads = threads or previous
    tick = clock_named(clock, threads, device.type)
    steps = len(gemm_shapes) + len(conv_shapes) + 2
    bar = tqdm(
        total=steps, desc="profile measure", unit="bench", file=sys.stderr, disable=not progress
    )
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            bar.set_postfix_str("per-op overhead")
            tiny = torch.zeros(1, device=device)
            relu = nn.ReLU()
            overhead = time_call(
                lambda: relu(tiny), min_time_s=min_time_s, min_repeats=50, sync=sync, clock=tick
            ).median_s
            bar.update()

            bar.set_postfix_str("bandwidth")
            bandwidth = _copy_bandwidth(bandwidth_bytes, device, min_time_s, sync, tick)
            bar.update()

            gemm = []
            for m, k, n in gemm_shapes:
                bar.set_postfix_str(f"gemm {m}x{k}x{n}")
                layer = nn.Linear(k, n).to(device).eval()
                x = torch.randn(m, k, device=device)
                t = time_call(
                    lambda layer=layer, x=x: layer(x), min_time_s=min_time_s, sync=sync, clock=tick
                ).median_s
                gemm.append(GemmResult(m, k, n, t))
                bar.update()

            conv = []
            for s in conv_shapes:
                bar.set_postfix_str(
                    f"conv {s.in_channels}->{s.out_channels} {s.size}x{s.size} k{s.kernel}"
                )
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
                t = time_call(
                    lambda layer=layer, x=x: layer(x), min_time_s=min_time_s, sync=sync, clock=tick
                ).median_s
                conv.append(ConvResult(s, t))
                bar.update()
    finally:
        torch.set_num_threads(previous)
        bar.close()
    return MicroBenchResults(str(device), threads, gemm, conv, bandwidth, overhead, clock)

"""The machine-speed probe: a fixed matrix product timed in the same rounds as a model's parts.

``eebench compare`` divides each part's change by the probe's change, so a machine
that was busier while one run measured a model does not pass for a regression. That
only works when the probe slows down the way the parts do, so the product runs
through the *same* backend as the parts: a torch model's probe is ``torch.mm`` on the
model's device, an ONNX Runtime model's probe is a one-node MatMul graph in an
``InferenceSession`` with the model's session options. A prepared model builds its
own (``PreparedModel.speed_probe``); the torch one here is the default.

Every probe says what it ran (``SpeedProbe.kind``). Runs made before the probe followed
the backend timed :data:`HOST_TORCH_KIND` on every backend; ``eebench compare`` divides
only by probes of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PROBE_SIZE = 128
"""Side of the probe's square float32 matrices: 128^3 = 2.1 M multiply-adds per call."""


def torch_kind(device: str = "cpu") -> str:
    """The kind of :func:`torch_matmul_probe` on ``device``."""
    return f"torch.mm {PROBE_SIZE}x{PROBE_SIZE} float32 on {device}"


HOST_TORCH_KIND = torch_kind("cpu")
"""What every run timed before the probe followed the backend (its rows have no kind)."""


@dataclass(frozen=True)
class SpeedProbe:
    """One probe, ready to call: ``run()`` computes the product once; ``runner`` is what it
    runs through (a torch device, an ONNX Runtime session), kept so that it can be checked."""

    kind: str
    run: Callable[[], Any]
    runner: Any = None


def probe_operands(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two seeded standard-normal float32 matrices a non-torch probe multiplies."""
    rng = np.random.default_rng(seed)
    shape = (PROBE_SIZE, PROBE_SIZE)
    return (
        rng.standard_normal(shape, dtype=np.float32),
        rng.standard_normal(shape, dtype=np.float32),
    )


def torch_matmul_probe(seed: int = 0, device: Any = "cpu") -> SpeedProbe:
    """``torch.mm`` of two fixed 128 x 128 float32 matrices on ``device``, into a preallocated
    output, in the thread settings of the measurement. On CUDA the call only queues the
    kernel: the measurement's timer synchronises it as it does the parts."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (PROBE_SIZE, PROBE_SIZE)
    dev = torch.device(device)
    a = torch.randn(*shape, generator=g).to(dev)
    b = torch.randn(*shape, generator=g).to(dev)
    out = torch.empty(*shape, device=dev)

    def run() -> Any:
        return torch.mm(a, b, out=out)

    return SpeedProbe(torch_kind(str(dev)), run, dev)

"""The torch eager backends: ``torch-cpu`` and ``torch-cuda``.

The prepared model owns a copy of the network in eval mode on its device, so
preparing never changes the caller's model. Inside ``activated()`` the
thread count is applied and autograd is off (``torch.inference_mode``), which
is where measurements and the executor run; a stage called outside it still
runs without autograd.

On CUDA, a call only queues work: timing uses CUDA events recorded on the
current stream and waits for the end event, ``sync()`` synchronises the
device, and ``to_numpy`` (the host copy the exit decision needs) waits for the
logits. Peak allocated memory is read with ``torch.cuda.max_memory_allocated``
(see :mod:`eebench.measure.memory`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from eebench.backends.base import (
    Backend,
    NativeState,
    PreparedModel,
    register_backend,
    resolve_threads,
    rows_index,
)
from eebench.backends.threads import torch_threads
from eebench.errors import BackendUnavailable
from eebench.measure.probe import SpeedProbe, torch_kind, torch_matmul_probe
from eebench.measure.timing import DEFAULT_CLOCK, Clock, IntervalTimer
from eebench.models.base import MultiExitModel, as_tuple, from_tuple


class TorchPrepared(PreparedModel):
    """A model copy on one torch device, run stage by stage in eager mode."""

    def __init__(
        self,
        backend: str,
        model: MultiExitModel,
        device: torch.device,
        batch_size: int,
        threads: int,
        interop_threads: int | None = None,
    ) -> None:
        self.backend = backend
        self.torch_device = device
        self.device = str(device)
        self.batch_size = batch_size
        self.threads = threads
        self.interop_threads = interop_threads
        self.model = copy.deepcopy(model).to(device).eval()
        self.model_name = model.metadata.name
        self.num_stages = model.num_stages
        self.input_shape = tuple(model.input_shape)
        self._applied_interop: int | None = None

    # ------------------------------------------------------------------ running
    def run_stage(self, i: int, state: NativeState) -> NativeState:
        if torch.is_inference_mode_enabled():
            return as_tuple(self.model.forward_stage(i, from_tuple(state)))
        with torch.inference_mode():
            return as_tuple(self.model.forward_stage(i, from_tuple(state)))

    def run_exit(self, i: int, state: NativeState) -> torch.Tensor:
        if torch.is_inference_mode_enabled():
            return self.model.forward_exit(i, from_tuple(state))
        with torch.inference_mode():
            return self.model.forward_exit(i, from_tuple(state))

    def to_input(self, x: Any) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        return t.to(self.torch_device, dtype=torch.float32).contiguous()

    def to_numpy(self, value: torch.Tensor) -> np.ndarray:
        return value.detach().cpu().numpy()

    def select(self, state: NativeState, rows: np.ndarray) -> NativeState:
        idx = torch.from_numpy(rows_index(rows)).to(self.torch_device)
        return tuple(t.index_select(0, idx) for t in state)

    @contextmanager
    def activated(self) -> Iterator[TorchPrepared]:
        with torch_threads(self.threads, self.interop_threads) as applied, torch.inference_mode():
            self._applied_interop = applied.interop_threads
            yield self

    @property
    def speed_probe_kind(self) -> str:
        return torch_kind(self.device)

    def speed_probe(self, seed: int = 0) -> SpeedProbe:
        """``torch.mm`` on this model's device (on CUDA timed by the same CUDA events)."""
        return torch_matmul_probe(seed, self.torch_device)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "provider": f"torch-{torch.__version__}",
            "device": self.device,
            "threads": self.threads,
            "interop_threads": self._applied_interop
            if self._applied_interop is not None
            else torch.get_num_interop_threads(),
            "dtype": "float32",
            "batch_size": self.batch_size,
            "model": self.model_name,
            "speed_probe": self.speed_probe_kind,
        }


class TorchCudaPrepared(TorchPrepared):
    """CUDA variant: event timing and explicit synchronisation."""

    def sync(self) -> None:
        torch.cuda.synchronize(self.torch_device)

    def interval_timer(self, clock: Clock = DEFAULT_CLOCK) -> IntervalTimer:
        return CudaEventTimer(self.torch_device)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        props = torch.cuda.get_device_properties(self.torch_device)
        d.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            cuda_runtime=torch.version.cuda,
        )
        return d


class CudaEventTimer:
    """Times a call with CUDA events on the current stream; waits for the end event."""

    name = "cuda-events"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        with torch.cuda.device(device):
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], object]) -> int:
        with torch.cuda.device(self.device):
            self.start.record()
            fn()
            self.end.record()
            self.end.synchronize()
        return int(round(self.start.elapsed_time(self.end) * 1e6))  # ms -> ns


@register_backend("torch-cpu")
class TorchCPUBackend(Backend):
    """torch eager on the CPU, float32."""

    name = "torch-cpu"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def providers(self) -> list[str]:
        return ["cpu"]

    def prepare(
        self,
        model: MultiExitModel,
        batch_size: int = 1,
        threads: int | None = None,
        interop_threads: int | None = None,
        **options: Any,
    ) -> TorchPrepared:
        _refuse_options(self.name, options)
        return TorchPrepared(
            self.name,
            model,
            torch.device("cpu"),
            batch_size,
            resolve_threads(threads),
            interop_threads,
        )


@register_backend("torch-cuda")
class TorchCUDABackend(Backend):
    """torch eager on a CUDA device, float32; timed with CUDA events."""

    name = "torch-cuda"

    def available(self) -> tuple[bool, str]:
        if torch.version.cuda is None:
            return (
                False,
                f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch",
            )
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        return True, ""

    def providers(self) -> list[str]:
        if not self.available()[0]:
            return []
        return [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]

    def prepare(
        self,
        model: MultiExitModel,
        batch_size: int = 1,
        threads: int | None = None,
        interop_threads: int | None = None,
        device: int | str = 0,
        **options: Any,
    ) -> TorchCudaPrepared:
        _refuse_options(self.name, options)
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(self.name, reason)
        dev = torch.device(device if isinstance(device, str) else f"cuda:{device}")
        return TorchCudaPrepared(
            self.name, model, dev, batch_size, resolve_threads(threads), interop_threads
        )


def _refuse_options(backend: str, options: dict[str, Any]) -> None:
    if options:
        from eebench.errors import ConfigError

        raise ConfigError(
            f"unknown option(s) {sorted(options)} for backend '{backend}'; "
            "accepted: batch_size, threads, interop_threads (and device for torch-cuda)",
            field="backend.options",
        )

"""One eager call of a module with hooks: bytes moved per leaf module, parameters read.

fvcore's trace gives operator counts but not memory traffic, and a stage's
``stage_module`` wraps the whole model, so "the parameters of this stage"
cannot be read off a module tree. This probe runs the static path once and
records what actually happened:

* every module whose ``__call__`` ran (forward pre-hooks);
* for every leaf module: float32 bytes of its tensor inputs and outputs,
  summed over its calls;
* every parameter passed to a torch operation (a ``TorchFunctionMode`` sees
  functional use too, e.g. ``F.linear(x, self.weight)`` in a custom forward).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

FLOAT32_BYTES = 4


def iter_tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) tuple/list/dict of outputs or arguments."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


def float32_bytes(obj: Any) -> int:
    """Size in bytes of every tensor in ``obj`` if stored as float32 (4 bytes per element)."""
    return FLOAT32_BYTES * sum(t.numel() for t in iter_tensors(obj))


@dataclass
class LeafTraffic:
    """Bytes in and out of one leaf module over all its calls in one probe."""

    calls: int = 0
    input_bytes: int = 0
    output_bytes: int = 0


@dataclass
class ProbeResult:
    """What one eager call touched (modules and parameters identified by object)."""

    output: Any
    called: set[int] = field(default_factory=set)
    leaves: dict[int, LeafTraffic] = field(default_factory=dict)
    parameters: dict[int, nn.Parameter] = field(default_factory=dict)


class _ParameterRecorder(TorchFunctionMode):
    """Records every ``nn.Parameter`` handed to a torch function or tensor method."""

    def __init__(self, found: dict[int, nn.Parameter]) -> None:
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        for t in iter_tensors((args, kwargs)):
            if isinstance(t, nn.Parameter):
                self.found[id(t)] = t
        return func(*args, **kwargs)


def probe(module: nn.Module, inputs: tuple[Tensor, ...]) -> ProbeResult:
    """Call ``module(*inputs)`` once under ``torch.no_grad`` and record modules, bytes, parameters."""
    result = ProbeResult(output=None)
    handles = []

    def pre_hook(mod: nn.Module, args: Any) -> None:
        result.called.add(id(mod))

    def leaf_hook(mod: nn.Module, args: Any, output: Any) -> None:
        traffic = result.leaves.setdefault(id(mod), LeafTraffic())
        traffic.calls += 1
        traffic.input_bytes += float32_bytes(args)
        traffic.output_bytes += float32_bytes(output)

    try:
        for mod in module.modules():
            handles.append(mod.register_forward_pre_hook(pre_hook))
            if next(mod.children(), None) is None:
                handles.append(mod.register_forward_hook(leaf_hook))
        with torch.no_grad(), _ParameterRecorder(result.parameters):
            result.output = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return result

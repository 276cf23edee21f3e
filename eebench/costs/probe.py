"""One eager call of a module with hooks: bytes moved per leaf module, parameters read.

fvcore's trace gives operator counts but not memory traffic, and a stage's
``stage_module`` wraps the whole model, so "the parameters of this stage"
cannot be read off a module tree. This probe runs the static path once and
records what actually happened:

* every module whose ``__call__`` ran (forward pre-hooks);
* for every leaf module: float32 bytes of its tensor inputs and outputs,
  summed over its calls;
* every parameter passed to a torch operation (a ``TorchFunctionMode`` sees
  functional use too, e.g. ``F.linear(x, self.weight)`` in a custom forward);
* how often each module was called, and every tensor-producing torch function
  called *outside* any leaf module (a residual ``+``, ``torch.cat``, a functional
  ``relu``): fvcore's counts fold these into their parent, but each is an
  operator with its own dispatch cost, which the hardware-profile estimator prices.
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


@dataclass(frozen=True)
class FunctionCall:
    """One tensor-producing torch function called outside every leaf module.

    ``weight_bytes`` are the float32 bytes of the ``nn.Parameter`` arguments; the other
    tensor arguments are ``input_bytes``. Views (``reshape``, indexing) are recorded too:
    the reader decides what moves data.
    """

    name: str
    input_bytes: int
    output_bytes: int
    weight_bytes: int


@dataclass
class ProbeResult:
    """What one eager call touched (modules and parameters identified by object).

    ``calls`` counts the calls of every module (leaves and containers);
    ``functions`` lists, in order, the torch functions called outside leaf modules.
    """

    output: Any
    called: set[int] = field(default_factory=set)
    leaves: dict[int, LeafTraffic] = field(default_factory=dict)
    parameters: dict[int, nn.Parameter] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)
    functions: list[FunctionCall] = field(default_factory=list)
    leaf_depth: int = 0


def _function_name(func: Any) -> str:
    return getattr(func, "__name__", None) or str(func)


class _ParameterRecorder(TorchFunctionMode):
    """Records every ``nn.Parameter`` handed to a torch function or tensor method, and the
    functions called while no leaf module is running."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__()
        self.result = result

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        elements = weights = 0
        for t in iter_tensors((args, kwargs)):
            if isinstance(t, nn.Parameter):
                self.result.parameters[id(t)] = t
                weights += t.numel()
            elements += t.numel()
        out = func(*args, **kwargs)
        if self.result.leaf_depth == 0:
            produced = float32_bytes(out)
            if produced:
                self.result.functions.append(
                    FunctionCall(
                        _function_name(func),
                        FLOAT32_BYTES * (elements - weights),
                        produced,
                        FLOAT32_BYTES * weights,
                    )
                )
        return out


def probe(module: nn.Module, inputs: tuple[Tensor, ...]) -> ProbeResult:
    """Call ``module(*inputs)`` once under ``torch.no_grad`` and record modules, bytes, parameters."""
    result = ProbeResult(output=None)
    handles = []

    def pre_hook(mod: nn.Module, args: Any) -> None:
        result.called.add(id(mod))
        result.calls[id(mod)] = result.calls.get(id(mod), 0) + 1

    def leaf_pre_hook(mod: nn.Module, args: Any) -> None:
        result.leaf_depth += 1

    def leaf_hook(mod: nn.Module, args: Any, output: Any) -> None:
        result.leaf_depth -= 1
        traffic = result.leaves.setdefault(id(mod), LeafTraffic())
        traffic.calls += 1
        traffic.input_bytes += float32_bytes(args)
        traffic.output_bytes += float32_bytes(output)

    try:
        for mod in module.modules():
            handles.append(mod.register_forward_pre_hook(pre_hook))
            if next(mod.children(), None) is None:
                handles.append(mod.register_forward_pre_hook(leaf_pre_hook))
                handles.append(mod.register_forward_hook(leaf_hook))
        with torch.no_grad(), _ParameterRecorder(result):
            result.output = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return result

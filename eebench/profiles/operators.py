"""The operators the estimator prices, read off the analytic cost table (eebench.costs).

The estimator needs each operator on its own (a roofline is per operator, and
each operator pays its own dispatch overhead). Everything it needs comes from
:func:`eebench.costs.analyze_costs` -- the per-leaf-module MACs, input, output
and weight bytes of every stage and exit head -- and from the same eager probe
that table is built with (:func:`eebench.costs.probe.probe`), which adds what an
operator count folds away:

* how often each leaf module ran (a shared ``nn.ReLU`` called twice is two
  operators, each with half the traffic);
* tensor-producing torch functions called outside leaf modules (residual
  additions, concatenations, functional activations), each one operator;
* calls of container modules (``nn.Sequential``, blocks): in eager frameworks
  each module call costs time of its own.

The analytic table is per sample (batch 1); at batch ``B`` an operator does ``B``
times the MACs and moves ``B`` times the activations, and reads its weights once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from eebench.costs import OUTSIDE_LEAVES, CostTable, analyze_costs
from eebench.costs.probe import FLOAT32_BYTES, FunctionCall, probe

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_MAX_POOLS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_AVG_POOLS = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Mish,
)
_NO_DATA = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd)

# functions that only reshape or describe tensors: no data moved, not an operator of their own
VIEW_FUNCTIONS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "permute",
        "transpose",
        "t",
        "__getitem__",
        "narrow",
        "expand",
        "expand_as",
        "split",
        "chunk",
        "unbind",
        "contiguous",
        "detach",
        "size",
        "dim",
        "numel",
        "to",
        "type",
        "float",
        "clone",
        "__get__",
        "__set__",
        "requires_grad_",
        "is_floating_point",
        "is_contiguous",
        "dropout",
    }
)
_ACTIVATION_FUNCTIONS = frozenset(
    {
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "gelu",
        "silu",
        "sigmoid",
        "tanh",
        "hardswish",
        "hardsigmoid",
        "softmax",
        "log_softmax",
        "mish",
        "clamp",
        "clamp_min",
        "hardtanh",
    }
)
_MATMUL_FUNCTIONS = frozenset({"matmul", "mm", "bmm", "addmm", "__matmul__", "einsum", "linear"})


@dataclass(frozen=True)
class Operator:
    """One executed operator of one stage or exit head (elements are per call)."""

    part: str  # "stage" or "exit"
    index: int
    name: str
    # conv | depthwise_conv | linear | matmul | maxpool | avgpool | norm | lrn | activation |
    # elementwise | other: operators; view: a module call that moves no data (flatten,
    # identity, dropout in eval); container: the call of a module that only calls its children
    op: str
    macs: int
    input_elements: int
    output_elements: int
    weight_elements: int
    kernel: int = 1  # kernel elements of a convolution (9 for 3x3), else 1
    stride: int = 1  # product of a convolution's strides, else 1

    def bytes(self, bytes_per_element: int = 4) -> int:
        """Bytes moved: input + output + weights at the given element size."""
        return (
            self.input_elements + self.output_elements + self.weight_elements
        ) * bytes_per_element

    @property
    def is_call_only(self) -> bool:
        """A module call that does no arithmetic and moves no data (views and containers)."""
        return self.op in ("view", "container")


def module_op(module: nn.Module) -> str:
    """The operator kind of one leaf module."""
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return "depthwise_conv" if depthwise else "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, nn.LocalResponseNorm):
        return "lrn"
    if isinstance(module, _MAX_POOLS):
        return "maxpool"
    if isinstance(module, _AVG_POOLS):
        return "avgpool"
    if isinstance(module, _ACTIVATIONS):
        return "activation"
    if isinstance(module, _NO_DATA) or (isinstance(module, nn.Sequential) and len(module) == 0):
        return "view"
    return "other"


def function_op(name: str) -> str | None:
    """The operator kind of a torch function called outside leaf modules; None for views."""
    if name in VIEW_FUNCTIONS:
        return None
    bare = name.strip("_")
    if bare.startswith("conv"):
        return "conv"
    if name in _MATMUL_FUNCTIONS:
        return "matmul"
    if "max_pool" in bare:
        return "maxpool"
    if "avg_pool" in bare or bare == "mean":
        return "avgpool"
    if bare == "local_response_norm":
        return "lrn"
    if bare.endswith("norm"):
        return "norm"
    if bare.rstrip("_") in _ACTIVATION_FUNCTIONS:
        return "activation"
    return "elementwise"


def _elements(nbytes: int) -> int:
    return nbytes // FLOAT32_BYTES


def _part_operators(
    model: nn.Module,
    costs: CostTable,
    part: str,
    index: int,
    root: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    batch_size: int,
) -> list[Operator]:
    seen = probe(root, inputs)
    modules = dict(model.named_modules())
    root_modules = dict(root.named_modules())
    names = {id(m): n for n, m in modules.items()}
    names.update({id(m): n for n, m in root_modules.items() if id(m) not in names})
    by_id = {id(m): m for m in root_modules.values()}
    b = batch_size
    out: list[Operator] = []
    for layer in (lc for lc in costs.layers if lc.part == part and lc.index == index):
        if layer.module == OUTSIDE_LEAVES:
            if layer.macs:  # MACs of functional products in a non-leaf forward
                out.append(Operator(part, index, layer.module, "matmul", layer.macs * b, 0, 0, 0))
            continue
        module = modules.get(layer.module)
        if module is None:  # a module of the part's wrapper, named from the part's root
            module = root_modules.get(layer.module)
        if module is None:
            raise KeyError(f"layer '{layer.module}' of {part} {index} is not a module of the model")
        op = module_op(module)
        calls = max(seen.calls.get(id(module), 1), 1)
        if op == "view":
            out += [Operator(part, index, layer.module, "view", 0, 0, 0, 0)] * calls
            continue
        kernel = stride = 1
        if isinstance(module, nn.modules.conv._ConvNd):
            kernel, stride = math.prod(module.kernel_size), math.prod(module.stride)
        one = Operator(
            part,
            index,
            layer.module,
            op,
            layer.macs * b // calls,
            _elements(layer.input_bytes) * b // calls,
            _elements(layer.output_bytes) * b // calls,
            _elements(layer.weight_bytes),
            kernel,
            stride,
        )
        out += [one] * calls
    out += [_function_operator(part, index, f, b) for f in seen.functions]
    out = [o for o in out if o is not None]
    for mod_id, n in seen.calls.items():
        mod = by_id.get(mod_id)
        if mod is None or mod is root or mod is model or next(mod.children(), None) is None:
            continue
        out += [Operator(part, index, names.get(mod_id, "?"), "container", 0, 0, 0, 0)] * n
    return out


def _function_operator(part: str, index: int, call: FunctionCall, b: int) -> Operator | None:
    op = function_op(call.name)
    if op is None:
        return None
    return Operator(
        part,
        index,
        f"fn:{call.name}",
        op,
        0,
        _elements(call.input_bytes) * b,
        _elements(call.output_bytes) * b,
        _elements(call.weight_bytes),
    )


def model_operators(
    model: nn.Module, batch_size: int = 1, cost_table: CostTable | None = None
) -> list[Operator]:
    """Every operator of every stage and exit head of a MultiExitModel at ``batch_size``.

    ``cost_table`` is the model's :func:`~eebench.costs.analyze_costs` (computed here when
    not given). The probe runs the static path of every part once on a zero batch, on the
    CPU with one torch thread, in eval mode (restored afterwards).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    costs = cost_table if cost_table is not None else analyze_costs(model)
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            states = model.example_states(1)
        out: list[Operator] = []
        for i in range(model.num_stages):
            for part, root, inputs in (
                ("stage", model.stage_module(i), states[i]),
                ("exit", model.exit_module(i), states[i + 1]),
            ):
                out += _part_operators(model, costs, part, i, root, tuple(inputs), batch_size)
        return out
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)

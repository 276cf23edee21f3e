"""The per-layer work of every stage and exit head: MACs and elements moved, for the estimator.

The estimator needs each operator on its own (a roofline is per layer, and
each layer pays its own dispatch overhead), so this walk records one row per
executed leaf module, plus one row per tensor-producing torch function called
*outside* any leaf module (residual additions, concatenations, functional
activations), which module hooks alone would miss.

Counting (1 MAC = one multiply-add; FLOPs = 2 x MACs):

* convolution: ``Cin/groups * prod(kernel) * Cout * prod(output spatial) * batch``
* linear / matmul: ``in_features * out_features * rows``
* everything else: 0 MACs (memory-bound: only its bytes and overhead count)

Elements moved are input + output + weights; multiplied by the precision's
bytes per element they give the bytes of the memory term. Views (flatten,
reshape, indexing) move nothing; dropout and identity in eval return their
input. Calls of container modules (``nn.Sequential``, blocks) are recorded as
``container`` rows: in eager frameworks each module call costs time of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

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
_VIEW_FUNCTIONS = {
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
_ACTIVATION_FUNCTIONS = {
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
_MATMUL_FUNCTIONS = {"matmul", "mm", "bmm", "addmm", "__matmul__", "einsum"}


Row = tuple[str, str, int, int, int, int, int, int]


@dataclass(frozen=True)
class LayerCost:
    """One executed operator of one stage or exit head."""

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
    def is_view(self) -> bool:
        return self.op == "view"

    @property
    def is_call_only(self) -> bool:
        """A module call that does no arithmetic and moves no data (views and containers)."""
        return self.op in ("view", "container")


def _tensors(obj: object) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _numel(obj: object) -> int:
    return sum(t.numel() for t in _tensors(obj))


def _classify_module(module: nn.Module, inputs: tuple, output: object) -> tuple[str, int]:
    """(op kind, MACs) of one leaf module call."""
    out_el = _numel(output)
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        macs = out_el * (module.in_channels // module.groups) * kernel
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return ("depthwise_conv" if depthwise else "conv"), macs
    if isinstance(module, nn.Linear):
        return "linear", out_el * module.in_features
    if isinstance(module, nn.Bilinear):
        return "linear", out_el * module.in1_features * module.in2_features
    if isinstance(module, _NORMS):
        return "norm", 0
    if isinstance(module, nn.LocalResponseNorm):
        return "lrn", 0
    if isinstance(module, _MAX_POOLS):
        return "maxpool", 0
    if isinstance(module, _AVG_POOLS):
        return "avgpool", 0
    if isinstance(module, _ACTIVATIONS):
        return "activation", 0
    if isinstance(module, _NO_DATA) or (isinstance(module, nn.Sequential) and len(module) == 0):
        return "view", 0
    return "other", 0


def _function_name(func: object) -> str:
    return getattr(func, "__name__", None) or str(func)


def _classify_function(
    name: str, args: tuple, kwargs: dict, output: object
) -> tuple[str, int] | None:
    """(op kind, MACs) of a torch function called outside leaf modules; None to ignore it."""
    if name in _VIEW_FUNCTIONS or not _tensors(output):
        return None
    out_el = _numel(output)
    tensors = _tensors(args) + _tensors(kwargs)
    if name.startswith("conv") and len(tensors) >= 2:
        w = tensors[1]
        return "conv", out_el * int(w.shape[1]) * math.prod(w.shape[2:])
    if name == "linear" and len(tensors) >= 2:
        return "linear", out_el * int(tensors[1].shape[-1])
    if name in _MATMUL_FUNCTIONS and tensors:
        a = tensors[-2] if name == "addmm" and len(tensors) >= 3 else tensors[0]
        return "matmul", out_el * int(a.shape[-1])
    bare = name.strip("_").rstrip("_")
    if "max_pool" in bare:
        return "maxpool", 0
    if "avg_pool" in bare or bare == "mean":
        return "avgpool", 0
    if bare == "local_response_norm":
        return "lrn", 0
    if bare.endswith("norm"):
        return "norm", 0
    if bare in _ACTIVATION_FUNCTIONS:
        return "activation", 0
    return "elementwise", 0


class _Recorder(TorchFunctionMode):
    """Records leaf-module calls (through hooks) and torch functions called between them."""

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self._depth = 0
        self._handles: list = []
        for name, module in root.named_modules():
            label = name or type(module).__name__
            if next(module.children(), None) is not None:
                if module is not root:  # the caller's own call is not part of the model's cost
                    self._handles.append(module.register_forward_hook(self._container(label)))
                continue
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._make_exit(label)))

    def _enter(self, module: nn.Module, inputs: tuple) -> None:
        self._depth += 1

    def _container(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            self.rows.append((name, "container", 0, 0, 0, 0, 1, 1))

        return hook

    def _make_exit(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            self._depth -= 1
            op, macs = _classify_module(module, inputs, output)
            if op == "view":
                self.rows.append((name, op, 0, 0, 0, 0, 1, 1))
                return
            weights = sum(p.numel() for p in module.parameters(recurse=False))
            weights += sum(
                b.numel() for b in module.buffers(recurse=False) if b.is_floating_point()
            )
            kernel, stride = 1, 1
            if isinstance(module, nn.modules.conv._ConvNd):
                kernel, stride = math.prod(module.kernel_size), math.prod(module.stride)
            row = (name, op, macs, _numel(inputs), _numel(output), weights, kernel, stride)
            self.rows.append(row)

        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._depth == 0:
            name = _function_name(func)
            found = _classify_function(name, args, kwargs, out)
            if found is not None:
                op, macs = found
                tensors = _tensors(args) + _tensors(kwargs)
                kernel = 1
                if op in ("conv", "linear") and tensors:
                    # F.conv2d(x, weight, bias) / F.linear(x, weight, bias): the rest are weights
                    n_in, n_w = tensors[0].numel(), sum(t.numel() for t in tensors[1:])
                    if op == "conv" and len(tensors) > 1:
                        kernel = math.prod(tensors[1].shape[2:])
                else:
                    n_in, n_w = sum(t.numel() for t in tensors), 0
                self.rows.append((f"fn:{name}", op, macs, n_in, _numel(out), n_w, kernel, 1))
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def walk_module(module: nn.Module, inputs: Sequence[Tensor]) -> list[Row]:
    """Rows ``(name, op, macs, input_elements, output_elements, weight_elements, kernel,
    stride)`` of one call of ``module``: the fields of :class:`LayerCost` after part and index."""
    recorder = _Recorder(module)
    try:
        with recorder:
            module(*inputs)
    finally:
        recorder.remove()
    return recorder.rows


@torch.no_grad()
def _walk_parts(model: nn.Module, batch_size: int, device: str) -> list[LayerCost]:
    """Walk stage by stage, feeding each stage the previous stage's output (and each head
    the output of its stage), on ``device``."""
    x = torch.zeros(batch_size, *model.input_shape, device=device)
    state: tuple[Tensor, ...] = (x,)
    out: list[LayerCost] = []
    for i in range(model.num_stages):
        stage = model.stage_module(i)
        recorder = _Recorder(stage)
        try:
            with recorder:
                next_state = stage(*state)
        finally:
            recorder.remove()
        out += [
            LayerCost("stage", i, name.removeprefix("model."), *rest)
            for name, *rest in recorder.rows
        ]
        state = next_state if isinstance(next_state, tuple) else (next_state,)
        for name, *rest in walk_module(model.exit_module(i), state):
            out.append(LayerCost("exit", i, name.removeprefix("model."), *rest))
    return out


def model_layers(model: nn.Module, batch_size: int = 1) -> list[LayerCost]:
    """Every operator of every stage and exit head of a MultiExitModel, on its own static path.

    The walk is one forward of a zero batch on the CPU with one torch thread (the values do
    not matter, and one thread is the fastest way to run small layers on a busy machine).
    """
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    try:
        torch.set_num_threads(1)
        return _walk_parts(model, batch_size, "cpu")
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)

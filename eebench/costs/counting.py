"""Operator counts of one module on one input, by fvcore's tracer.

fvcore counts one fused multiply-add as one "flop"; that is a MAC, and this
module calls it so. Its handlers are split in two groups:

* **MAC operators** (:data:`MAC_OPS`): convolution, linear, addmm, mm,
  matmul, bmm, einsum. These are multiply-accumulate work and make up the
  ``macs`` count everywhere in eebench (bias additions are not counted).
* **other operators** (:data:`OTHER_OPS`): fvcore's counts for normalisation
  (batch norm: 1 op per element in eval mode, 2 with affine; it folds into the
  preceding convolution at inference), adaptive average pooling, upsampling
  and grid sampling, plus max/average pooling, which fvcore leaves uncounted
  (1 op per input element). They are not MACs and are reported apart as
  ``other_ops`` so they are visible without inflating the MAC count.

Every other operator is either ignored by fvcore (shape ops, ``relu``,
``cat``, ``dropout``, ...) or reported as *unsupported* with how often it
occurred (element-wise ``add``/``mul``, ``sigmoid``, ``softmax``, ...); the
unsupported ones are kept as data, never dropped, so a table can show them.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor, nn

#: fvcore operator names (after dropping ``aten::``) whose counts are MACs.
MAC_OPS: frozenset[str] = frozenset(
    {"conv", "_convolution", "linear", "addmm", "mm", "matmul", "bmm", "einsum"}
)

# pooling operators fvcore has no handler for; counted here as one operation per input element
_EXTRA_POOLING_OPS = (
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_max_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool3d",
)

#: operator names whose counts are non-MAC operations (``other_ops``): fvcore's own
#: normalisation, pooling and resampling handlers, plus the pooling operators above.
OTHER_OPS: frozenset[str] = frozenset(
    {
        "batch_norm",
        "group_norm",
        "layer_norm",
        "instance_norm",
        "upsample_nearest2d",
        "upsample_bilinear2d",
        "adaptive_avg_pool2d",
        "grid_sampler",
        *_EXTRA_POOLING_OPS,
    }
)

COUNTED_OPS_NOTE = (
    "macs = multiply-accumulates of convolution, linear, addmm, mm, matmul, bmm and einsum "
    "(fvcore handlers; 1 fused multiply-add = 1 MAC, FLOPs = 2 x MACs, bias additions not "
    "counted); other_ops = batch/group/layer/instance norm, pooling and upsampling operations "
    "(not MACs); operators listed in unsupported_ops (e.g. element-wise add/mul) are not counted; "
    "relu, reshapes, cat and dropout are ignored"
)


@dataclass(frozen=True)
class OpCount:
    """What fvcore counted for one traced call.

    ``by_module`` maps every module name of the traced root (``""`` is the
    root, then ``child.grandchild``) to its ``(macs, other_ops)``;
    ``unsupported_ops`` maps full operator names (``aten::add``) to how often
    they occurred; ``uncalled_modules`` is fvcore's set of submodules that
    never appeared in the trace.
    """

    macs: int
    other_ops: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    uncalled_modules: frozenset[str] = frozenset()


def _split(ops: Counter[str]) -> tuple[int, int]:
    """(MACs, other ops) of one fvcore per-operator counter."""
    macs = sum(v for k, v in ops.items() if k in MAC_OPS)
    other = sum(v for k, v in ops.items() if k not in MAC_OPS)
    return int(macs), int(other)


def count_ops(module: nn.Module, inputs: tuple[Tensor, ...]) -> OpCount:
    """Trace ``module(*inputs)`` once with fvcore and split its counts into MACs and other ops.

    fvcore's log warnings (unsupported operators, uncalled modules) and the
    tracer's warnings are silenced; the same information is returned as data.
    The caller decides the mode (eval) and the batch size of ``inputs``.
    """
    with warnings.catch_warnings():
        # importing fvcore.nn scripts its losses with the deprecated torch.jit.script
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import elementwise_flop_counter

        analysis = (
            FlopCountAnalysis(module, tuple(inputs))
            .set_op_handle(
                **{f"aten::{op}": elementwise_flop_counter(1, 0) for op in _EXTRA_POOLING_OPS}
            )
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        per_module = analysis.by_module_and_operator()
    unknown = set(per_module.get("", Counter())) - MAC_OPS - OTHER_OPS
    if unknown:
        # a handler registered by fvcore that this module does not classify: refuse to guess
        raise RuntimeError(
            f"fvcore counted operators {sorted(unknown)} that eebench does not classify as MAC or "
            "other operations; add them to MAC_OPS or OTHER_OPS in eebench/costs/counting.py"
        )
    macs, other = _split(per_module.get("", Counter()))
    return OpCount(
        macs=macs,
        other_ops=other,
        by_module={name: _split(ops) for name, ops in per_module.items()},
        unsupported_ops=dict(analysis.unsupported_ops()),
        uncalled_modules=frozenset(analysis.uncalled_modules()),
    )


def count_macs(module: nn.Module, inputs: tuple[Tensor, ...]) -> int:
    """MACs of ``module(*inputs)`` (convolution, linear and matrix products; see module doc)."""
    return count_ops(module, inputs).macs

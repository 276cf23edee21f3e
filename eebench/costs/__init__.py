"""Analytic costs: MACs, parameters and activation bytes per stage and exit head; expected cost.

MACs are fvcore's counts of convolution, linear and matrix products (one
fused multiply-add = 1 MAC; FLOPs = 2 x MACs). See ``counting`` for exactly
which operators count and how the others are reported.
"""

from eebench.costs.analysis import (
    OUTSIDE_LEAVES,
    CostTable,
    LayerCost,
    PartCost,
    analyze_costs,
    cumulative,
    layer_costs,
)
from eebench.costs.counting import (
    COUNTED_OPS_NOTE,
    MAC_OPS,
    OTHER_OPS,
    OpCount,
    count_macs,
    count_ops,
)
from eebench.costs.expected import expected_cost

__all__ = [
    "COUNTED_OPS_NOTE",
    "MAC_OPS",
    "OTHER_OPS",
    "OUTSIDE_LEAVES",
    "CostTable",
    "LayerCost",
    "OpCount",
    "PartCost",
    "analyze_costs",
    "count_macs",
    "count_ops",
    "cumulative",
    "expected_cost",
    "layer_costs",
]

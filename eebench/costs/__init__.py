"""Analytic costs: MACs, parameters and activation bytes per stage and exit head; expected cost.

MACs are fvcore's counts of convolution, linear and matrix products (one
fused multiply-add = 1 MAC; FLOPs = 2 x MACs). See ``counting`` for exactly
which operators count and how the others are reported. ``plain`` says what
the network without early exits runs (the denominator of every saving).
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
from eebench.costs.plain import PlainNetwork, plain_network, plain_network_of

__all__ = [
    "COUNTED_OPS_NOTE",
    "MAC_OPS",
    "OTHER_OPS",
    "OUTSIDE_LEAVES",
    "CostTable",
    "LayerCost",
    "OpCount",
    "PartCost",
    "PlainNetwork",
    "analyze_costs",
    "count_macs",
    "count_ops",
    "cumulative",
    "expected_cost",
    "layer_costs",
    "plain_network",
    "plain_network_of",
]

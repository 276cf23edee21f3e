"""A stopping policy over a cascade trained for accuracy against energy (Guan et al. 2018).

J. Guan, Y. Liu, Q. Liu, J. Peng, *Energy-efficient Amortized Inference with Cascaded Deep
Classifiers*, IJCAI 2018. Each instance goes through a cascade of classifiers of increasing size;
after each one a stopping policy reads that classifier's label probabilities and decides whether to
stop with its prediction or run the next one. The policy is trained with REINFORCE on a reward that
adds the negative prediction loss and the negative energy accumulated so far (weighted).

In eebench (reward and the ``theta`` sweep: :mod:`eebench.policies.tradeoff`) the policy is a
logistic stop probability per member over the member's softmax probabilities sorted in descending
order (standardised), trained on the validation record. Differences from the paper: its policy
module reads the probabilities as they come; a linear rule could not tell a confident member from
an unsure one on unsorted probabilities (the largest probability is not a linear function of them),
hence the sorting; the cascade members are trained before the policy, not jointly with it; the
prediction loss is the 0-1 loss (so the trade-off is accuracy against energy, what eebench
reports); the expected reward of the stochastic policy is an exact sum over the members on a
recorded validation set, so it is maximised with its exact gradient instead of REINFORCE's sampled
estimate, and the policy is deployed as its mode. The energy is the run's measured net energy per
part (or a hardware profile's estimate) when the suite has one (``cost: energy``, the default): the
first energy cost vector of the run. Without one the policy falls back to the analytic MACs, and
its ``cost_source`` says so.
"""

from __future__ import annotations

import numpy as np

from eebench.policies.dynamic_routing import _ActorTradeoffPolicy
from eebench.policies.registry import register_policy


@register_policy("guan-cascade")
class GuanCascadePolicy(_ActorTradeoffPolicy):
    """Guan et al. 2018: a stopping policy on each member's label probabilities, charged energy."""

    default_cost = "energy"
    features = ()

    def __init__(
        self,
        cost: str = "energy",
        cost_weights: list[float] | None = None,
        l2: float = 1e-3,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cost=cost, cost_weights=cost_weights, l2=l2, folds=folds, seed=seed)

    def exit_features(self, log_probs: np.ndarray) -> np.ndarray:
        """The member's softmax probabilities ``(..., C)`` sorted in descending order (the
        paper's policy input, seen class-agnostically)."""
        return -np.sort(-np.exp(log_probs), axis=-1)

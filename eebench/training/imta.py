"""Gradient equilibrium (Li et al., *Improved Techniques for Training Adaptive Deep Networks*, ICCV 2019).

Joint training sums every exit's loss, so stage ``i`` of an ``n``-stage
backbone receives the *sum* of the gradients of the ``n - i`` exits that read
it: early stages get the largest, most conflicting gradients. Gradient
equilibrium (GE) rescales the backward pass so that stage ``i`` receives their
*mean* instead. As in the paper's public code, two identity maps with scaled
gradients sit at the output of each stage ``i`` (0-based):

* before exit ``i`` and the path onwards, gradients are multiplied by ``1 / (n - i)``;
* on the path into stage ``i + 1`` only, they are multiplied by ``n - i - 1``.

Unrolled, the gradient of exit ``k >= i``'s loss reaching stage ``i`` is
multiplied by ``(n-i-1)/(n-i) * (n-i-2)/(n-i-1) * ... * 1/(n-k) = 1/(n-i)``:
every later exit counts equally and the stage sees the average. The exits'
own parameters receive their unscaled gradients; the forward pass is unchanged.

Unlike the public MSDNet code, which rescales only the coarsest-scale tensor
(the one its classifiers read), every tensor of the state is rescaled here, so
the rule above holds exactly for every family (multi-scale states included).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from eebench.models import MultiExitModel
from eebench.models.base import State, as_tuple, from_tuple


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` in the backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(state: State, scale: float) -> State:
    """The state unchanged, with the gradient flowing back through each of its tensors scaled.

    Tensors that do not require a gradient (e.g. the raw input a state carries
    along) are passed through as they are.
    """
    return from_tuple(
        [_ScaleGradient.apply(t, scale) if t.requires_grad else t for t in as_tuple(state)]
    )


def forward_all_equilibrium(model: MultiExitModel, x: Tensor) -> list[Tensor]:
    """Every exit's logits, equal to ``model.forward_all(x)``, with gradient equilibrium on the
    backward pass: stage ``i``'s parameters receive the mean of the exits ``i .. n-1``'s gradients."""
    n = model.num_stages
    outs: list[Tensor] = []
    state: State = x
    for i in range(n):
        state = scale_gradient(model.forward_stage(i, state), 1.0 / (n - i))
        outs.append(model.forward_exit(i, state))
        if i < n - 1:
            state = scale_gradient(state, float(n - i - 1))
    return outs

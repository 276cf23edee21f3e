"""Loss functions of the training schemes."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from eebench.errors import ConfigError


def early_exit_weights(spec: str | Sequence[float], num_exits: int) -> list[float]:
    """Weights ``w_i`` of the early exits ``0 .. num_exits - 2`` in the joint loss.

    ``uniform``: every early exit weighs 1, like the final exit. ``linear``:
    ``w_i = (i + 1) / num_exits``, growing with depth up to the final exit's
    implicit 1. A list gives the weights directly (one per early exit).
    """
    early = num_exits - 1
    if spec == "uniform":
        return [1.0] * early
    if spec == "linear":
        return [(i + 1) / num_exits for i in range(early)]
    if isinstance(spec, str):
        raise ConfigError(
            f"expected 'uniform', 'linear' or a list of numbers, got {spec!r}", field="exit_weights"
        )
    weights = [float(w) for w in spec]
    if len(weights) != early:
        raise ConfigError(
            f"expected {early} weights (one per early exit of this {num_exits}-exit model; the final exit "
            f"weighs 1), got {len(weights)}",
            field="exit_weights",
        )
    return weights


def joint_loss(
    logits: Sequence[Tensor], labels: Tensor, weights: Sequence[float], label_smoothing: float = 0.0
) -> Tensor:
    """``L = L(final) + sum_i w_i L(exit_i)``, cross-entropy at every exit."""
    loss = F.cross_entropy(logits[-1], labels, label_smoothing=label_smoothing)
    for w, out in zip(weights, logits[:-1]):
        if w:
            loss = loss + w * F.cross_entropy(out, labels, label_smoothing=label_smoothing)
    return loss


def distillation_loss(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Hinton's knowledge distillation: ``alpha T^2 KL(p_T || q_T) + (1 - alpha) CE(q, y)``.

    ``p_T`` / ``q_T`` are the teacher's / student's softmax at temperature
    ``T``; the ``T^2`` factor keeps the soft term's gradient scale independent
    of ``T``. The teacher's logits are treated as constants.
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    loss = alpha * t * t * soft
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(
            student, labels, label_smoothing=label_smoothing
        )
    return loss


def one_for_all_loss(
    logits: Sequence[Tensor],
    labels: Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """IMTA's one-for-all knowledge distillation: the final exit teaches every earlier one.

    ``L = CE(final, y) + sum_{i < last} [alpha T^2 KL(p_T(final) || q_T(exit_i))
    + (1 - alpha) CE(exit_i, y)]`` (Li et al., ICCV 2019). The final exit's
    logits are the soft target of each early exit and are treated as constants
    there; they learn from their own cross-entropy term only.
    """
    final = logits[-1]
    loss = F.cross_entropy(final, labels, label_smoothing=label_smoothing)
    for out in logits[:-1]:
        loss = loss + distillation_loss(out, final, labels, temperature, alpha, label_smoothing)
    return loss

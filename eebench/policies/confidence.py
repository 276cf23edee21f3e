"""Confidence measures: how sure an exit is of its prediction, from its logits.

Every measure is oriented so that **higher means more confident**, so that
every decision function has the one form ``D_i(x) = conf_i(x) >= theta_i``:

* ``max_softmax``: the largest softmax probability, in ``[1/C, 1]``;
* ``score_margin``: top-1 minus top-2 softmax probability, in ``[0, 1]``;
* ``entropy``: ``1 - H(softmax) / log C``, clipped to ``[0, 1]``. The entropy itself
  is low when an exit is confident; normalising by ``log C`` and taking the
  complement turns it into a confidence (1 = one-hot, 0 = uniform).

Measures work on the last axis of any array (``(N, E, C)`` records, ``(B, C)``
batches in the online decider, ``(C,)`` rows) and always compute in float64
from :func:`log_softmax64`, so the vectorised evaluation and the online
decider produce bit-identical confidences and ties at a threshold fall the
same way in both.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eebench.errors import EEBenchError
from eebench.registry import Registry

ConfidenceFn = Callable[[np.ndarray], np.ndarray]

CONFIDENCE: Registry[ConfidenceFn] = Registry("confidence measure")


class NonFiniteLogitsError(EEBenchError, ValueError):
    """Logits with NaN or infinity: no confidence or prediction can be derived from them."""


def check_finite(
    logits: np.ndarray,
    rows: np.ndarray | None = None,
    exit_index: int | None = None,
    sample_ids: np.ndarray | None = None,
    where: str = "logits",
) -> None:
    """Raise :class:`NonFiniteLogitsError` naming the first sample and exit with NaN/inf logits.

    ``logits`` is ``(N, E, C)`` (record) or ``(B, C)`` at exit ``exit_index``
    (decider; ``rows`` gives the original row of each line). ``sample_ids``
    names samples by id rather than by row when given.
    """
    finite = np.isfinite(logits)
    if finite.all():
        return
    pos = np.argwhere(~finite)[0]
    if logits.ndim == 3:
        row, exit_i, cls = (int(p) for p in pos)
    else:
        line, cls = int(pos[0]), int(pos[-1])
        row = int(rows[line]) if rows is not None else line
        exit_i = int(exit_index) if exit_index is not None else -1
    value = logits[tuple(pos)]
    sample = (
        f"sample id {sample_ids[row]!r} (row {row})"
        if sample_ids is not None
        else f"sample row {row}"
    )
    count = int((~finite).sum())
    raise NonFiniteLogitsError(
        f"{where}: {sample} has a non-finite logit ({value!r}) at exit {exit_i}, class {cls} "
        f"({count} non-finite value(s) in all). The model produced NaN/inf: check that the "
        "checkpoint loaded correctly and that training did not diverge."
    )


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis in float64 (stable: the max is subtracted first)."""
    z = np.array(logits, dtype=np.float64)  # always a fresh array: updated in place below
    z -= z.max(axis=-1, keepdims=True)
    lse = np.exp(z).sum(axis=-1, keepdims=True)
    np.log(lse, out=lse)
    z -= lse
    return z


def predictions(logits: np.ndarray) -> np.ndarray:
    """The predicted class (argmax of the logits, first index on ties) over the last axis."""
    return np.asarray(logits).argmax(axis=-1)


@CONFIDENCE.register("max_softmax")
def max_softmax(log_probs: np.ndarray) -> np.ndarray:
    """The largest softmax probability."""
    return np.exp(log_probs.max(axis=-1))


@CONFIDENCE.register("score_margin")
def score_margin(log_probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 softmax probability (0 when the two best classes tie)."""
    top = np.exp(np.partition(log_probs, (-2, -1), axis=-1)[..., -2:])  # exp is monotone
    return top[..., 1] - top[..., 0]


@CONFIDENCE.register("entropy")
def entropy_confidence(log_probs: np.ndarray) -> np.ndarray:
    """1 - H / log C, with H the softmax entropy: 1 for a one-hot, 0 for uniform."""
    num_classes = log_probs.shape[-1]
    h = -(np.exp(log_probs) * log_probs).sum(axis=-1)
    # clipped: rounding must not push a uniform softmax below 0 (theta = 0 would then miss it);
    # maximum/minimum select exactly what np.clip would, without its per-call wrapper cost
    return np.minimum(np.maximum(1.0 - h / np.log(num_classes), 0.0), 1.0)


def confidence(name: str, logits: np.ndarray) -> np.ndarray:
    """Confidence measure ``name`` of ``logits`` over the last axis, float64."""
    return CONFIDENCE.get(name)(log_softmax64(logits))


def list_confidence_measures() -> list[str]:
    """Registered confidence measure names."""
    return CONFIDENCE.names()

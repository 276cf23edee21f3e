"""Overthinking (Kaya et al., Shallow-Deep Networks): exits that were right before the network went on.

A sample is *overthought* when some exit before the final one classifies it
correctly but the final exit does not (the paper's definition). Under a
policy, a sample is *lost by exiting early* when the final exit gets it right
but the policy's answer is wrong, and *rescued* when the final exit gets it
wrong but the policy's answer is right; both are columns of the
operating-point table (neither is overthinking in the paper's sense).

*Wasted computation* (the paper's "wasteful effect" of overthinking): a
sample whose first correct exit is ``f`` needed only the cumulative cost
``cum[f]``; whatever it paid beyond that was spent after an earlier exit
already had the right answer. Per sample ``n`` that left having paid
``paid_n``::

    wasted_n      = max(0, paid_n - cum[f_n])     (0 when no exit is right)
    wasted_frac_n = wasted_n / paid_n             (0 when paid_n == 0)

The operating-point table reports the mean of each over all samples
(``wasted_<cost>`` in the cost's unit, ``wasted_frac_<cost>`` a fraction in
[0, 1)). ``paid_n`` is the cumulative cost of the exit the sample left at,
except under the ``final-only`` baseline, which pays the plain network's cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.evaluation.cost_vector import CostVector, check_costs


def plain_paid(cost: CostVector) -> np.ndarray:
    """What a sample leaving at each exit pays under the ``final-only`` baseline: only the last
    entry is ever used (every sample leaves there), and it is the plain network's cost."""
    paid = np.array(cost.values, dtype=np.float64)
    paid[-1] = cost.plain
    return paid


def first_correct_exit(correct: np.ndarray) -> np.ndarray:
    """``(N,)`` index of the first exit that is correct; ``E`` when no exit is."""
    n, e = correct.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.where(correct.any(axis=1), correct.argmax(axis=1), e)


def overthinking_rate(correct: np.ndarray) -> float:
    """Share of samples that some exit before the final one gets right while the final exit does not."""
    if correct.shape[0] == 0:
        return 0.0
    return float((correct[:, :-1].any(axis=1) & ~correct[:, -1]).mean())


def wasted_table(
    correct: np.ndarray, cumulative: np.ndarray, paid: np.ndarray | None = None
) -> np.ndarray:
    """``(N, E)``: cost paid beyond the first correct exit if the sample left at each exit (>= 0).

    ``paid[e]`` is what a sample leaving at exit ``e`` paid (default: the
    cumulative cost ``cumulative[e]``; the ``final-only`` baseline pays the
    plain network's cost instead). Samples that no exit gets right waste
    nothing by this definition (there was no correct answer to stop at).
    """
    n, e = correct.shape
    cum = np.asarray(cumulative, dtype=np.float64)
    pay = cum if paid is None else np.asarray(paid, dtype=np.float64)
    first = first_correct_exit(correct)
    has = first < e
    base = np.where(has, cum[np.minimum(first, e - 1)], 0.0)
    waste = np.maximum(pay[None, :] - base[:, None], 0.0)
    return np.where(has[:, None], waste, 0.0)


def wasted_fraction_table(
    correct: np.ndarray, cumulative: np.ndarray, paid: np.ndarray | None = None
) -> np.ndarray:
    """``(N, E)``: the share of what the sample paid that was wasted, if it left at each exit.

    ``wasted_table / paid`` per cell, 0 where nothing was paid; see the module
    docstring for the definition.
    """
    pay = np.asarray(cumulative if paid is None else paid, dtype=np.float64)
    waste = wasted_table(correct, cumulative, pay)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pay[None, :] > 0, waste / pay[None, :], 0.0)


def overthinking_table(correct: np.ndarray, costs: Sequence[CostVector] = ()) -> pd.DataFrame:
    """Per exit: accuracy, share whose first correct exit it is, share it gets right while the final
    exit does not (overthought at this exit), and the mean cost a final-only run (the plain network)
    wastes and its mean wasted fraction (same on every row, ``final_only_wasted_<cost>`` and
    ``final_only_wasted_frac_<cost>``)."""
    n, e = correct.shape
    costs = check_costs(costs, e)
    first = first_correct_exit(correct)
    final_wrong = ~correct[:, -1]
    data: dict[str, object] = {
        "exit": np.arange(e),
        "accuracy": correct.mean(axis=0),
        "first_correct_frac": np.bincount(first, minlength=e + 1)[:e] / n,
        "overthought_frac": (correct & final_wrong[:, None]).mean(axis=0),
    }
    for c in costs:
        paid = plain_paid(c)
        data[f"final_only_wasted_{c.name}"] = np.full(
            e, wasted_table(correct, c.values, paid)[:, -1].mean()
        )
        data[f"final_only_wasted_frac_{c.name}"] = np.full(
            e, wasted_fraction_table(correct, c.values, paid)[:, -1].mean()
        )
        data[f"{c.name}_unit"] = [c.unit] * e
        data[f"{c.name}_source"] = [c.source] * e
    return pd.DataFrame(data)

"""Overthinking (Kaya et al., Shallow-Deep Networks): exits that were right before the network went on.

A sample is *overthought* when some exit before the final one classifies it
correctly but the final exit does not. Under a policy, *destructive*
overthinking is a sample the final exit gets right but the policy's answer
gets wrong, and a *rescued* sample the converse; both are columns of the
operating-point table. The compute *wasted* on a sample is what it paid
beyond the cumulative cost of its first correct exit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.evaluation.cost_vector import CostVector, check_costs


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


def wasted_table(correct: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """``(N, E)``: cost paid beyond the first correct exit if the sample left at each exit (>= 0).

    Samples that no exit gets right waste nothing by this definition (there
    was no correct answer to stop at).
    """
    n, e = correct.shape
    first = first_correct_exit(correct)
    has = first < e
    base = np.where(has, np.asarray(cumulative)[np.minimum(first, e - 1)], 0.0)
    waste = np.maximum(np.asarray(cumulative)[None, :] - base[:, None], 0.0)
    return np.where(has[:, None], waste, 0.0)


def overthinking_table(correct: np.ndarray, costs: Sequence[CostVector] = ()) -> pd.DataFrame:
    """Per exit: accuracy, share whose first correct exit it is, share it gets right while the final
    exit does not (overthought at this exit), and the mean cost a final-only run wastes (same on every
    row, ``final_only_wasted_<cost>``)."""
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
        data[f"final_only_wasted_{c.name}"] = np.full(
            e, wasted_table(correct, c.values)[:, -1].mean()
        )
        data[f"{c.name}_unit"] = [c.unit] * e
        data[f"{c.name}_source"] = [c.source] * e
    return pd.DataFrame(data)

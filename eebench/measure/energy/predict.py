"""Predicted energy of a true early-exit run from the measured energy of its parts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def predict_energy(
    exit_indices: Sequence[int] | np.ndarray, stage_j: np.ndarray, head_j: np.ndarray
) -> np.ndarray:
    """Per sample, the energy of the stages and heads it executed: a sample that leaves at
    exit ``e`` ran stages ``0..e`` and heads ``0..e`` (each head decides whether to leave)."""
    stage = np.asarray(stage_j, dtype=np.float64)
    head = np.asarray(head_j, dtype=np.float64)
    if stage.shape != head.shape or stage.ndim != 1:
        raise ValueError(
            f"stage and head energies must be vectors of one length, got {stage.shape} and "
            f"{head.shape}"
        )
    cumulative = np.cumsum(stage + head)
    idx = np.asarray(exit_indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= cumulative.size):
        raise ValueError(
            f"exit indices must lie in [0, {cumulative.size - 1}], got {idx.min()}..{idx.max()}"
        )
    return cumulative[idx]

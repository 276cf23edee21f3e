"""The plain network: what a model costs when it is run without any early exit.

Every saving eebench reports is measured against the plain network (the
``final-only`` baseline and the executor's ``backbone`` mode), so it must
cost exactly what a deployment without exits would pay, no more:

* intermediate classifiers and multi-scale networks: every stage, then only
  the final head (the early heads are not part of the network without exits);
* a cascade: its last member alone, run from the raw input (a cascade's
  members start from scratch, so stage ``E - 1`` plus head ``E - 1`` is
  exactly that member; the cheaper members never run).

The ``aggregation`` baseline is different on purpose: it computes every exit,
so it pays every stage and every head (the cumulative cost of the final exit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CASCADE_FAMILIES = frozenset({"cascade"})
"""Families whose stages are independent member models, each run from the raw input."""


@dataclass(frozen=True)
class PlainNetwork:
    """Which parts the plain network runs: ``stages`` in order, then the single head ``head``.

    ``from_input`` is True when ``stages[0]`` is not stage 0 and reads the raw
    input directly (a cascade's last member).
    """

    family: str
    num_exits: int
    stages: tuple[int, ...]
    head: int

    @property
    def from_input(self) -> bool:
        return self.stages[0] != 0

    def cost(
        self, stage: Sequence[float] | np.ndarray, head: Sequence[float] | np.ndarray
    ) -> float:
        """The plain network's cost from per-stage and per-head costs (MACs, ms, mJ, ...)."""
        s = np.asarray(stage, dtype=np.float64)
        h = np.asarray(head, dtype=np.float64)
        if s.shape != (self.num_exits,) or h.shape != (self.num_exits,):
            raise ValueError(
                f"plain network of a {self.num_exits}-exit '{self.family}' model: expected one "
                f"stage and one head cost per exit, got shapes {s.shape} and {h.shape}"
            )
        return float(s[list(self.stages)].sum() + h[self.head])

    def describe(self) -> str:
        """A short phrase for table notes: what the plain network runs."""
        if self.from_input:
            return (
                f"stage {self.stages[0]} + head {self.head} (the last member, from the raw input)"
            )
        return f"stages 0..{self.stages[-1]} + head {self.head} (the final head only)"


def plain_network(family: str, num_exits: int) -> PlainNetwork:
    """The plain network of a ``num_exits``-exit model of ``family`` (see the module docstring)."""
    if int(num_exits) < 1:
        raise ValueError(f"plain network: a model has at least one exit, got num_exits={num_exits}")
    last = int(num_exits) - 1
    stages = (last,) if family in CASCADE_FAMILIES else tuple(range(last + 1))
    return PlainNetwork(family=family, num_exits=int(num_exits), stages=stages, head=last)


def plain_network_of(model: object) -> PlainNetwork:
    """The plain network of a built multi-exit model (reads its ``family`` and ``num_exits``)."""
    return plain_network(str(getattr(model, "family", "unknown")), int(model.num_exits))  # type: ignore[attr-defined]

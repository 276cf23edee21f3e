"""A cumulative per-exit cost with its unit and where the numbers come from.

``values[i]`` is what a sample that leaves at exit ``i`` has paid: every stage
and every head up to and including ``i``. ``plain`` is what the plain network
(the model without early exits: every stage and only the final head; a
cascade's last member alone) costs: the ``final-only`` baseline pays it, and
every saving is measured against it. The ``source`` label travels with
the numbers into every table (``analytic`` for MACs,
``measured:<backend>,threads=..,batch=..`` for timings,
``estimated:<profile>`` for a hardware-profile estimate), so an estimate can
never pass for a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from eebench.costs.plain import PlainNetwork
from eebench.errors import ConfigError

SOURCE_KINDS = ("analytic", "measured", "estimated")

_NAME_BY_UNIT = {
    "macs": "macs",
    "flops": "flops",
    "ns": "latency",
    "us": "latency",
    "ms": "latency",
    "s": "latency",
    "j": "energy",
    "mj": "energy",
    "uj": "energy",
}


@dataclass(frozen=True)
class CostVector:
    """Cumulative cost per exit (``values``, length = number of exits), ``unit`` and ``source``.

    ``name`` becomes the column stem (``expected_<name>``); it defaults from
    the unit: MACs -> ``macs``, time units -> ``latency``, J/mJ/uJ -> ``energy``.
    ``plain`` is the plain network's cost (see the module docstring). Built by
    :meth:`from_parts` with the model's :class:`~eebench.costs.plain.PlainNetwork`
    it is exact; given only cumulative values it defaults to ``values[-1]``
    (every stage and every head), which overstates it by the early heads (and,
    for a cascade, by every member but the last): pass it when known.
    """

    values: np.ndarray
    unit: str
    source: str
    name: str = field(default="")
    plain: float | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64)
        name = self.name or _NAME_BY_UNIT.get(self.unit.lower(), "")
        where = f"cost vector '{name or self.unit}'"
        if not name:
            raise ConfigError(
                f"cannot name a cost in unit '{self.unit}': pass name=... (e.g. 'latency', 'energy')",
                source=where,
            )
        if not name.isidentifier():
            raise ConfigError(
                f"name must be a plain identifier (it names columns), got {name!r}", source=where
            )
        kind = self.source.split(":", 1)[0].split(",", 1)[0]
        if kind not in SOURCE_KINDS:
            raise ConfigError(
                f"source must say what the numbers are: 'analytic', 'measured:<backend>,...' or "
                f"'estimated:<profile>', got {self.source!r}",
                source=where,
                field="source",
            )
        if kind == "estimated" and not self.source.startswith("estimated:"):
            raise ConfigError(
                f"an estimate must name its profile ('estimated:<profile>'), got {self.source!r}",
                source=where,
                field="source",
            )
        if v.ndim != 1 or v.size == 0:
            raise ConfigError(
                f"values must be a non-empty 1-D vector (one per exit), got shape {v.shape}",
                source=where,
                field="values",
            )
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ConfigError(
                f"values must be finite and >= 0, got {v.tolist()}", source=where, field="values"
            )
        if np.any(np.diff(v) < 0):
            raise ConfigError(
                f"values must be cumulative (non-decreasing along the exits), got {v.tolist()}; "
                "use CostVector.from_parts(stage, head, ...) for per-stage costs",
                source=where,
                field="values",
            )
        plain = float(v[-1]) if self.plain is None else float(self.plain)
        if not np.isfinite(plain) or plain < 0 or plain > v[-1] * (1 + 1e-9):
            raise ConfigError(
                f"plain network cost must be finite, >= 0 and at most the final exit's cumulative "
                f"cost {float(v[-1]):.6g} (the plain network is a part of the whole), got {plain!r}",
                source=where,
                field="plain",
            )
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "plain", plain)

    @classmethod
    def from_parts(
        cls,
        stage: Sequence[float] | np.ndarray,
        head: Sequence[float] | np.ndarray,
        unit: str,
        source: str,
        name: str = "",
        plain: PlainNetwork | None = None,
    ) -> CostVector:
        """Cumulative costs from per-stage and per-head costs: exit ``i`` pays stages and heads ``<= i``.

        ``plain`` (the model's :func:`~eebench.costs.plain.plain_network`) says which
        parts the plain network runs; without it the plain cost is every stage and the
        final head (right for intermediate classifiers and multi-scale networks, not for
        a cascade).
        """
        s = np.asarray(stage, dtype=np.float64)
        h = np.asarray(head, dtype=np.float64)
        if s.shape != h.shape or s.ndim != 1:
            raise ConfigError(
                f"stage and head costs must be 1-D of equal length, got {s.shape} and {h.shape}",
                source=f"cost vector '{name or unit}'",
            )
        plain_cost = None
        if s.size:
            plain_cost = float(s.sum() + h[-1]) if plain is None else plain.cost(s, h)
        return cls(
            np.cumsum(s) + np.cumsum(h), unit=unit, source=source, name=name, plain=plain_cost
        )

    @classmethod
    def macs(
        cls, cumulative: Sequence[float] | np.ndarray, plain: float | None = None
    ) -> CostVector:
        """Analytic cumulative MACs per exit (1 MAC = one multiply-add; FLOPs = 2 x MACs) and,
        when given, the plain network's MACs (default: the final exit's cumulative MACs)."""
        return cls(
            np.asarray(cumulative, dtype=np.float64),
            unit="MACs",
            source="analytic",
            name="macs",
            plain=plain,
        )

    @property
    def num_exits(self) -> int:
        return int(self.values.shape[0])

    def check_exits(self, num_exits: int) -> None:
        """Refuse a cost vector whose length does not match the record's exits."""
        if self.num_exits != num_exits:
            raise ConfigError(
                f"has {self.num_exits} values but the record has {num_exits} exits; "
                "costs must come from the same model as the record",
                source=f"cost vector '{self.name}'",
            )


def check_costs(costs: Sequence[CostVector], num_exits: int) -> tuple[CostVector, ...]:
    """Validate a set of cost vectors against a record: right length, distinct names."""
    costs = tuple(costs)
    seen: set[str] = set()
    for c in costs:
        if not isinstance(c, CostVector):
            raise ConfigError(f"costs must be CostVector objects, got {type(c).__name__}")
        c.check_exits(num_exits)
        if c.name in seen:
            raise ConfigError(
                f"two cost vectors are named '{c.name}'; give each a distinct name=..."
            )
        seen.add(c.name)
    return costs

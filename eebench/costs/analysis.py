"""Analytic cost of every stage and exit head of a multi-exit model, and per leaf layer.

Each stage and each head is counted on its own static path: stage ``i`` is
``model.stage_module(i)`` traced on ``model.example_states(1)[i]`` and exit
``i`` is ``model.exit_module(i)`` on ``example_states(1)[i + 1]``. Nothing goes
through a data-dependent forward, so the counts do not depend on which exit a
sample would take. Counting is done in eval mode, at batch 1, so every number
is per sample.

What ``macs`` counts is stated in :data:`~eebench.costs.counting.COUNTED_OPS_NOTE`
(convolution, linear and matrix products; FLOPs = 2 x MACs). Operators
fvcore does not count are listed per stage/head in ``unsupported_ops`` and
modules that never ran inside a stage/head in ``uncalled_modules``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from eebench.costs.counting import COUNTED_OPS_NOTE, count_ops
from eebench.costs.plain import PlainNetwork, plain_network
from eebench.costs.probe import float32_bytes, probe
from eebench.models.base import MultiExitModel

Part = Literal["stage", "exit"]

SOURCE = "analytic"

_NO_FORWARD = (nn.Module.forward, nn.ModuleList.forward, nn.ModuleDict.forward, nn.Identity.forward)


@dataclass(frozen=True)
class PartCost:
    """Cost of one stage or one exit head, per sample.

    ``params`` are the parameters this part reads (each counted once);
    ``input_bytes`` / ``output_bytes`` are the float32 sizes of the flat
    state it takes and of what it returns.
    """

    part: Part
    index: int
    macs: int
    other_ops: int
    params: int
    input_bytes: int
    output_bytes: int
    unsupported_ops: dict[str, int]
    uncalled_modules: tuple[str, ...]


@dataclass(frozen=True)
class LayerCost:
    """Cost of one leaf module inside one stage or head, per sample, summed over its calls.

    ``module`` is the name in the model (``stages.0.body.0``);
    the row named ``(outside leaf modules)`` holds operations done directly in
    a non-leaf module's forward (e.g. a functional ``matmul``), so the rows of a
    part add up to the part's totals.
    """

    part: Part
    index: int
    module: str
    type: str
    macs: int
    other_ops: int
    params: int
    input_bytes: int
    output_bytes: int
    weight_bytes: int


OUTSIDE_LEAVES = "(outside leaf modules)"


def cumulative(
    vector_stage: Sequence[float] | np.ndarray, vector_head: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Cost to reach each exit: element ``i`` = sum of stages <= i + sum of heads <= i.

    Works for any per-part cost (MACs, latency, energy): heads of exits that
    were not taken still ran, so they count.
    """
    stage = np.asarray(vector_stage)
    head = np.asarray(vector_head)
    if stage.ndim != 1 or head.ndim != 1 or stage.shape != head.shape:
        raise ValueError(
            "cumulative: expected two 1-D vectors of equal length (one value per stage and per "
            f"exit head), got shapes {stage.shape} and {head.shape}"
        )
    return np.cumsum(stage + head)


@dataclass(frozen=True)
class CostTable:
    """Analytic costs of one model: one :class:`PartCost` per stage and per exit head.

    ``table`` is the long-format view (one row per stage/head) written to
    results; ``layer_table`` the per-leaf-module view used by the hardware
    estimator. ``counted_ops`` says what ``macs`` counts. ``family`` decides
    what the plain network runs (:mod:`eebench.costs.plain`).
    """

    model: str
    input_shape: tuple[int, ...]
    num_exits: int
    parts: tuple[PartCost, ...]
    layers: tuple[LayerCost, ...]
    counted_ops: str = COUNTED_OPS_NOTE
    family: str = "unknown"

    def _vector(self, part: Part, attr: str) -> np.ndarray:
        values = {p.index: getattr(p, attr) for p in self.parts if p.part == part}
        return np.array([values[i] for i in range(self.num_exits)], dtype=np.int64)

    @property
    def stage_macs(self) -> np.ndarray:
        return self._vector("stage", "macs")

    @property
    def head_macs(self) -> np.ndarray:
        return self._vector("exit", "macs")

    @property
    def cumulative_macs(self) -> np.ndarray:
        """MACs to reach each exit: all stages and all heads up to and including it."""
        return cumulative(self.stage_macs, self.head_macs)

    @property
    def plain(self) -> PlainNetwork:
        """The parts the network runs without early exits."""
        return plain_network(self.family, self.num_exits)

    @property
    def plain_macs(self) -> int:
        """MACs of the plain network: every stage and the final head only; a cascade's last
        member alone. The denominator of every saving (the ``final-only`` baseline's cost)."""
        return int(self.plain.cost(self.stage_macs, self.head_macs))

    @property
    def stage_params(self) -> np.ndarray:
        return self._vector("stage", "params")

    @property
    def head_params(self) -> np.ndarray:
        return self._vector("exit", "params")

    @property
    def cumulative_params(self) -> np.ndarray:
        return cumulative(self.stage_params, self.head_params)

    @property
    def table(self) -> pd.DataFrame:
        """Long format: model, part, index, macs, params, bytes, coverage, source."""
        shape = "x".join(map(str, self.input_shape))
        rows = [
            {
                "model": self.model,
                "input_shape": shape,
                "part": p.part,
                "index": p.index,
                "macs": p.macs,
                "params": p.params,
                "input_bytes": p.input_bytes,
                "output_bytes": p.output_bytes,
                "other_ops": p.other_ops,
                "unsupported_ops": "; ".join(
                    f"{k}={v}" for k, v in sorted(p.unsupported_ops.items())
                ),
                "uncalled_modules": "; ".join(p.uncalled_modules),
                "source": SOURCE,
            }
            for p in self.parts
        ]
        df = pd.DataFrame(rows)
        df.attrs["counted_ops"] = self.counted_ops
        return df

    @property
    def layer_table(self) -> pd.DataFrame:
        """One row per stage/head and leaf module: type, macs, params, bytes in, out and of weights."""
        rows = [{"model": self.model, **vars(layer), "source": SOURCE} for layer in self.layers]
        df = pd.DataFrame(rows)
        df.attrs["counted_ops"] = self.counted_ops
        return df


def _has_forward(mod: nn.Module) -> bool:
    return all(type(mod).forward is not f for f in _NO_FORWARD)


def _analyze_part(
    model: MultiExitModel,
    part: Part,
    index: int,
    root: nn.Module,
    inputs: tuple[Tensor, ...],
    model_names: dict[int, str],
) -> tuple[PartCost, list[LayerCost]]:
    counts = count_ops(root, inputs)
    # a separate eager call: hooks inside fvcore's trace would add their own ops to the graph
    seen = probe(root, inputs)
    root_modules = dict(root.named_modules())

    def name_of(root_name: str) -> str:
        mod = root_modules[root_name]
        return model_names.get(id(mod), root_name)

    uncalled = []
    for root_name in sorted(counts.uncalled_modules):
        mod = root_modules.get(root_name)
        if mod is None or id(mod) in seen.called or not _has_forward(mod):
            continue
        parent = root_modules.get(root_name.rpartition(".")[0])
        # report a module skipped inside a part that ran, not the other stages of the model
        if parent is None or parent is root or parent is model or id(parent) not in seen.called:
            continue
        uncalled.append(name_of(root_name))

    layers: list[LayerCost] = []
    for root_name, mod in root_modules.items():
        traffic = seen.leaves.get(id(mod))
        if traffic is None:
            continue
        macs, other = counts.by_module.get(root_name, (0, 0))
        # weights read at inference: parameters and floating-point buffers (BN statistics),
        # not integer bookkeeping such as BN's num_batches_tracked
        tensors = [*mod.parameters(recurse=False)]
        tensors += [b for b in mod.buffers(recurse=False) if b.is_floating_point()]
        layers.append(
            LayerCost(
                part=part,
                index=index,
                module=name_of(root_name),
                type=type(mod).__name__,
                macs=macs,
                other_ops=other,
                params=sum(p.numel() for p in mod.parameters(recurse=False)),
                input_bytes=traffic.input_bytes,
                output_bytes=traffic.output_bytes,
                weight_bytes=sum(t.numel() * t.element_size() for t in tensors),
            )
        )
    rest_macs = counts.macs - sum(layer.macs for layer in layers)
    rest_other = counts.other_ops - sum(layer.other_ops for layer in layers)
    if rest_macs or rest_other:
        layers.append(
            LayerCost(part, index, OUTSIDE_LEAVES, "functional", rest_macs, rest_other, 0, 0, 0, 0)
        )

    cost = PartCost(
        part=part,
        index=index,
        macs=counts.macs,
        other_ops=counts.other_ops,
        params=sum(p.numel() for p in seen.parameters.values()),
        input_bytes=float32_bytes(inputs),
        output_bytes=float32_bytes(seen.output),
        unsupported_ops=dict(sorted(counts.unsupported_ops.items())),
        uncalled_modules=tuple(uncalled),
    )
    return cost, layers


def analyze_costs(model: MultiExitModel) -> CostTable:
    """Count MACs, parameters and activation bytes of every stage and exit head of ``model``.

    The model is put in eval mode for the count and its mode restored after;
    nothing is cached, so a model changed in place is counted afresh.
    """
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    try:
        # batch 1 gains nothing from intra-op threads, and on a busy machine they cost seconds
        torch.set_num_threads(1)
        with torch.no_grad():
            states = model.example_states(1)
        model_names = {id(m): n for n, m in model.named_modules()}
        parts: list[PartCost] = []
        layers: list[LayerCost] = []
        for i in range(model.num_stages):
            for part, root, inputs in (
                ("stage", model.stage_module(i), states[i]),
                ("exit", model.exit_module(i), states[i + 1]),
            ):
                cost, rows = _analyze_part(model, part, i, root, tuple(inputs), model_names)
                parts.append(cost)
                layers.extend(rows)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return CostTable(
        model=model.metadata.name,
        input_shape=tuple(model.input_shape),
        num_exits=model.num_exits,
        parts=tuple(parts),
        layers=tuple(layers),
        family=model.family,
    )


def layer_costs(model: MultiExitModel) -> pd.DataFrame:
    """Per stage/head and leaf module: type, macs, params, input/output/weight bytes (per sample)."""
    return analyze_costs(model).layer_table

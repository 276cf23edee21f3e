"""The ``compiled`` deployment mode: every stage and every exit head compiled on its own.

Each part (stage ``i``, exit ``i``) is a separate small module (the model's static paths,
:meth:`~eebench.models.MultiExitModel.stage_module` / ``exit_module``) passed to its own
``torch.compile(fullgraph=True)`` with inductor. The early-exit control flow stays on the host,
so every batching strategy runs through the compiled parts exactly as through the eager ones
(:class:`CompiledPrepared` is a prepared model whose ``run_stage`` / ``run_exit`` call them).

Three things would otherwise go wrong without anyone noticing:

* **Shared caches.** dynamo keeps compiled graphs per *code object*, and every stage of a
  model usually runs the same ``forward``: parts compiled through one wrapper share one cache,
  so a few exits times two batch-size graphs pass dynamo's recompile limit (8) and the rest
  runs eager. Each part is compiled with ``isolate_recompiles=True`` where torch has it (its own
  cache region); ``fullgraph=True`` makes a graph break, and hitting the limit, an error.
* **A part that compiled nothing.** The graphs dynamo makes are counted around each part's
  first call (``torch._dynamo.utils.counters["stats"]["unique_graphs"]``); a part that made
  none is refused.
* **Compiling while serving.** A batch size or input layout not seen before compiles again,
  inside a measured latency. Warm-up runs every part at 1, 2 and the largest row count a
  strategy can send (regrouping stacks queued fragments: up to ``2 x batch_size - 1`` rows),
  straight from the previous part, after a row selection (as batch shrinking does) and along
  the plain network's path (a cascade's last member reads the raw input); then
  every row count from 1 to that largest one runs again under
  ``torch.compiler.set_stance("fail_on_recompile")``, so a part that would compile again while
  serving is refused before LoadGen starts. Compiled logits are also checked against eager ones.

Any refusal is a ``ValueError`` with the part and the reason (the serving step lists it in
``skipped``). Compile time (``torch.compile`` + warm-up + checks) is measured and reported as
the deployment's ``build_s``; it never lands in a latency.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eebench.backends.base import NativeState, PreparedModel
from eebench.costs.plain import plain_network_of

COMPILE_OPTIONS: dict[str, Any] = {"backend": "inductor", "fullgraph": True}
"""How each part is compiled (``dynamic`` is left to dynamo: batch size 1 gets its own graph,
the first other size makes the batch dimension dynamic)."""

PATHS = ("direct", "select", "plain")
"""How states reach the parts while serving (see ``chain`` in :func:`compile_prepared`)."""

LOGIT_TOLERANCE = 1e-3
"""Largest |compiled - eager| logit (absolute, plus the same relative) accepted at build time."""


def inductor_problem(device_type: str) -> str | None:
    """Why inductor cannot compile for ``device_type`` here (None when it can)."""
    try:
        import torch._inductor.config  # noqa: F401 - inductor imports
    except Exception as err:  # noqa: BLE001 - any import failure is the reason
        return f"torch's inductor compiler does not import here ({type(err).__name__}: {err})"
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as err:  # noqa: BLE001
            return (
                "inductor needs a C++ compiler for CPU kernels and found none "
                f"({type(err).__name__}: {err}); install g++ or set CXX"
            )
        return None
    from torch.utils._triton import has_triton

    if not has_triton():
        return "inductor needs triton for CUDA kernels; pip install triton"
    return None


def _options() -> dict[str, Any]:
    """:data:`COMPILE_OPTIONS`, plus a cache region of its own per call where torch has it."""
    import torch

    options = dict(COMPILE_OPTIONS)
    if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
        options["isolate_recompiles"] = True
    return options


def compile_part(module: Any) -> Any:
    """``torch.compile`` of one part (see :func:`_options`)."""
    import torch

    return torch.compile(module, **_options())


@dataclass
class PartReport:
    """One compiled part: its name (``stage 0``, ``exit 0``) and the graphs dynamo made for it."""

    name: str
    graphs: int = 0


@dataclass
class CompileReport:
    """What compiling a model's parts cost and which row counts were checked."""

    parts: list[PartReport]
    compile_s: float
    rows_warmed: tuple[int, ...]
    rows_checked: int
    max_logit_diff: float
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "compile": "torch.compile per stage and exit head",
            "options": {k: str(v) for k, v in self.options.items()},
            "compile_s": self.compile_s,
            "graphs": {p.name: p.graphs for p in self.parts},
            "rows_warmed": list(self.rows_warmed),
            "rows_checked": f"1..{self.rows_checked} under fail_on_recompile",
            "max_logit_diff_vs_eager": self.max_logit_diff,
        }


class CompiledPrepared(PreparedModel):
    """A torch prepared model whose stages and exit heads run compiled; everything else (inputs,
    row selection, thread settings, timing) is the eager prepared model's."""

    def __init__(self, eager: Any, stages: list[Any], exits: list[Any]) -> None:
        self.eager = eager
        self.backend = eager.backend
        self.device = eager.device
        self.threads = eager.threads
        self.model_name = eager.model_name
        self.num_stages = eager.num_stages
        self.input_shape = eager.input_shape
        self.batch_size = getattr(eager, "batch_size", 1)
        self._stages = stages
        self._exits = exits

    def run_stage(self, i: int, state: NativeState) -> NativeState:
        import torch

        if torch.is_inference_mode_enabled():
            return self._stages[i](*state)
        with torch.inference_mode():  # the graphs were compiled (and are guarded) for it
            return self._stages[i](*state)

    def run_exit(self, i: int, state: NativeState) -> Any:
        import torch

        if torch.is_inference_mode_enabled():
            return self._exits[i](*state)
        with torch.inference_mode():
            return self._exits[i](*state)

    def to_input(self, x: Any) -> Any:
        return self.eager.to_input(x)

    def to_numpy(self, value: Any) -> np.ndarray:
        return self.eager.to_numpy(value)

    def select(self, state: NativeState, rows: np.ndarray) -> NativeState:
        return self.eager.select(state, rows)

    def sync(self) -> None:
        self.eager.sync()

    @contextmanager
    def activated(self) -> Iterator[CompiledPrepared]:
        with self.eager.activated():
            yield self

    def describe(self) -> dict[str, Any]:
        return {**self.eager.describe(), "compiled": "torch.compile per stage and exit head"}


def _rows(state: NativeState, idx: Any) -> NativeState:
    return tuple(t.index_select(0, idx) for t in state)


def compile_prepared(
    eager: Any, max_rows: int, seed: int = 0
) -> tuple[CompiledPrepared, CompileReport]:
    """Compile every stage and exit head of a torch prepared model, warm them up for 1 to
    ``max_rows`` rows and check them (see the module docstring). Raises ValueError with the
    part and the reason when a part cannot be compiled or would compile again while serving."""
    import torch
    from torch._dynamo.utils import counters

    why = inductor_problem(eager.torch_device.type)
    if why is not None:
        raise ValueError(why)
    if not hasattr(torch.compiler, "set_stance"):
        raise ValueError(
            f"torch {torch.__version__} has no torch.compiler.set_stance, which checks that no "
            "part compiles again while serving; the compiled mode needs torch >= 2.6"
        )
    model = eager.model
    n = model.num_stages
    stages = [compile_part(model.stage_module(i)) for i in range(n)]
    exits = [compile_part(model.exit_module(i)) for i in range(n)]
    reports = {f"stage {i}": PartReport(f"stage {i}") for i in range(n)}
    reports.update({f"exit {i}": PartReport(f"exit {i}") for i in range(n)})
    compiled = CompiledPrepared(eager, stages, exits)
    gen = torch.Generator().manual_seed(seed)
    max_rows = max(1, int(max_rows))
    warm = tuple(sorted({1, min(2, max_rows), max_rows}))

    def call(name: str, fn: Callable[..., Any], args: NativeState) -> Any:
        before = counters["stats"]["unique_graphs"]
        try:
            out = fn(*args)
        except Exception as err:  # noqa: BLE001 - every compile failure becomes the reason
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise _PartFailed(
                f"{name} of '{eager.model_name}': {type(err).__name__}: {first}"
            ) from err
        reports[name].graphs += counters["stats"]["unique_graphs"] - before
        return out

    plain = plain_network_of(model)

    def chain(rows: int, path: str) -> list[Any]:
        """Every part on ``rows`` random rows along ``path``: ``direct`` (each stage on the
        previous one's output), ``select`` (through a row selection first, as batch shrinking
        does) or ``plain`` (the plain network's stages and final head: a cascade's last member
        reads the raw input)."""
        x = torch.randn((rows, *eager.input_shape), generator=gen)
        state: NativeState = (compiled.to_input(x),)
        if path == "plain":
            for i in plain.stages:
                state = tuple(call(f"stage {i}", stages[i], state))
            return [x, call(f"exit {plain.head}", exits[plain.head], state)]
        idx = torch.arange(rows, device=eager.torch_device)
        logits = []
        for i in range(n):
            if path == "select":
                state = _rows(state, idx)
            state = tuple(call(f"stage {i}", stages[i], state))
            logits.append(call(f"exit {i}", exits[i], state))
        return [x, *logits]

    t0 = time.perf_counter()
    with eager.activated():
        try:
            for rows in warm:
                for path in PATHS:
                    chain(rows, path)
        except _PartFailed as err:
            raise ValueError(f"torch.compile could not compile {err}") from err.__cause__
        for name, rep in reports.items():
            if rep.graphs < 1:
                raise ValueError(
                    f"{name} of '{eager.model_name}' made no compiled graph "
                    "(dynamo would run it eager)"
                )
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                for rows in range(1, max_rows + 1):
                    for path in PATHS:
                        chain(rows, path)
                out = chain(max_rows, "direct")
        except _PartFailed as err:
            raise ValueError(
                f"a compiled part would compile again while serving ({rows} rows, {path} path), "
                f"so compile time would land in latencies: {err}"
            ) from err
        eager.sync()
        build_s = time.perf_counter() - t0
        x, *got = out
        state = (eager.to_input(x),)
        diff = 0.0
        for i in range(n):
            state = eager.run_stage(i, state)
            want = eager.to_numpy(eager.run_exit(i, state))
            have = compiled.to_numpy(got[i])
            err_i = float(np.max(np.abs(have - want))) if want.size else 0.0
            diff = max(diff, err_i)
            if not np.allclose(have, want, atol=LOGIT_TOLERANCE, rtol=LOGIT_TOLERANCE):
                raise ValueError(
                    f"compiled exit {i} of '{eager.model_name}' differs from eager by {err_i:.3g} "
                    f"(more than {LOGIT_TOLERANCE:g})"
                )
    report = CompileReport(list(reports.values()), build_s, warm, max_rows, diff, _options())
    return compiled, report


class _PartFailed(Exception):
    """A part's call raised (inside :func:`compile_prepared`; the caller says which phase)."""


def compiled_identity(device: Any) -> Any:
    """The overhead floor's part: ``x.clone()`` compiled like a stage (an op-less identity would
    make no graph and never reach inductor, so one copy stands for the empty stage)."""
    import torch

    class Copy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

    return compile_part(Copy().to(device).eval())

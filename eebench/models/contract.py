"""The model contract: what every multi-exit model must satisfy for eebench's numbers to hold.

Each clause is a function ``clause(model) -> str`` that returns a one-line
account of what it checked, or raises :class:`ContractViolation` saying what
is wrong and what to fix. The registry-wide tests call these same functions
on every built-in model, and ``eebench check-model SPEC`` runs them on a
user's model, so a user's network is held to exactly the zoo's standard.

Why each clause matters:

* exits declared == a real forward: cost counting and the report read the declaration;
* stage by stage == ``forward_all``: the exit record is made with ``forward_all`` while the
  executor, the measurements and ONNX run the stages one by one;
* no parameter shared between stages: a stage's cost and energy are measured on its own, and a
  cascade's members must not reuse each other's features (storage included);
* ONNX parity: ``onnxruntime`` results are only comparable if it computes the same logits;
* the cost table adds up: stages + heads == the whole recording pass (nothing uncounted);
* the executor == the vectorised evaluation: the operating points come from the vectorised
  rule, the measured latency from the true early-exit executor.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from eebench.models.base import MultiExitModel, as_tuple

BATCH = 2
ONNX_RTOL = 1e-4
ONNX_ATOL_SCALE = 1e-5  # near zero: absolute tolerance 1e-5 x max(1, max |reference|)
EXECUTOR_SAMPLES = 8
MIN_MARGIN = 1e-4  # executor threshold at least this far from every confidence


class ContractViolation(AssertionError):
    """A clause that does not hold: ``what`` is wrong, ``fix`` says how to repair it."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} -- fix: {fix}")


def _require(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise ContractViolation(what, fix)


def random_input(model: MultiExitModel, batch: int = BATCH, seed: int = 1) -> Tensor:
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- clauses
def forward_all_shapes(model: MultiExitModel) -> str:
    """Every exit returns finite (batch, num_classes) logits; one exit per stage."""
    with torch.no_grad():
        outs = model.forward_all(random_input(model))
    _require(
        model.num_exits == model.num_stages >= 1,
        f"{model.num_stages} stages but {model.num_exits} exits",
        "give every stage exactly one exit head (stages and exits of equal length)",
    )
    _require(
        isinstance(outs, list) and len(outs) == model.num_exits,
        f"forward_all returned {type(outs).__name__} of {len(outs) if isinstance(outs, list) else '?'} "
        f"items for {model.num_exits} exits",
        "return a list with one logits tensor per exit",
    )
    for i, out in enumerate(outs):
        _require(
            tuple(out.shape) == (BATCH, model.num_classes),
            f"exit {i} returns shape {tuple(out.shape)}, expected ({BATCH}, {model.num_classes})",
            "make each head end in num_classes logits per sample",
        )
        _require(
            bool(torch.isfinite(out).all()),
            f"exit {i} returns non-finite logits on a random input",
            "check the head for divisions by zero or log of zero",
        )
    return f"{model.num_exits} exits, each ({BATCH}, {model.num_classes}) finite logits"


class _ReadRecorder(TorchFunctionMode):
    """Ids of every tensor handed to a torch function: which state tensors a head reads."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        for a in [*args, *kwargs.values()]:
            for t in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(t, Tensor):
                    self.read.add(id(t))
        return func(*args, **kwargs)


def exits_declared_truthfully(model: MultiExitModel) -> str:
    """``exit_info`` (stage, feature shape, position) agrees with what a forward reads."""
    info = model.exit_info
    fix = "let MultiExitModel declare exits from a forward (do not override exit_info), or fix _exit_positions"
    _require(
        [e.index for e in info] == list(range(model.num_exits)), "exit indices are not 0..E-1", fix
    )
    stages = [e.stage for e in info]
    _require(
        all(0 <= s < model.num_stages for s in stages), f"exit stages {stages} out of range", fix
    )
    _require(
        all(a < b for a, b in zip(stages, stages[1:])), f"exit stages not increasing: {stages}", fix
    )
    positions = [e.position for e in info]
    _require(
        all(0.0 < p <= 1.0 + 1e-9 for p in positions), f"positions outside (0, 1]: {positions}", fix
    )
    _require(
        all(a <= b for a, b in zip(positions, positions[1:])),
        f"positions decrease: {positions}",
        fix,
    )
    _require(
        abs(positions[-1] - 1.0) <= 1e-6, f"the last exit's position is {positions[-1]}, not 1", fix
    )
    state = random_input(model)
    with torch.no_grad():
        for i, e in enumerate(info):
            state = model.forward_stage(i, state)
            recorder = _ReadRecorder()
            with recorder:
                model.forward_exit(i, state)
            read = [t for t in as_tuple(state) if id(t) in recorder.read]
            _require(
                bool(read),
                f"exit {i} reads no tensor of its state",
                "make head i read stage i's output",
            )
            shapes = {tuple(t.shape[1:]) for t in read}
            _require(
                e.feature_shape in shapes,
                f"exit {i} declares features {e.feature_shape} but reads {sorted(shapes)}",
                "put the tensor the head reads last in the stage's state (see _exit_read_tensor)",
            )
            _require(
                e.features == e.feature_shape[0], f"exit {i}: features != feature_shape[0]", fix
            )
    return f"{len(info)} exits declared, each matching the tensor its head reads"


def stages_equal_forward_all(model: MultiExitModel) -> str:
    """Stage by stage, the flat static paths and ``forward_until`` all give ``forward_all``."""
    x = random_input(model)
    fix = "make forward_all call forward_stage/forward_exit in order, with no other computation"
    with torch.no_grad():
        reference = model.forward_all(x)
        state, flat = x, as_tuple(x)
        for i in range(model.num_stages):
            state = model.forward_stage(i, state)
            _require(
                torch.equal(model.forward_exit(i, state), reference[i]),
                f"exit {i} run stage by stage differs from forward_all",
                fix,
            )
            flat = model.stage_module(i)(*flat)
            _require(
                isinstance(flat, tuple),
                f"stage_module({i}) does not return a tuple",
                "return as_tuple(state)",
            )
            _require(
                torch.equal(model.exit_module(i)(*flat), reference[i]),
                f"exit {i} on the flat static path (stage_module/exit_module) differs from forward_all",
                "make stage_module/exit_module compute what forward_stage/forward_exit compute",
            )
        for i in range(model.num_exits):
            _require(
                torch.equal(model.forward_until(x, i), reference[i]),
                f"forward_until(x, {i}) differs from forward_all",
                fix,
            )
        states = model.example_states(BATCH)
        _require(len(states) == model.num_stages + 1, "example_states has the wrong length", fix)
        for i in range(model.num_stages):
            out = model.stage_module(i)(*states[i])
            _require(
                [t.shape for t in out] == [t.shape for t in states[i + 1]],
                f"example state {i} does not feed stage {i}",
                fix,
            )
    return f"{model.num_stages} stages reproduce forward_all exactly (eager, flat paths, forward_until)"


def no_shared_parameters(model: MultiExitModel) -> str:
    """No parameter tensor belongs to two stages; a cascade's members share no storage either."""
    seen: dict[int, int] = {}
    for i, stage in enumerate(model.stages):
        for name, p in stage.named_parameters():
            _require(
                id(p) not in seen,
                f"stages {seen.get(id(p))} and {i} share parameter '{name}'",
                "give each stage its own modules (a module reused across an exit point is shared)",
            )
            seen[id(p)] = i
    if model.family != "cascade":
        return f"{len(seen)} parameter tensors, each in one stage"
    members = [
        list(model.stages[i].parameters()) + list(model.exits[i].parameters())
        for i in range(model.num_stages)
    ]
    storages = [{p.untyped_storage().data_ptr() for p in m} for m in members]
    for i in range(len(members)):
        _require(
            bool(members[i]),
            f"cascade member {i} has no parameters",
            "give each member its own network",
        )
        for j in range(i):
            _require(
                not storages[i] & storages[j],
                f"cascade members {j} and {i} share parameter storage",
                "build each member from fresh modules (no views of another member's weights)",
            )
    return f"{len(seen)} parameter tensors, each in one stage; cascade members share no storage"


def onnx_parity(model: MultiExitModel, cache_dir: str | Path | None = None) -> str:
    """Every exit through ONNX Runtime equals torch eager within rtol 1e-4."""
    from eebench.backends import get_backend

    backend = get_backend("onnxruntime")
    ok, reason = backend.available()
    _require(ok, f"onnxruntime is not available: {reason}", "pip install onnx onnxruntime")
    x = random_input(model)
    with torch.no_grad():
        want = [t.numpy() for t in model.forward_all(x)]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            prepared = backend.prepare(
                model, batch_size=BATCH, threads=1, cache_dir=cache_dir or tmp
            )
        except Exception as err:
            raise ContractViolation(
                f"ONNX export failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                "use operations torch.onnx (opset 17) exports; each stage and head is exported alone",
            ) from None
        with prepared.activated():
            states = prepared.stage_inputs(prepared.to_input(x))
            got = [
                prepared.to_numpy(prepared.run_exit(i, states[i + 1]))
                for i in range(model.num_stages)
            ]
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        atol = ONNX_ATOL_SCALE * max(1.0, float(np.abs(w).max()))
        diff = np.abs(g - w) if g.shape == w.shape else np.array([np.inf])
        _require(
            bool(np.all(diff <= atol + ONNX_RTOL * np.abs(w))),
            f"exit {i}: ONNX Runtime differs from torch by up to {float(diff.max()):.3g}",
            "avoid operations whose ONNX export differs (custom autograd functions, in-place tricks)",
        )
        worst = max(worst, float(diff.max()))
    return f"{len(got)} exits via onnxruntime within rtol {ONNX_RTOL:g} of torch (max |diff| {worst:.2g})"


def costs_add_up(model: MultiExitModel) -> str:
    """Analytic MACs of stages + heads == the MACs of the whole recording pass."""
    from eebench.costs import analyze_costs
    from eebench.costs.counting import count_ops

    class _RecordingPass(nn.Module):
        def __init__(self, m: MultiExitModel) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            return tuple(self.m.forward_all(x))

    costs = analyze_costs(model)
    whole = count_ops(_RecordingPass(model), (torch.zeros(1, *model.input_shape),))
    parts = int(costs.stage_macs.sum() + costs.head_macs.sum())
    fix = "compute everything inside the stages and heads (no work in forward_all itself)"
    _require(
        parts == whole.macs,
        f"stages + heads count {parts:,} MACs, the whole pass {whole.macs:,}",
        fix,
    )
    other = sum(p.other_ops for p in costs.parts)
    _require(
        other == whole.other_ops,
        f"stages + heads count {other:,} other ops, the pass {whole.other_ops:,}",
        fix,
    )
    _require(
        bool(np.all(np.diff(costs.cumulative_macs) > 0)),
        f"cumulative MACs per exit do not increase: {list(costs.cumulative_macs)}",
        "each later exit must cost more than the one before (every stage does some work)",
    )
    return f"stages + heads = {parts:,} MACs = the whole recording pass (analytic, fvcore)"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _MaxSoftmaxDecider:
    def __init__(self, theta: float) -> None:
        self.theta = theta

    def reset(self, batch_size: int) -> None:
        pass

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
        return _softmax(logits).max(axis=1) >= self.theta


def _threshold(logits: np.ndarray) -> float:
    """Near the first exit's median confidence, at least MIN_MARGIN from every confidence."""
    every = _softmax(logits[:, :-1]).max(axis=-1).ravel()
    first = np.sort(_softmax(logits[:, 0]).max(axis=-1))
    mids = (first[1:] + first[:-1]) / 2
    centre = len(mids) // 2
    for k in sorted(range(len(mids)), key=lambda k: abs(k - centre)):
        if np.abs(every - mids[k]).min() > MIN_MARGIN:
            return float(mids[k])
    return float(every.max() + 1.0) if every.size else 0.5


def executor_equals_vectorised(model: MultiExitModel) -> str:
    """The true early-exit executor's exits and predictions == the vectorised threshold rule."""
    from eebench.backends import EarlyExitExecutor, get_backend

    x = random_input(model, EXECUTOR_SAMPLES, seed=3)
    with torch.no_grad():
        logits = torch.stack(model.forward_all(x), dim=1).numpy()
    theta = _threshold(logits)
    fires = _softmax(logits).max(axis=-1) >= theta
    fires[:, -1] = True
    want_exits = fires.argmax(axis=1)
    want_preds = logits[np.arange(len(want_exits)), want_exits].argmax(axis=1)
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    executor = EarlyExitExecutor(prepared, _MaxSoftmaxDecider(theta))
    for mode, bs in (("per-sample", None), ("batched", 3)):
        got = executor.run(x, mode=mode, batch_size=bs)
        _require(
            got.exit_indices.tolist() == want_exits.tolist()
            and got.predictions.tolist() == want_preds.tolist(),
            f"{mode} executor exits {got.exit_indices.tolist()} / predictions {got.predictions.tolist()} "
            f"differ from the vectorised rule's {want_exits.tolist()} / {want_preds.tolist()}",
            "make a stage's output depend only on its own sample (no batch statistics in eval mode, "
            "no cross-sample operations)",
        )
    return f"executor == vectorised rule on {EXECUTOR_SAMPLES} samples (exits {sorted(set(want_exits.tolist()))})"


CLAUSES: dict[str, Callable[[MultiExitModel], str]] = {
    "forward_all gives every exit's logits": forward_all_shapes,
    "declared exits == a real forward": exits_declared_truthfully,
    "stage by stage == forward_all": stages_equal_forward_all,
    "no parameter shared between stages": no_shared_parameters,
    "ONNX export == torch within 1e-4": onnx_parity,
    "cost table adds up (stages + heads == whole pass)": costs_add_up,
    "executor decisions == vectorised evaluation": executor_equals_vectorised,
}


@dataclass(frozen=True)
class ClauseResult:
    clause: str
    passed: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"{mark}  {self.clause}: {self.detail}" + (
            f"\n      fix: {self.fix}" if self.fix else ""
        )


def check_model(model: MultiExitModel) -> list[ClauseResult]:
    """Run every clause on a model (in eval mode, one thread); a failing clause does not stop
    the others. An error inside a clause counts as a failure with its message."""
    from eebench.backends.threads import torch_threads

    model.eval()
    results = []
    with torch_threads(1):
        for name, clause in CLAUSES.items():
            try:
                results.append(ClauseResult(name, True, clause(model)))
            except ContractViolation as v:
                results.append(ClauseResult(name, False, v.what, v.fix))
            except Exception as err:  # the model's own code failed inside the clause
                results.append(
                    ClauseResult(
                        name,
                        False,
                        f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                        "run the clause under a debugger (EEBENCH_DEBUG=1 shows the traceback)",
                    )
                )
    return results

"""Deployment modes of one network, and the fixed overhead floor of each.

Each mode is one :class:`DeploymentMode` entry of :data:`REGISTRY`: the strategies and backends
it serves, how its deployment is built and how its floor is measured.

* ``per-stage`` — one call per stage and exit head (the prepared model as the backends give
  it); every strategy.
* ``static`` — one graph computing every exit (a naive export); the decision is made on the
  host afterwards, so a static graph cannot shrink or regroup a batch: ``per-sample`` and
  ``wait-for-slowest`` (a static batch). onnxruntime runs the composed ONNX graph
  (:func:`eebench.serving.graphs.static_graph`); torch runs ``forward_all`` traced into one
  TorchScript graph.
* ``fused`` — one ONNX graph with the exit decision inside (``If``): onnxruntime, threshold
  policies on max softmax, one sample at a time (``per-sample``).
* ``compiled`` — every stage and exit head compiled on its own by ``torch.compile`` (inductor,
  :mod:`eebench.serving.compiled`); the control flow stays on the host, so every strategy runs
  through the compiled parts as through eager ones. torch only; compiled once per prepared model
  and warmed up for every row count a strategy sends before LoadGen starts (``build_s``).

The plain network is the baseline of every mode; it runs per stage (``per-stage`` rows), and
through the compiled parts in ``compiled``.

The *overhead floor* of a mode is what one call costs when the graph does nothing: an
identity graph (ONNX ``Identity``, inside an ``If`` for ``fused``) or an identity module
(torch eager for ``per-stage``, traced for ``static``, ``x.clone()`` compiled like a part for
``compiled``), timed call by call (median).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Build = Callable[["BuildRequest"], "Deployment"]
Floor = Callable[[tuple[int, ...], int, Path, int], float]


@dataclass
class Deployment:
    """A mode's deployment of one network, built once per prepared model.

    One-graph modes (``static``, ``fused``) set ``run``: on a host batch it returns every exit's
    logits ``(B, E, C)`` (static) or ``(logits (B, C), exit)`` (fused). Part-wise modes
    (``compiled``) set ``prepared``: a prepared model the strategies run stage by stage instead
    of the eager one. ``build_s`` is what building it took (host clock, seconds: ONNX graph and
    session, trace, or compile with warm-up).
    """

    mode: str
    backend: str
    run: Callable[[np.ndarray], Any] | None
    describe: dict[str, Any]
    prepared: Any = None
    build_s: float = float("nan")


WholeGraph = Deployment
"""The name of :class:`Deployment` from when every non-per-stage mode was one graph."""


@dataclass(frozen=True)
class BuildRequest:
    """What building a deployment gets: the backend (without a cluster device), the prepared
    model, the model, thread count and the operating point's thresholds."""

    backend: str
    prepared: Any
    model: Any
    threads: int
    thresholds: np.ndarray | None


@dataclass(frozen=True)
class DeploymentMode:
    """One deployment mode: the strategies and backends it serves, why it refuses the others,
    how its deployment is built (None: the prepared model itself) and its floor per backend."""

    name: str
    strategies: tuple[str, ...]
    backends: tuple[str, ...]
    wrong_backend: str
    refusal: Callable[[str], str]
    floors: dict[str, Floor]
    build: Build | None = None


def unsupported(mode: str, strategy: str) -> str | None:
    """Why ``strategy`` cannot run in ``mode`` (None when it can)."""
    m = get_mode(mode)
    if strategy in m.strategies:
        return None
    if strategy == "plain":
        return (
            "the plain network is the baseline of every mode; it runs per stage (mode "
            "per-stage), and through the compiled parts in mode compiled"
        )
    return m.refusal(strategy)


def unsupported_backend(mode: str, backend: str) -> str | None:
    """Why ``mode`` cannot run on ``backend`` (None when it can; a cluster device is ignored)."""
    from eebench.backends.placement import base_backend

    m = get_mode(mode)
    if base_backend(backend) in m.backends:
        return None
    on = " or ".join(
        [", ".join(m.backends[:-1]), m.backends[-1]] if len(m.backends) > 1 else m.backends
    )
    return f"mode '{mode}' runs on {on}, not '{backend}': {m.wrong_backend}"


def whole_graph(
    mode: str,
    backend: str,
    prepared: Any,
    model: Any,
    threads: int,
    thresholds: np.ndarray | None = None,
) -> Deployment:
    """The deployment of ``model`` in ``mode`` (any mode but ``per-stage``) on ``backend``.

    Raises ValueError with the reason when the combination is not available (checked before
    anything is built).
    """
    from eebench.backends.placement import base_backend

    m = get_mode(mode)
    why = unsupported_backend(mode, backend)
    if why is not None:
        raise ValueError(why)
    if m.build is None:
        raise ValueError(f"mode '{mode}' runs the prepared model itself; it builds nothing")
    t0 = time.perf_counter()
    built = m.build(BuildRequest(base_backend(backend), prepared, model, threads, thresholds))
    if np.isnan(built.build_s):
        built.build_s = time.perf_counter() - t0
    return built


def overhead_floor_us(
    mode: str,
    backend: str,
    input_shape: tuple[int, ...],
    threads: int,
    folder: Path,
    calls: int = 2000,
) -> float:
    """Median time of one call of an identity graph or module in ``mode`` on ``backend``, in
    microseconds (host clock, ``calls`` calls after 10% warm-up)."""
    from eebench.backends.placement import base_backend

    floor = get_mode(mode).floors.get(base_backend(backend))
    if floor is None:
        raise ValueError(f"no overhead floor for mode '{mode}' on backend '{backend}'")
    return floor(tuple(input_shape), threads, folder, calls)


# ---------------------------------------------------------------------- static and fused
def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _build_static(req: BuildRequest) -> Deployment:
    from eebench.serving.graphs import save_graph, static_graph

    shape = tuple(req.model.input_shape)
    if req.backend == "onnxruntime":
        exported = _cpu_exported(req.prepared)
        path = save_graph(static_graph(exported, (1, *shape)), exported.folder, "static")
        sess = _ort_session(path, req.threads)
        names = [o.name for o in sess.get_outputs()]

        def run_static(x: np.ndarray) -> np.ndarray:
            return np.stack(sess.run(names, {"x": x}), axis=1)

        return Deployment("static", req.backend, run_static, {"graph": str(path)})
    import torch

    traced = _traced_all_exits(req.prepared.model, shape)

    def run_traced(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return traced(torch.from_numpy(x)).numpy()

    return Deployment("static", req.backend, run_traced, {"graph": "torch.jit.trace(forward_all)"})


def _build_fused(req: BuildRequest) -> Deployment:
    from eebench.serving.graphs import fused_graph, save_graph

    if req.thresholds is None:
        raise ValueError("the fused graph needs the operating point's thresholds")
    exported = _cpu_exported(req.prepared)
    shape = tuple(req.model.input_shape)
    th = np.broadcast_to(np.asarray(req.thresholds, dtype=np.float32), (req.model.num_exits,))
    path = save_graph(fused_graph(exported, (1, *shape), th), exported.folder, "fused")
    sess = _ort_session(path, req.threads)

    def run_fused(x: np.ndarray) -> tuple[np.ndarray, int]:
        logits, exit_ = sess.run(["logits", "exit"], {"x": x})
        return logits, int(exit_)

    return Deployment("fused", req.backend, run_fused, {"graph": str(path)})


def _cpu_exported(prepared: Any) -> Any:
    if getattr(prepared, "io_binding", False):
        raise ValueError("one-graph modes run on onnxruntime's CPU provider here")
    return prepared.exported


def _traced_all_exits(model: Any, shape: tuple[int, ...]) -> Any:
    import torch

    class AllExits(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack(list(self.m.forward_all(x)), dim=1)

    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what is measured
        return torch.jit.trace(AllExits(model).eval(), torch.zeros((2, *shape)), check_trace=False)


# ---------------------------------------------------------------------- compiled
def _build_compiled(req: BuildRequest) -> Deployment:
    """Every stage and exit head compiled on its own, warmed up for every row count a strategy
    can send: ``batch_size`` per batch, up to ``2 x batch_size - 1`` when regrouping stacks
    queued fragments (:func:`eebench.serving.compiled.compile_prepared`)."""
    from eebench.serving.compiled import compile_prepared

    batch = int(getattr(req.prepared, "batch_size", 1))
    compiled, report = compile_prepared(req.prepared, max_rows=2 * batch - 1)
    return Deployment(
        "compiled", req.backend, None, report.describe(), compiled, build_s=report.compile_s
    )


# ---------------------------------------------------------------------- overhead floors
def _ort_floor(fused: bool) -> Floor:
    def floor(shape: tuple[int, ...], threads: int, folder: Path, calls: int) -> float:
        from eebench.serving.graphs import identity_graph, save_graph

        x = np.zeros((1, *shape), dtype=np.float32)
        name = "identity-fused" if fused else "identity"
        path = save_graph(identity_graph((1, *shape), fused, 17), folder, name)
        sess = _ort_session(path, threads)
        return _median_us(lambda: sess.run(["y"], {"x": x}), calls)

    return floor


def _torch_floor(kind: str, device: str = "cpu") -> Floor:
    """The floor of a torch identity: ``eager`` (``nn.Identity``), ``traced`` (TorchScript) or
    ``compiled`` (:func:`eebench.serving.compiled.compiled_identity`); on CUDA each call waits
    for the device."""

    def floor(shape: tuple[int, ...], threads: int, folder: Path, calls: int) -> float:
        import torch

        from eebench.backends.threads import torch_threads

        t = torch.zeros((1, *shape), device=device)
        with torch_threads(threads), torch.inference_mode():
            if kind == "traced":
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    module: Any = torch.jit.trace(torch.nn.Sequential(torch.nn.Identity()), t)
            elif kind == "compiled":
                from eebench.serving.compiled import compiled_identity, inductor_problem

                why = inductor_problem(torch.device(device).type)
                if why is not None:
                    raise ValueError(why)
                module = compiled_identity(device)
                module(t)  # compiles outside the timed calls
            else:
                module = torch.nn.Identity()
            if device == "cpu":
                return _median_us(lambda: module(t), calls)

            def call() -> None:
                module(t)
                torch.cuda.synchronize(device)

            return _median_us(call, calls)

    return floor


# ---------------------------------------------------------------------- the registry
_EVERY = ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup", "plain")


def _static_refusal(strategy: str) -> str:
    what = "drop rows that left" if strategy == "batch-shrinking" else "regroup survivors"
    return f"a static all-exits graph computes every exit for every row: it cannot {what}"


def _fused_refusal(strategy: str) -> str:
    return (
        "the fused graph leaves at the first exit where every row of the batch fires, which "
        "is not each row's own exit: it serves one sample at a time (per-sample)"
    )


def _no_refusal(strategy: str) -> str:
    return f"strategy '{strategy}' is not known to this mode"


REGISTRY: dict[str, DeploymentMode] = {
    m.name: m
    for m in (
        DeploymentMode(
            "per-stage",
            _EVERY,
            ("torch-cpu", "torch-cuda", "onnxruntime"),
            "no backend runs it",
            _no_refusal,
            {
                "onnxruntime": _ort_floor(fused=False),
                "torch-cpu": _torch_floor("eager"),
                "torch-cuda": _torch_floor("eager", "cuda"),
            },
        ),
        DeploymentMode(
            "static",
            ("per-sample", "wait-for-slowest"),
            ("torch-cpu", "onnxruntime"),
            "the static graph is an ONNX graph (onnxruntime's CPU provider) or a TorchScript "
            "trace on the CPU",
            _static_refusal,
            {"onnxruntime": _ort_floor(fused=False), "torch-cpu": _torch_floor("traced")},
            _build_static,
        ),
        DeploymentMode(
            "fused",
            ("per-sample",),
            ("onnxruntime",),
            "the fused graph is built as ONNX (If); serve it on onnxruntime (torch: static or "
            "per-stage)",
            _fused_refusal,
            {"onnxruntime": _ort_floor(fused=True)},
            _build_fused,
        ),
        DeploymentMode(
            "compiled",
            _EVERY,
            ("torch-cpu", "torch-cuda"),
            "torch.compile compiles torch modules, and onnxruntime runs ONNX graphs with its own "
            "graph optimizer; serve onnxruntime per-stage, static or fused",
            _no_refusal,
            {"torch-cpu": _torch_floor("compiled"), "torch-cuda": _torch_floor("compiled", "cuda")},
            _build_compiled,
        ),
    )
}
"""Every deployment mode by name, in the order reports list them."""

MODES = tuple(REGISTRY)


def get_mode(name: str) -> DeploymentMode:
    """The registry entry of ``name``; an unknown name gets the nearest one."""
    if name in REGISTRY:
        return REGISTRY[name]
    import difflib

    close = difflib.get_close_matches(name, MODES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown deployment mode '{name}'; {hint}expected one of {MODES}")


def _median_us(call: Callable[[], Any], calls: int) -> float:
    for _ in range(max(1, calls // 10)):
        call()
    clock = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for k in range(calls):
        t0 = clock()
        call()
        out[k] = clock() - t0
    return float(np.median(out)) / 1e3

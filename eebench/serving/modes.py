"""Deployment modes of one network, and the fixed overhead floor of each.

* ``per-stage`` — one call per stage and exit head (the prepared model as the backends give
  it); every strategy.
* ``static`` — one graph computing every exit (a naive export); the decision is made on the
  host afterwards, so a static graph cannot shrink or regroup a batch: ``per-sample`` and
  ``wait-for-slowest`` (a static batch). onnxruntime runs the composed ONNX graph
  (:func:`eebench.serving.graphs.static_graph`); torch runs ``forward_all`` traced into one
  TorchScript graph.
* ``fused`` — one ONNX graph with the exit decision inside (``If``): onnxruntime, threshold
  policies on max softmax, one sample at a time (``per-sample``).

The plain network is the baseline of every mode and runs per stage (``per-stage`` rows).

The *overhead floor* of a mode is what one call costs when the graph does nothing: an
identity graph (ONNX ``Identity``, inside an ``If`` for ``fused``) or an identity module
(torch eager for ``per-stage``, traced for ``static``), timed call by call (median).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("per-stage", "static", "fused")

_STRATEGIES = {
    "per-stage": ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup", "plain"),
    "static": ("per-sample", "wait-for-slowest"),
    "fused": ("per-sample",),
}


def unsupported(mode: str, strategy: str) -> str | None:
    """Why ``strategy`` cannot run in ``mode`` (None when it can)."""
    if strategy in _STRATEGIES[mode]:
        return None
    if strategy == "plain":
        return "the plain network is the baseline of every mode; it runs per stage (mode per-stage)"
    if mode == "static":
        return (
            f"a static all-exits graph computes every exit for every row: it cannot "
            f"{'drop rows that left' if strategy == 'batch-shrinking' else 'regroup survivors'}"
        )
    return (
        "the fused graph leaves at the first exit where every row of the batch fires, which "
        "is not each row's own exit: it serves one sample at a time (per-sample)"
    )


@dataclass
class WholeGraph:
    """A one-graph deployment: ``run(x)`` on a host batch returns every exit's logits
    ``(B, E, C)`` (static) or ``(logits (B, C), exit)`` (fused)."""

    mode: str
    backend: str
    run: Callable[[np.ndarray], Any]
    describe: dict[str, Any]


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


def whole_graph(
    mode: str,
    backend: str,
    prepared: Any,
    model: Any,
    threads: int,
    thresholds: np.ndarray | None = None,
) -> WholeGraph:
    """The ``static`` or ``fused`` deployment of ``model`` on ``backend`` (CPU).

    Raises ValueError with the reason when the combination is not available.
    """
    from eebench.serving.graphs import fused_graph, save_graph, static_graph

    shape = tuple(model.input_shape)
    if backend == "onnxruntime":
        exported = prepared.exported
        if getattr(prepared, "io_binding", False):
            raise ValueError("one-graph modes run on onnxruntime's CPU provider here")
        if mode == "static":
            path = save_graph(static_graph(exported, (1, *shape)), exported.folder, "static")
            sess = _ort_session(path, threads)
            names = [o.name for o in sess.get_outputs()]

            def run_static(x: np.ndarray) -> np.ndarray:
                return np.stack(sess.run(names, {"x": x}), axis=1)

            return WholeGraph(mode, backend, run_static, {"graph": str(path)})
        if thresholds is None:
            raise ValueError("the fused graph needs the operating point's thresholds")
        th = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (model.num_exits,))
        path = save_graph(fused_graph(exported, (1, *shape), th), exported.folder, "fused")
        sess = _ort_session(path, threads)

        def run_fused(x: np.ndarray) -> tuple[np.ndarray, int]:
            logits, exit_ = sess.run(["logits", "exit"], {"x": x})
            return logits, int(exit_)

        return WholeGraph(mode, backend, run_fused, {"graph": str(path)})
    if backend == "torch-cpu":
        if mode == "fused":
            raise ValueError(
                "the fused graph is built as ONNX (If); serve it on onnxruntime (torch: static "
                "or per-stage)"
            )
        import torch

        traced = _traced_all_exits(prepared.model, shape)

        def run_traced(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return traced(torch.from_numpy(x)).numpy()

        return WholeGraph(mode, backend, run_traced, {"graph": "torch.jit.trace(forward_all)"})
    raise ValueError(f"mode '{mode}' is not available on backend '{backend}'")


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
    x = np.zeros((1, *input_shape), dtype=np.float32)
    if backend == "onnxruntime":
        from eebench.serving.graphs import identity_graph, save_graph

        path = save_graph(
            identity_graph((1, *input_shape), mode == "fused", 17), folder, f"identity-{mode}"
        )
        sess = _ort_session(path, threads)

        def call() -> Any:
            return sess.run(["y"], {"x": x})
    elif backend == "torch-cpu":
        import torch

        from eebench.backends.threads import torch_threads

        module: Any = torch.nn.Identity()
        if mode == "static":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.trace(
                    torch.nn.Sequential(torch.nn.Identity()), torch.from_numpy(x)
                )
        t = torch.from_numpy(x)

        def call() -> Any:
            return module(t)

        with torch_threads(threads), torch.inference_mode():
            return _median_us(call, calls)
    else:
        raise ValueError(f"no overhead floor for backend '{backend}'")
    return _median_us(call, calls)


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

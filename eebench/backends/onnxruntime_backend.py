"""The ``onnxruntime`` backend: one InferenceSession per stage and per exit head.

Graphs come from :mod:`eebench.backends.onnx_export` (cached by model hash).
Every session is created with explicit thread counts
(``intra_op_num_threads = threads``, ``inter_op_num_threads``, sequential
execution), a graph optimisation level (``all`` by default) and thread
spinning off by default: a true early-exit run hops between sessions, and
threads left spinning in the session that just ran would steal cores from
the next one, so parts timed one at a time would not add up to the whole.
All three are recorded by ``describe()``.

Providers: ``cpu`` (CPUExecutionProvider), ``cuda`` (CUDAExecutionProvider)
and ``tensorrt`` (TensorrtExecutionProvider, falling back to CUDA then CPU for
unsupported nodes), each when the installed onnxruntime build has it. On CUDA
and TensorRT the state stays on the device between stages: inputs and outputs
are bound with IO binding as ``OrtValue`` buffers, and only the exit logits
are copied to the host for the exit decision.

The machine-speed probe (:mod:`eebench.measure.probe`) runs through ONNX Runtime too: a
one-node MatMul graph built in memory, in a session with the stages' options and
providers, fed and bound like a stage, so it slows down when ONNX Runtime does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eebench.backends.base import (
    Backend,
    NativeState,
    PreparedModel,
    register_backend,
    resolve_threads,
    rows_index,
)
from eebench.backends.onnx_export import ExportedModel, GraphFile, export_model
from eebench.errors import BackendUnavailable, ConfigError
from eebench.measure.probe import PROBE_SIZE, SpeedProbe, probe_operands
from eebench.models.base import MultiExitModel

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


class _Graph:
    """One session with the positions of its declared inputs in the state tuple."""

    def __init__(
        self, session: Any, feeds: tuple[tuple[str, int], ...], outputs: tuple[str, ...]
    ) -> None:
        self.session = session
        self.feeds = feeds
        self.outputs = list(outputs)

    @classmethod
    def of(cls, session: Any, graph: GraphFile) -> _Graph:
        return cls(session, graph.inputs, graph.outputs)


PROBE_OPSET = 13
"""Opset of the probe graph: MatMul is unchanged since 13, which every supported build runs."""


def probe_graph(b: np.ndarray) -> bytes:
    """A serialized ONNX model ``y = MatMul(a, b)``: ``a`` a float32 input of ``b``'s shape,
    ``b`` a constant initializer (as a model's weights are)."""
    from onnx import TensorProto, helper, numpy_helper

    shape = list(b.shape)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "eebench-speed-probe",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(b, np.float32), "b")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", PROBE_OPSET)],
        producer_name="eebench",
    )
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime builds too
    return model.SerializeToString()


class OrtPrepared(PreparedModel):
    """Stages and exit heads as ONNX Runtime sessions; states are numpy arrays on the CPU
    provider and device-resident OrtValues under IO binding."""

    def __init__(
        self,
        model: MultiExitModel,
        exported: ExportedModel,
        batch_size: int,
        threads: int,
        interop_threads: int,
        provider: str,
        optimization: str,
        allow_spinning: bool,
        device_id: int,
    ) -> None:
        ort = _ort()
        self.backend = "onnxruntime"
        self.model_name = model.metadata.name
        self.num_stages = model.num_stages
        self.input_shape = tuple(model.input_shape)
        self.batch_size = batch_size
        self.threads = threads
        self.interop_threads = interop_threads
        self.provider = provider
        self.optimization = optimization
        self.allow_spinning = allow_spinning
        self.exported = exported
        self.device_id = device_id
        self.io_binding = provider in ("cuda", "tensorrt")
        self.device = f"cuda:{device_id}" if self.io_binding else "cpu"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = interop_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        opts.log_severity_level = 3
        spin = "1" if allow_spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = _provider_chain(provider, device_id)
        self._options, self._providers = opts, providers
        self._stages = [_Graph.of(self._session(g, opts, providers), g) for g in exported.stages]
        self._exits = [_Graph.of(self._session(g, opts, providers), g) for g in exported.exits]
        self.session_providers = self._stages[0].session.get_providers()

    @staticmethod
    def _session(graph: GraphFile, opts: Any, providers: list[Any]) -> Any:
        return _ort().InferenceSession(str(graph.path), sess_options=opts, providers=providers)

    @property
    def speed_probe_kind(self) -> str:
        return f"onnxruntime MatMul {PROBE_SIZE}x{PROBE_SIZE} float32 on {PROVIDERS[self.provider]}"

    def speed_probe(self, seed: int = 0) -> SpeedProbe:
        """A one-node MatMul graph in its own session, created with the stages' session
        options (threads, spinning, optimisation level) and providers, fed and bound as the
        stages are (numpy on the CPU provider, device OrtValues under IO binding).
        ``runner`` is the session."""
        a, b = probe_operands(seed)
        session = _ort().InferenceSession(
            probe_graph(b), sess_options=self._options, providers=self._providers
        )
        g = _Graph(session, (("a", 0),), ("y",))
        state = (self.to_input(a),)

        def run() -> Any:
            return self._run(g, state)

        return SpeedProbe(self.speed_probe_kind, run, session)

    # ------------------------------------------------------------------ running
    def _run(self, g: _Graph, state: NativeState) -> list[Any]:
        if not self.io_binding:
            return g.session.run(g.outputs, {name: state[pos] for name, pos in g.feeds})
        binding = g.session.io_binding()
        for name, pos in g.feeds:
            binding.bind_ortvalue_input(name, state[pos])
        for name in g.outputs:
            binding.bind_output(name, "cuda", self.device_id)
        g.session.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def run_stage(self, i: int, state: NativeState) -> NativeState:
        return tuple(self._run(self._stages[i], state))

    def run_exit(self, i: int, state: NativeState) -> Any:
        return self._run(self._exits[i], state)[0]

    def to_input(self, x: Any) -> Any:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if self.io_binding:
            return _ort().OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id)
        return arr

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.numpy() if self.io_binding else np.asarray(value)

    def select(self, state: NativeState, rows: np.ndarray) -> NativeState:
        idx = rows_index(rows)
        if not self.io_binding:
            return tuple(np.ascontiguousarray(a[idx]) for a in state)
        # no gather on OrtValues from Python: round trip through the host (rare: once per exit)
        ort = _ort()
        return tuple(
            ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(v.numpy()[idx]), "cuda", self.device_id
            )
            for v in state
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "provider": PROVIDERS[self.provider],
            "session_providers": list(self.session_providers),
            "device": self.device,
            "threads": self.threads,
            "interop_threads": self.interop_threads,
            "graph_optimization_level": self.optimization,
            "allow_spinning": self.allow_spinning,
            "io_binding": self.io_binding,
            "dtype": "float32",
            "batch_size": self.batch_size,
            "model": self.model_name,
            "onnxruntime": _ort().__version__,
            "opset": self.exported.opset,
            "export_dir": str(self.exported.folder),
            "export_cached": self.exported.cached,
            "speed_probe": self.speed_probe_kind,
        }


def _provider_chain(provider: str, device_id: int) -> list[Any]:
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    return [("TensorrtExecutionProvider", {"device_id": device_id}), cuda, "CPUExecutionProvider"]


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with one session per stage and exit head (CPU, CUDA or TensorRT provider)."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        try:
            _ort()
        except ImportError as err:
            return False, f"onnxruntime is not importable ({err}); pip install onnxruntime"
        try:
            import onnx  # noqa: F401
        except ImportError as err:
            return False, f"onnx is not importable ({err}); pip install onnx"
        return True, ""

    def providers(self) -> list[str]:
        try:
            installed = set(_ort().get_available_providers())
        except ImportError:
            return []
        return [short for short, full in PROVIDERS.items() if full in installed]

    def prepare(
        self,
        model: MultiExitModel,
        batch_size: int = 1,
        threads: int | None = None,
        interop_threads: int = 1,
        provider: str = "cpu",
        graph_optimization_level: str = "all",
        allow_spinning: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        opset: int | None = None,
        device_id: int = 0,
        **options: Any,
    ) -> OrtPrepared:
        if options:
            raise ConfigError(
                f"unknown option(s) {sorted(options)} for backend 'onnxruntime'; accepted: batch_size, "
                "threads, interop_threads, provider, graph_optimization_level, allow_spinning, "
                "cache_dir, opset, device_id",
                field="backend.options",
            )
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(self.name, reason)
        if provider not in PROVIDERS:
            raise ConfigError(
                f"expected one of {sorted(PROVIDERS)}, got '{provider}'",
                field="onnxruntime.provider",
            )
        if provider not in self.providers():
            installed = ", ".join(_ort().get_available_providers())
            raise BackendUnavailable(
                self.name,
                f"execution provider {PROVIDERS[provider]} is not in this onnxruntime build "
                f"(installed: {installed}); install onnxruntime-gpu for CUDA/TensorRT",
            )
        if graph_optimization_level not in OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"expected one of {list(OPTIMIZATION_LEVELS)}, got '{graph_optimization_level}'",
                field="onnxruntime.graph_optimization_level",
            )
        from eebench.backends.onnx_export import DEFAULT_OPSET

        exported = export_model(model, cache_dir=cache_dir, opset=opset or DEFAULT_OPSET)
        return OrtPrepared(
            model,
            exported,
            batch_size,
            resolve_threads(threads),
            int(interop_threads),
            provider,
            graph_optimization_level,
            bool(allow_spinning),
            int(device_id),
        )

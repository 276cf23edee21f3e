"""Backends: where stages run (torch CPU/CUDA, ONNX Runtime), and the true early-exit executor.

Importing this package registers ``torch-cpu``, ``torch-cuda`` and
``onnxruntime``; ``simulated:<profile>`` is a backend family registered by
:mod:`eebench.profiles` and found by :func:`get_backend` on first use.
"""

from eebench.backends import onnxruntime_backend as _ort  # noqa: F401  (registers onnxruntime)
from eebench.backends import torch_backend as _torch  # noqa: F401  (registers torch-cpu/cuda)
from eebench.backends.base import (
    BACKEND_FAMILIES,
    BACKENDS,
    Backend,
    BackendFamily,
    NativeState,
    PreparedModel,
    get_backend,
    list_backends,
    register_backend,
    register_backend_family,
    resolve_threads,
)
from eebench.backends.executor import (
    DeciderError,
    EarlyExitExecutor,
    ExecutionResult,
    ExitDecider,
)
from eebench.backends.onnx_export import ExportedModel, export_model, model_hash
from eebench.backends.onnxruntime_backend import OnnxRuntimeBackend, OrtPrepared
from eebench.backends.threads import ThreadSettings, torch_threads
from eebench.backends.torch_backend import (
    CudaEventTimer,
    TorchCPUBackend,
    TorchCUDABackend,
    TorchPrepared,
)

__all__ = [
    "BACKENDS",
    "BACKEND_FAMILIES",
    "Backend",
    "BackendFamily",
    "CudaEventTimer",
    "DeciderError",
    "EarlyExitExecutor",
    "ExecutionResult",
    "ExitDecider",
    "ExportedModel",
    "NativeState",
    "OnnxRuntimeBackend",
    "OrtPrepared",
    "PreparedModel",
    "ThreadSettings",
    "TorchCPUBackend",
    "TorchCUDABackend",
    "TorchPrepared",
    "export_model",
    "get_backend",
    "list_backends",
    "model_hash",
    "register_backend",
    "register_backend_family",
    "resolve_threads",
    "torch_threads",
]

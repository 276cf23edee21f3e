"""eebench: hardware-aware benchmarking and profiling of early-exit neural networks.

The names a user's own code needs are importable from here (loaded on first use, so that
``import eebench`` stays light): ``MultiExitModel``, ``register_model``, ``attach_exits``,
``create_model``, ``resolve_model_spec`` and ``check_model``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MultiExitModel": "eebench.models.base",
    "register_model": "eebench.models.registry",
    "create_model": "eebench.models.registry",
    "resolve_model_spec": "eebench.models.registry",
    "attach_exits": "eebench.models.attach",
    "check_model": "eebench.models.contract",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        importlib.import_module("eebench.models")  # the built-in zoo registers first
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eebench' has no attribute {name!r}")

"""The model registry: entry points are data, building goes through one function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eebench.models.base import ModelConfigError, MultiExitModel
from eebench.registry import Registry, UnknownNameError

ModelFactory = Callable[..., MultiExitModel]

MODELS: Registry[ModelFactory] = Registry("model")

DEFAULT_INPUT_SHAPE = (3, 32, 32)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register an entry point ``fn(num_classes, input_shape, **config) -> MultiExitModel``."""
    return MODELS.register(name)


def create_model(
    name: str,
    num_classes: int = 10,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
    **config: Any,
) -> MultiExitModel:
    """Build a registered model; its metadata records the name and the config given."""
    factory = MODELS.get(name)
    _check_config_keys(name, factory, config)
    model = factory(num_classes=num_classes, input_shape=tuple(input_shape), **config)
    model.set_metadata(name, config)
    return model


def _check_config_keys(name: str, factory: ModelFactory, config: dict[str, Any]) -> None:
    """Refuse config keys the entry point does not accept, naming the nearest valid one."""
    import difflib
    import inspect

    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("num_classes", "input_shape")]
    for key in config:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ModelConfigError(name, key, f"one of {accepted}{hint}", config[key])


def list_models(filter: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob pattern (``sdn-*``)."""
    return MODELS.names(filter)


__all__ = [
    "MODELS",
    "UnknownNameError",
    "create_model",
    "list_models",
    "register_model",
]

"""The model registry: entry points are data, building goes through one function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eebench.models.base import ModelConfigError, MultiExitModel
from eebench.models.user import build_from_factory, canonical_model_name, is_factory_spec
from eebench.registry import Registry, UnknownNameError

ModelFactory = Callable[..., MultiExitModel]

MODELS: Registry[ModelFactory] = Registry("model")

DEFAULT_INPUT_SHAPE = (3, 32, 32)


def register_model(
    name: str | ModelFactory | None = None,
) -> Callable[[ModelFactory], ModelFactory] | ModelFactory:
    """Register a factory ``fn(num_classes, input_shape, **config) -> MultiExitModel``.

    Usable from a user's own package as ``@eebench.register_model("my-net")`` or bare
    ``@eebench.register_model`` (the function's name, underscores as dashes). Names may not
    contain ':', which marks a factory spec (``module:function``).
    """
    if callable(name):
        return register_model(None)(name)  # type: ignore[return-value]

    def deco(factory: ModelFactory) -> ModelFactory:
        key = name or factory.__name__.replace("_", "-")
        if ":" in key:
            raise ValueError(
                f"model name '{key}' contains ':', which marks a factory spec; choose another name"
            )
        MODELS.add(key, factory)
        return factory

    return deco


def create_model(
    name: str,
    num_classes: int = 10,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
    **config: Any,
) -> MultiExitModel:
    """Build a model by registry name or factory spec; its metadata records the name and config.

    A factory spec (``package.module:function`` or ``file.py:function``, a relative file taken
    from the current folder) is built by :func:`eebench.models.user.build_from_factory`.
    """
    if is_factory_spec(name):
        return build_from_factory(name, num_classes, input_shape, config)
    factory = _factory(name)
    _check_config_keys(name, factory, config)
    model = factory(num_classes=num_classes, input_shape=tuple(input_shape), **config)
    model.set_metadata(name, config)
    return model


def _factory(name: str) -> ModelFactory:
    """The registered factory, looking at installed packages' entry points when not built in."""
    if name not in MODELS:
        from eebench.models.entry_points import FAILED

        load_entry_points()
        if name in FAILED:
            raise FAILED[name]
    return MODELS.get(name)


def resolve_model_spec(
    name: str,
    config: dict[str, Any] | None,
    num_classes: int,
    input_shape: Sequence[int],
    base_dir: str | Path | None = None,
) -> MultiExitModel:
    """Build the model a suite entry names: a registry name or a factory spec whose relative
    file path is taken from ``base_dir`` (the suite file's folder). The one place a suite's
    model is resolved, for the checks before a run and for training alike."""
    return create_model(
        canonical_model_name(name, base_dir),
        num_classes=num_classes,
        input_shape=input_shape,
        **dict(config or {}),
    )


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
    """Registered model names (built in and from installed packages' ``eebench.models`` entry
    points), optionally filtered by a glob pattern (``sdn-*``)."""
    load_entry_points()
    return MODELS.names(filter)


__all__ = [
    "MODELS",
    "UnknownNameError",
    "create_model",
    "list_models",
    "register_model",
    "resolve_model_spec",
]


def load_entry_points() -> list[str]:
    """Load installed packages' models (see :mod:`eebench.models.entry_points`)."""
    from eebench.models.entry_points import load_entry_points as load

    return load()

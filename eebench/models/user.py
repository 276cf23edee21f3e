"""User models named by a factory: ``package.module:function`` or ``path/to/file.py:function``.

A suite (or ``eebench check-model``) may name a model the registry does not
hold by pointing at a function that builds it. The function is called as
``fn(num_classes=..., input_shape=..., **config)`` and must return a
:class:`~eebench.models.base.MultiExitModel`.

Everything that can go wrong in someone else's code is turned into one
:class:`ModelSpecError` that says what failed, where and how to fix it; when
the user's own code raised, its traceback is included and marked as theirs,
so a bug in their model is never mistaken for a bug in eebench.

A file path is resolved against ``base_dir`` (the suite file's folder) and
made absolute in the model's metadata name, so checkpoints and the training
cache refer to one file however the suite was invoked.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from eebench.errors import ConfigError
from eebench.models.base import MultiExitModel

_EEBENCH_DIR = Path(__file__).resolve().parent.parent


class ModelSpecError(ConfigError):
    """A model spec that cannot be resolved or built; ``user_traceback`` is the user's own frames."""

    def __init__(
        self,
        message: str,
        source: str | None = None,
        field: str | None = None,
        user_traceback: str = "",
    ) -> None:
        self.message = message
        self.user_traceback = user_traceback
        full = message
        if user_traceback:
            full += (
                "\n----- traceback from your code (not eebench's) -----\n"
                + user_traceback.rstrip()
                + "\n----- end of your traceback -----"
            )
        super().__init__(full, source=source, field=field)

    def located(self, source: str | None, field: str | None) -> ModelSpecError:
        """The same error placed at a suite file and field path."""
        return ModelSpecError(self.message, source, field, self.user_traceback)


def is_factory_spec(name: str) -> bool:
    """Registry names never contain ':'; a factory spec always does."""
    return ":" in name


def _split(spec: str) -> tuple[str, str]:
    target, _, function = spec.rpartition(":")
    if not target or not function or not function.isidentifier():
        raise ModelSpecError(
            f"model spec '{spec}' is not 'package.module:function' or 'path/to/file.py:function' "
            "(the part after the last ':' must be a Python function name)"
        )
    return target, function


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def canonical_model_name(name: str, base_dir: str | Path | None = None) -> str:
    """The name a model is recorded under: a registry name or module spec as given, a file spec
    with its path made absolute (relative paths are taken from ``base_dir``, else the cwd)."""
    if not is_factory_spec(name):
        return name
    target, function = _split(name)
    if not _is_file_target(target):
        return name
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    return f"{path.resolve()}:{function}"


def user_frames(err: BaseException) -> str:
    """The traceback of ``err`` without eebench's and importlib's own frames (the user's part)."""
    frames = traceback.extract_tb(err.__traceback__)
    keep = [
        f
        for f in frames
        if not Path(f.filename).resolve().is_relative_to(_EEBENCH_DIR)
        and "importlib" not in f.filename
        and not f.filename.startswith("<frozen")
    ]
    lines = traceback.format_list(keep) if keep else []
    lines += traceback.format_exception_only(type(err), err)
    return "".join(lines)


def _import_file(path: Path, spec: str) -> ModuleType:
    """Import a Python file as a module of its own (one per file content, so an edit is seen)."""
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise ModelSpecError(
            f"model file '{path}' {where}: check the path in '{spec}' (a relative path is taken "
            "from the suite file's folder)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    module_name = f"eebench_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelSpecError(f"model file '{path}' cannot be imported as Python; name a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:  # the user's module failed at import time
        del sys.modules[module_name]
        raise ModelSpecError(
            f"importing model file '{path}' raised {type(err).__name__}: {err}; fix the error in "
            "your file (traceback below)",
            user_traceback=user_frames(err),
        ) from None
    return module


def _import_module(target: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        missing = err.name or target
        if target == missing or target.startswith(missing + "."):
            raise ModelSpecError(
                f"module '{target}' of model spec '{spec}' is not found ('{missing}' is not "
                "importable): install the package that provides it, add its folder to PYTHONPATH, "
                "or name a file instead ('path/to/file.py:function')"
            ) from None
        raise ModelSpecError(
            f"importing module '{target}' raised ModuleNotFoundError: {err}; install '{missing}' "
            "or remove the import",
            user_traceback=user_frames(err),
        ) from None
    except Exception as err:
        raise ModelSpecError(
            f"importing module '{target}' raised {type(err).__name__}: {err}; fix the error in "
            "your module (traceback below)",
            user_traceback=user_frames(err),
        ) from None


def load_factory(spec: str, base_dir: str | Path | None = None) -> Callable[..., Any]:
    """The function a factory spec names (importing its module or file)."""
    target, function = _split(spec)
    if _is_file_target(target):
        path = Path(canonical_model_name(spec, base_dir).rpartition(":")[0])
        module = _import_file(path, spec)
        where = f"file '{path}'"
    else:
        module = _import_module(target, spec)
        where = f"module '{target}'"
    factory = getattr(module, function, None)
    if factory is None:
        public = [
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        ]
        close = difflib.get_close_matches(function, public, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ModelSpecError(
            f"{where} has no function '{function}'; {hint}functions there: "
            f"{', '.join(sorted(public)) or '(none)'}"
        )
    if not callable(factory):
        raise ModelSpecError(
            f"'{function}' in {where} is a {type(factory).__name__}, not a function; name a "
            "function fn(num_classes, input_shape, **config) that returns a MultiExitModel"
        )
    return factory


def _check_signature(spec: str, factory: Callable[..., Any], config: dict[str, Any]) -> None:
    """The factory must take num_classes, input_shape and every config key."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # a builtin or C callable: let the call say
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [k for k in ("num_classes", "input_shape") if k not in params and not var_kw]
    if missing:
        raise ModelSpecError(
            f"factory '{spec}' does not accept {' and '.join(missing)}: eebench calls it as "
            "fn(num_classes=..., input_shape=..., **config); add these parameters"
        )
    if var_kw:
        return
    accepted = [p for p in params if p not in ("num_classes", "input_shape")]
    for key in config:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ModelSpecError(
                f"config key '{key}' is not a parameter of factory '{spec}'{hint}; its parameters: "
                f"{', '.join(accepted) or '(none besides num_classes and input_shape)'}"
            )


def build_from_factory(
    spec: str,
    num_classes: int,
    input_shape: Sequence[int],
    config: dict[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> MultiExitModel:
    """Call the factory a spec names and check that it returned a multi-exit model."""
    config = dict(config or {})
    factory = load_factory(spec, base_dir)
    _check_signature(spec, factory, config)
    try:
        model = factory(num_classes=int(num_classes), input_shape=tuple(input_shape), **config)
    except ModelSpecError:
        raise
    except Exception as err:
        raise ModelSpecError(
            f"factory '{spec}' raised {type(err).__name__}: {err}; fix the error in your factory "
            "(traceback below)",
            user_traceback=user_frames(err),
        ) from None
    if not isinstance(model, MultiExitModel):
        hint = (
            "wrap a plain network with eebench.attach_exits(backbone, exits=[...], ...)"
            if hasattr(model, "forward")
            else "return an eebench.models.MultiExitModel"
        )
        raise ModelSpecError(
            f"factory '{spec}' returned a {type(model).__module__}.{type(model).__qualname__}, not "
            f"an eebench MultiExitModel: {hint}"
        )
    if model.num_classes != int(num_classes) or tuple(model.input_shape) != tuple(input_shape):
        raise ModelSpecError(
            f"factory '{spec}' was asked for {int(num_classes)} classes on input "
            f"{tuple(input_shape)} but built a model for {model.num_classes} classes on "
            f"{tuple(model.input_shape)}: pass num_classes and input_shape through to the model"
        )
    model.set_metadata(canonical_model_name(spec, base_dir), config)
    return model

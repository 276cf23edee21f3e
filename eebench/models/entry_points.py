"""Models from installed packages: the ``eebench.models`` entry-point group.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."eebench.models"]
    my-net = "my_package.models:build_my_net"     # a factory, registered under 'my-net'
    my-zoo = "my_package.zoo"                     # a module whose @eebench.register_model run

Entry points are loaded once, the first time the model names are needed. One
that fails to load does not hide the others: its error is kept and shown by
``eebench list models`` and raised (with the package's traceback) when a suite
names it.
"""

from __future__ import annotations

import importlib.metadata
import inspect

from eebench.models.user import ModelSpecError, user_frames

GROUP = "eebench.models"

_state: dict[str, bool] = {"loaded": False}
FAILED: dict[str, ModelSpecError] = {}
"""Entry-point name -> why it could not be loaded."""


def load_entry_points(force: bool = False) -> list[str]:
    """Load every ``eebench.models`` entry point once; returns the names they registered."""
    from eebench.models.registry import MODELS

    if _state["loaded"] and not force:
        return []
    _state["loaded"] = True
    before = set(MODELS.names())
    for ep in importlib.metadata.entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        try:
            obj = ep.load()
        except Exception as err:
            FAILED[ep.name] = ModelSpecError(
                f"entry point '{ep.name} = {ep.value}' (group {GROUP}, from {dist}) failed to load: "
                f"{type(err).__name__}: {err}; fix or uninstall {dist}",
                user_traceback=user_frames(err),
            )
            continue
        if inspect.ismodule(obj):
            continue  # importing it ran its @register_model decorators
        if not callable(obj):
            FAILED[ep.name] = ModelSpecError(
                f"entry point '{ep.name} = {ep.value}' (group {GROUP}, from {dist}) is a "
                f"{type(obj).__name__}; it must name a module or a factory function"
            )
            continue
        if ep.name in MODELS:
            if MODELS.get(ep.name) is not obj:
                FAILED[ep.name] = ModelSpecError(
                    f"entry point '{ep.name}' (from {dist}) clashes with a model of that name "
                    "already registered; rename the entry point"
                )
            continue
        MODELS.add(ep.name, obj)
    return sorted(set(MODELS.names()) - before)

"""The policy registry: policies are chosen by name (``create_policy("threshold", confidence="entropy")``)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from eebench.errors import ConfigError
from eebench.registry import Registry

if TYPE_CHECKING:
    from eebench.policies.base import Policy

POLICIES: Registry[type[Policy]] = Registry("policy")


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Register a :class:`~eebench.policies.base.Policy` subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES.add(name, cls)
        return cls

    return deco


def create_policy(name: str, **options: Any) -> Policy:
    """Build a registered policy; unknown options are refused, naming the nearest valid one."""
    cls = POLICIES.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown option '{key}' for policy '{name}'{hint}; accepted: {accepted or 'none'}",
                field=f"policies.{name}.{key}",
            )
    return cls(**options)


def list_policies(filter: str | None = None) -> list[str]:
    """Registered policy names, optionally filtered by a glob."""
    return POLICIES.names(filter)


def policies_table(filter: str | None = None) -> pd.DataFrame:
    """One row per registered policy: kind (policy or baseline), options, what a threshold means."""
    rows = []
    for name in list_policies(filter):
        cls = POLICIES.get(name)
        params = inspect.signature(cls.__init__).parameters
        options = ", ".join(
            f"{p}={v.default!r}"
            for p, v in params.items()
            if p != "self" and v.default is not inspect.Parameter.empty
        )
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                "policy": name,
                "kind": cls.kind,
                "options": options or "-",
                "thresholds": cls.threshold_meaning if cls.uses_thresholds else "none",
                "description": doc[0] if doc else "",
            }
        )
    return pd.DataFrame(rows)

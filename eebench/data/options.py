"""Validation of loader options, so a bad option names the dataset, the option and the fix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eebench.errors import ConfigError


def check_int(
    dataset: str, option: str, value: Any, minimum: int, maximum: int | None = None
) -> int:
    """``value`` as an int within ``[minimum, maximum]``, or a ConfigError naming the option."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    raise ConfigError(f"expected an integer {bound}, got {value!r}", source=dataset, field=option)


def check_float(dataset: str, option: str, value: Any, minimum: float, maximum: float) -> float:
    """``value`` as a float within ``[minimum, maximum]``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and minimum <= value <= maximum:
        return float(value)
    raise ConfigError(
        f"expected a number between {minimum} and {maximum}, got {value!r}",
        source=dataset,
        field=option,
    )


def check_choice(dataset: str, option: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value in choices:
        return value
    raise ConfigError(
        f"expected one of {', '.join(map(str, choices))}, got {value!r}",
        source=dataset,
        field=option,
    )

"""A small named registry, shared by models, policies, backends and energy meters.

Registering an item is one decorator in the file that defines it, so adding a
model or a backend is one file. Duplicate names are refused (a silent
replacement would change results without anyone noticing) and unknown names
get the list of known ones plus the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; carries the nearest valid name."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        self.suggestion = close[0] if close else None
        hint = f" Did you mean '{self.suggestion}'?" if self.suggestion else ""
        msg = (
            f"unknown {kind} '{name}'.{hint} Known {kind}s: {', '.join(sorted(known)) or '(none)'}"
        )
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> item, with refusal of duplicates and did-you-mean lookups."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            self.add(name, item)
            return item

        return deco

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered; names must be unique")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self, filter: str | None = None) -> list[str]:
        import fnmatch

        names = sorted(self._items)
        if filter:
            names = [n for n in names if fnmatch.fnmatch(n, filter)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

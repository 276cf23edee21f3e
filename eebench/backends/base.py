"""The backend protocol and the backend registry.

A *backend* says where stages run. ``Backend.prepare(model, batch_size,
threads, **options)`` turns a :class:`~eebench.models.MultiExitModel` into a
:class:`PreparedModel` that runs one stage or one exit head at a time on
backend-native values (torch tensors, numpy arrays, ONNX Runtime values):
that is all the executor and the timers need, so the same measurement code
runs on every backend.

Backends are chosen by name:

* ``BACKENDS`` maps a plain name (``torch-cpu``, ``torch-cuda``,
  ``onnxruntime``) to a backend class, registered with
  ``@register_backend("name")``.
* A *family* serves a whole pattern of names ``family:argument``. It is
  registered with ``register_backend_family("family")(factory)``, where
  ``factory(argument, **options) -> Backend``; :func:`get_backend`
  splits ``"simulated:jetson-orin-nano"`` at the first colon and calls the
  ``simulated`` factory with ``"jetson-orin-nano"``. A family may pass
  ``members=callable`` returning the arguments it knows, for listings.
  Families defined in other packages are found through ``FAMILY_MODULES``
  (``simulated`` -> ``eebench.profiles``), imported on first lookup.

Thread counts are part of a prepared model: they are set for the duration of
``prepared.activated()`` and restored afterwards, and ``describe()`` reports
them with the device and provider so every number carries them.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from eebench.measure.probe import HOST_TORCH_KIND, SpeedProbe, torch_matmul_probe
from eebench.measure.timing import DEFAULT_CLOCK, Clock, HostTimer, IntervalTimer
from eebench.registry import Registry, UnknownNameError

NativeState = tuple[Any, ...]
"""A state as a tuple of backend-native values (tensors, arrays or device buffers)."""


class PreparedModel(ABC):
    """A model made runnable on one backend, one stage or exit head at a time.

    ``state`` arguments are tuples of native values: stage 0 takes
    ``(to_input(x),)``; stage ``i`` returns the tuple stage ``i + 1`` takes;
    exit ``i`` reads the tuple stage ``i`` returned.
    """

    backend: str
    device: str
    threads: int
    model_name: str
    num_stages: int
    input_shape: tuple[int, ...]

    @abstractmethod
    def run_stage(self, i: int, state: NativeState) -> NativeState:
        """Run stage ``i`` on a native state tuple."""

    @abstractmethod
    def run_exit(self, i: int, state: NativeState) -> Any:
        """Logits of exit ``i`` (native value) from the state stage ``i`` returned."""

    @abstractmethod
    def to_input(self, x: Any) -> Any:
        """A host batch (torch tensor or numpy array, N x C x H x W float32) as a native value."""

    @abstractmethod
    def to_numpy(self, value: Any) -> np.ndarray:
        """A native value on the host as a numpy array (waits for the device)."""

    @abstractmethod
    def select(self, state: NativeState, rows: np.ndarray) -> NativeState:
        """The rows ``rows`` (int indices) of every tensor of a state: for batch shrinking."""

    def sync(self) -> None:  # noqa: B027 - a no-op is right for synchronous backends
        """Wait until queued device work is done (no-op for synchronous backends)."""

    @contextmanager
    def activated(self) -> Iterator[PreparedModel]:
        """Apply this model's thread settings for the duration of a measurement."""
        yield self

    def interval_timer(self, clock: Clock = DEFAULT_CLOCK) -> IntervalTimer:
        """The timer that measures one call correctly on this device."""
        return HostTimer(clock, self.sync)

    @property
    def speed_probe_kind(self) -> str:
        """What :meth:`speed_probe` times, in words (``describe()`` reports it as ``speed_probe``)."""
        return HOST_TORCH_KIND

    def speed_probe(self, seed: int = 0) -> SpeedProbe:
        """The machine-speed probe run through this backend, the way the parts run: a fixed
        128 x 128 matrix product (:mod:`eebench.measure.probe`). Its slowdown must track the
        parts', so a backend that does not run torch on the host overrides this (default:
        ``torch.mm`` on the host)."""
        return torch_matmul_probe(seed)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """``backend``, ``provider``, ``threads``, ``interop_threads``, ``device``, ``dtype``,
        ``speed_probe`` (:attr:`speed_probe_kind`), ..."""

    # ------------------------------------------------------------------ conveniences
    @property
    def num_exits(self) -> int:
        return self.num_stages

    def run_all(self, x_native: Any) -> list[Any]:
        """Every exit's native logits in one pass (aggregation)."""
        state: NativeState = (x_native,)
        outs = []
        for i in range(self.num_stages):
            state = self.run_stage(i, state)
            outs.append(self.run_exit(i, state))
        return outs

    def stage_inputs(self, x_native: Any) -> list[NativeState]:
        """The native input of every stage for one batch (element ``num_stages`` is the last
        stage's output, which the last exit reads)."""
        states: list[NativeState] = [(x_native,)]
        for i in range(self.num_stages):
            states.append(self.run_stage(i, states[-1]))
        return states


class Backend(ABC):
    """Where stages run. Subclasses set ``name`` and are registered by name."""

    name: ClassVar[str] = "abstract"

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, the reason and what to install)."""

    @abstractmethod
    def prepare(
        self, model: Any, batch_size: int = 1, threads: int | None = None, **options: Any
    ) -> PreparedModel:
        """Make ``model`` runnable here; raises BackendUnavailable when it cannot be."""

    def providers(self) -> list[str]:
        """Execution providers or devices this backend can use here (for listings)."""
        return []


BackendFactory = Callable[..., Backend]

BACKENDS: Registry[BackendFactory] = Registry("backend")


@dataclass(frozen=True)
class BackendFamily:
    """A factory serving every name ``family:<argument>``."""

    name: str
    factory: Callable[..., Backend]
    members: Callable[[], list[str]] | None = None

    def pattern(self) -> str:
        return f"{self.name}:<argument>"


BACKEND_FAMILIES: Registry[BackendFamily] = Registry("backend family")

FAMILY_MODULES: dict[str, str] = {"simulated": "eebench.profiles"}
"""Family name -> module that registers it, imported on first lookup (keeps imports lazy)."""


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend class (or a zero-argument-compatible factory) under ``name``."""
    return BACKENDS.register(name)


def register_backend_family(
    name: str, members: Callable[[], list[str]] | None = None
) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Register ``factory(argument, **options) -> Backend`` for every name ``name:<argument>``."""
    if ":" in name:
        raise ValueError(f"a backend family name cannot contain ':' (got '{name}')")

    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKEND_FAMILIES.add(name, BackendFamily(name, factory, members))
        return factory

    return deco


def _load_family_modules() -> None:
    for family, module in FAMILY_MODULES.items():
        if family in BACKEND_FAMILIES:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency inside the module
                raise


def get_backend(name: str, **options: Any) -> Backend:
    """A backend instance by name, e.g. ``torch-cpu``, ``simulated:jetson-orin-nano`` or
    ``torch-cuda@jetson-orin-nano-8gb`` (a backend on a cluster's device:
    :mod:`eebench.backends.placement`)."""
    if "@" in name:
        from eebench.backends.placement import PlacedBackend, parse_placement

        try:
            placement = parse_placement(name)
        except ValueError as err:
            from eebench.errors import ConfigError

            raise ConfigError(str(err)) from None
        if placement.backend.startswith("simulated:"):
            from eebench.errors import ConfigError

            raise ConfigError(
                f"backend '{name}': a simulated backend is an estimate from a hardware profile "
                f"and runs nowhere; drop '@{placement.device}'"
            )
        if placement.device is not None:
            return PlacedBackend(get_backend(placement.backend, **options), placement.device)  # type: ignore[return-value]
    if name in BACKENDS:
        return BACKENDS.get(name)(**options)
    family, sep, argument = name.partition(":")
    if sep:
        _load_family_modules()
        if family in BACKEND_FAMILIES:
            if not argument:
                raise UnknownNameError("backend", name, list_backends())
            return BACKEND_FAMILIES.get(family).factory(argument, **options)
    raise UnknownNameError("backend", name, list_backends())


def list_backends(filter: str | None = None, expand_families: bool = False) -> list[str]:
    """Registered backend names, then one ``family:<argument>`` pattern per family
    (or the family's known members when ``expand_families``)."""
    import fnmatch

    _load_family_modules()
    names = list(BACKENDS.names())
    for fam_name in BACKEND_FAMILIES.names():
        fam = BACKEND_FAMILIES.get(fam_name)
        if expand_families and fam.members is not None:
            names.extend(f"{fam_name}:{m}" for m in fam.members())
        else:
            names.append(fam.pattern())
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return names


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: as given, or the number of physical cores."""
    if threads is None:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from eebench.errors import ConfigError

        raise ConfigError(
            f"expected a positive integer thread count, got {threads!r}", field="threads"
        )
    return threads


def rows_index(rows: np.ndarray) -> np.ndarray:
    """Row selection as an int64 index array (accepts a boolean mask)."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    return rows.astype(np.int64, copy=False)

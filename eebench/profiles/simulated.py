"""The ``simulated:<profile>`` backend: real outputs, estimated time.

Stages and heads run with torch on this machine's CPU, so the logits (and
therefore every exit decision of the true early-exit executor) are real; the
time a call *would* take on the profiled device comes from the estimator.
The prepared model adds the estimate of every stage and head it runs (at the
batch size of the state it is given, so shrinking batches are priced
correctly) and its interval timer returns that sum instead of a clock
reading. Everything it describes carries ``source = estimated:<profile>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from eebench.backends.base import Backend, NativeState, register_backend_family, resolve_threads
from eebench.backends.torch_backend import TorchPrepared
from eebench.errors import ConfigError, EEBenchError
from eebench.measure.timing import DEFAULT_CLOCK, Clock, IntervalTimer
from eebench.models.base import MultiExitModel
from eebench.profiles.estimator import estimate_model
from eebench.profiles.locate import list_profiles, load_profile
from eebench.profiles.schema import HardwareProfile


class SimulatedPrepared(TorchPrepared):
    """A model run on the CPU whose timer reports the profile's estimated latency."""

    def __init__(
        self,
        name: str,
        model: MultiExitModel,
        profile: HardwareProfile,
        batch_size: int,
        threads: int,
        precision: str,
        engine: str | None,
    ) -> None:
        super().__init__(name, model, torch.device("cpu"), batch_size, threads)
        self.profile = profile
        self.precision = precision
        self.engine = engine
        self._estimates: dict[int, pd.DataFrame] = {}
        self.pending_ns = 0.0

    def estimate(self, batch_size: int) -> pd.DataFrame:
        """Per-part estimates at ``batch_size`` (cached)."""
        if batch_size not in self._estimates:
            self._estimates[batch_size] = estimate_model(
                self.model,
                self.profile,
                batch_size=batch_size,
                precision=self.precision,
                engine=self.engine,
            )
        return self._estimates[batch_size]

    def _charge(self, part: str, i: int, state: NativeState) -> None:
        rows = int(state[0].shape[0]) if state and hasattr(state[0], "shape") else self.batch_size
        table = self.estimate(max(rows, 1))
        hit = table[(table["part"] == part) & (table["index"] == i)]
        self.pending_ns += float(hit["latency_ms"].iat[0]) * 1e6

    def run_stage(self, i: int, state: NativeState) -> NativeState:
        self._charge("stage", i, state)
        return super().run_stage(i, state)

    def run_exit(self, i: int, state: NativeState) -> torch.Tensor:
        self._charge("exit", i, state)
        return super().run_exit(i, state)

    def interval_timer(self, clock: Clock = DEFAULT_CLOCK) -> IntervalTimer:
        return EstimateTimer(self)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        table = self.estimate(self.batch_size)
        d.update(
            provider="eebench estimator",
            device=f"{self.profile.identity.vendor} {self.profile.identity.device} "
            f"({self.profile.identity.power_mode})",
            dtype=self.precision,
            engine=str(table["engine"].iat[0]),
            profile=self.profile.name,
            source=f"estimated:{self.profile.name}",
        )
        return d


class EstimateTimer:
    """Runs ``fn`` for its outputs and returns the estimated nanoseconds of the parts it ran."""

    def __init__(self, prepared: SimulatedPrepared) -> None:
        self.prepared = prepared

    def __call__(self, fn: Callable[[], object]) -> int:
        self.prepared.pending_ns = 0.0
        fn()
        return int(round(self.prepared.pending_ns))


class SimulatedBackend(Backend):
    """Estimates for one hardware profile; options ``precision`` and ``engine``."""

    name = "simulated"

    def __init__(self, profile: str, precision: str = "fp32", engine: str | None = None) -> None:
        self.profile_name = profile
        self.precision = precision
        self.engine = engine
        self.name = f"simulated:{profile}"  # type: ignore[misc]  # instance name carries the profile

    def load(self) -> HardwareProfile:
        return load_profile(self.profile_name)

    def available(self) -> tuple[bool, str]:
        try:
            self.load()
        except EEBenchError as err:
            return False, str(err)
        return True, ""

    def providers(self) -> list[str]:
        return [f"estimated:{self.profile_name}"]

    def prepare(
        self, model: MultiExitModel, batch_size: int = 1, threads: int | None = None, **options: Any
    ) -> SimulatedPrepared:
        if options:
            raise ConfigError(
                f"unknown option(s) {sorted(options)} for backend '{self.name}'; accepted: batch_size, "
                "threads (and precision, engine when the backend is created)",
                field="backend.options",
            )
        return SimulatedPrepared(
            self.name,
            model,
            self.load(),
            batch_size,
            resolve_threads(threads),
            self.precision,
            self.engine,
        )

    def estimate(self, model: MultiExitModel, batch_size: int = 1) -> pd.DataFrame:
        """Per stage and exit head: latency_ms, energy_mj, source = estimated:<profile>."""
        return estimate_model(
            model, self.load(), batch_size=batch_size, precision=self.precision, engine=self.engine
        )


@register_backend_family("simulated", members=list_profiles)
def simulated_backend(argument: str, **options: Any) -> SimulatedBackend:
    """``simulated:<profile>``: the profile is a built-in or community name, or a YAML path."""
    return SimulatedBackend(argument, **options)

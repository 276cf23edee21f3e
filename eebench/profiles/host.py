"""Does a host profile describe the machine a run measures on?

A host profile (one measured on a CPU with ``eebench profile measure``) is only
a model of *that* CPU: an AMD EPYC's micro-benchmarks say little about an Intel
Xeon with AMX. When a run estimates with a host profile, its CPU is compared
with the measuring host's (:func:`eebench.measure.environment.capture_environment`):
vendor, model string and the speed-relevant instruction-set flags the profile
recorded. A mismatch is not an error -- estimating another machine is a use of
profiles -- but the manifest, the console and the report say so, so that nobody
reads those estimates as a model of this host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eebench.profiles.schema import HardwareProfile


@dataclass(frozen=True)
class HostMismatch:
    """How a host profile's CPU differs from the measuring host's."""

    profile: str
    profile_cpu: str
    host_cpu: str
    reasons: tuple[str, ...]

    def message(self) -> str:
        return (
            f"host profile '{self.profile}' was measured on {self.profile_cpu}, but this run "
            f"measures on {self.host_cpu}: {'; '.join(self.reasons)}. Its estimates describe "
            "the profiled CPU, not this host."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "profile_cpu": self.profile_cpu,
            "host_cpu": self.host_cpu,
            "reasons": list(self.reasons),
            "message": self.message(),
        }


def is_host_profile(profile: HardwareProfile) -> bool:
    """A profile whose micro-benchmarks were measured on a CPU (not a datasheet device)."""
    return profile.measured is not None and profile.measured.engine == "cpu"


def _norm(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def host_mismatch(profile: HardwareProfile, env: Any) -> HostMismatch | None:
    """The differences between a host profile's CPU and ``env``'s (an
    :class:`~eebench.measure.environment.Environment`, its ``to_dict()`` as stored in a
    manifest, or anything with ``cpu_model``, ``cpu_vendor`` and ``cpu_flags``); None when
    they match, when the profile is not a host profile, or when the host does not say what
    it is."""
    if not is_host_profile(profile):
        return None

    def get(key: str) -> Any:
        return env.get(key) if isinstance(env, Mapping) else getattr(env, key, None)

    ident = profile.identity
    host_model = get("cpu_model")
    host_vendor = get("cpu_vendor")
    host_flags = set(get("cpu_flags") or ())
    reasons: list[str] = []
    if host_vendor and _norm(ident.vendor) != _norm(host_vendor):
        reasons.append(f"vendor {ident.vendor} (profile) vs {host_vendor} (host)")
    if host_model and _norm(ident.device) != _norm(host_model):
        reasons.append(f"CPU model '{ident.device}' (profile) vs '{host_model}' (host)")
    if ident.cpu_flags is not None and host_flags:
        only_profile = sorted(set(ident.cpu_flags) - host_flags)
        only_host = sorted(host_flags - set(ident.cpu_flags))
        if only_profile:
            reasons.append(f"the host lacks {', '.join(only_profile)}")
        if only_host:
            reasons.append(f"the profiled CPU lacked {', '.join(only_host)}")
    if not reasons:
        return None
    vendor = f"{host_vendor} " if host_vendor and host_vendor not in (host_model or "") else ""
    return HostMismatch(
        profile=profile.name,
        profile_cpu=ident.device,
        host_cpu=f"{vendor}{host_model or 'an unnamed CPU'}",
        reasons=tuple(reasons),
    )

"""Checking the names a suite uses against the registries, before anything runs.

Kept out of the schema so that loading a suite file does not import torch,
onnxruntime and every registry; the runner calls :func:`check_names` first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from eebench.errors import ConfigError
from eebench.suites.schema import SuiteSpec


def _check(name: str, known: Iterable[str], kind: str, source: str, field: str) -> None:
    known = list(known)
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown {kind} '{name}'{hint} (known: {', '.join(sorted(known))})",
        source=source,
        field=field,
    )


def check_names(spec: SuiteSpec, source: str) -> None:
    """Raise ConfigError naming the file, the field path and the nearest valid name."""
    import eebench.backends  # noqa: F401  (registers backends)
    from eebench.backends import list_backends
    from eebench.data import list_datasets
    from eebench.models import list_models
    from eebench.policies import list_confidence_measures, list_policies
    from eebench.profiles import list_profiles
    from eebench.training import TrainConfig

    _check(spec.dataset.name, list_datasets(), "dataset", source, "dataset.name")
    if spec.dataset.fallback is not None:
        _check(
            spec.dataset.fallback.name, list_datasets(), "dataset", source, "dataset.fallback.name"
        )
    for i, m in enumerate(spec.models):
        if ":" not in m.name:  # a factory spec is resolved (and checked) when the model is built
            _check(m.name, list_models(), "model", source, f"models[{i}].name")
        try:
            TrainConfig.from_dict(dict(m.training))
        except ConfigError as err:
            raise ConfigError(str(err), source=source, field=f"models[{i}].training") from None
    for i, p in enumerate(spec.policies):
        _check(p.name, list_policies(), "policy", source, f"policies[{i}].name")
        for j, c in enumerate(p.confidence):
            _check(
                c,
                list_confidence_measures(),
                "confidence measure",
                source,
                f"policies[{i}].confidence[{j}]",
            )
    for i, b in enumerate(spec.baselines):
        _check(b, list_policies(), "policy", source, f"baselines[{i}]")
    _check_policy_families(spec, source)
    _check_serving(spec, source)
    profiles = list_profiles()
    for i, b in enumerate(spec.backends):
        if b.startswith("simulated:") and "@" not in b:
            _check(b.split(":", 1)[1], profiles, "hardware profile", source, f"backends[{i}]")
        else:
            _check_backend(b, list_backends(), source, f"backends[{i}]")


def _check_backend(name: str, known: list[str], source: str, field: str) -> None:
    """A plain backend name, or ``<backend>@<device>`` (a cluster device: the backend part is
    checked as a plain name, the device part for the characters a Ray resource allows)."""
    from eebench.backends.placement import parse_placement

    try:
        placement = parse_placement(name)
    except ValueError as err:
        raise ConfigError(str(err), source=source, field=field) from None
    if placement.device is not None and placement.backend.startswith("simulated:"):
        raise ConfigError(
            f"backend '{name}': a simulated backend is an estimate from a hardware profile and "
            f"runs nowhere; drop '@{placement.device}'",
            source=source,
            field=field,
        )
    _check(placement.backend, [n for n in known if ":" not in n], "backend", source, field)


def model_family(name: str) -> str | None:
    """The family a registered model's entry point builds, read from its return annotation (the
    model class's ``family``) without building it; None when the annotation does not say."""
    import typing

    from eebench.models.registry import MODELS

    try:
        hints = typing.get_type_hints(MODELS.get(name))
    except Exception:  # an annotation that does not resolve: the family is found when built
        return None
    family = getattr(hints.get("return"), "family", None)
    return family if isinstance(family, str) and family != "unknown" else None


def _check_policy_families(spec: SuiteSpec, source: str) -> None:
    """Refuse a policy defined for some model families only (``applies_to_families``, e.g. the
    IDK cascade) in a suite with a model of another family, naming both and the alternative."""
    from eebench.policies import POLICIES

    for i, p in enumerate(spec.policies):
        families = getattr(POLICIES.get(p.name), "applies_to_families", None)
        if not families:
            continue
        for j, m in enumerate(spec.models):
            family = model_family(m.name)
            if family is not None and family not in families:
                raise ConfigError(
                    f"policy '{p.name}' applies to {' and '.join(families)} models only, but model "
                    f"'{m.label}' (models[{j}], '{m.name}') is of the {family} family; use the "
                    f"'threshold' policy for it, or move '{p.name}' to a suite of "
                    f"{' and '.join(families)} models",
                    source=source,
                    field=f"policies[{i}].name",
                )


def _check_serving(spec: SuiteSpec, source: str) -> None:
    """The ``serving:`` section's names, before anything runs: its backends, the policy and
    confidence measure it serves (a calibrated point of one of the suite's policies) and whether
    the fused graph can make that policy's decision. Without these checks a typo surfaced only at
    the serve step, after training and measuring, as a skipped step."""
    sv = spec.serving
    if sv is None or not sv.enabled:
        return
    from eebench.backends import list_backends
    from eebench.policies import POLICIES, list_confidence_measures, list_policies
    from eebench.serving.graphs import FUSED_MEASURES

    plain = [n for n in list_backends() if ":" not in n]
    for i, b in enumerate(sv.backends or []):
        if b.startswith("simulated:"):
            raise ConfigError(
                f"backend '{b}' is an estimate from a hardware profile: it cannot serve requests "
                f"under load; serve on one of {', '.join(sorted(plain))}",
                source=source,
                field=f"serving.backends[{i}]",
            )
        _check_backend(b, list_backends(), source, f"serving.backends[{i}]")  # also <b>@<device>
    _check(sv.policy, list_policies(), "policy", source, "serving.policy")
    _check(
        sv.confidence,
        list_confidence_measures(),
        "confidence measure",
        source,
        "serving.confidence",
    )
    specs = [p for p in spec.policies if p.name == sv.policy]
    if not specs:
        names = sorted({p.name for p in spec.policies})
        raise ConfigError(
            f"policy '{sv.policy}' is not among the suite's policies ({', '.join(names) or 'none'}),"
            " so no operating point of it is calibrated to serve; add it to 'policies' or serve "
            "one of those",
            source=source,
            field="serving.policy",
        )
    if not POLICIES.get(sv.policy).uses_thresholds:
        raise ConfigError(
            f"policy '{sv.policy}' has no thresholds, so no operating point of it is calibrated "
            "to serve; serve a threshold policy of the suite",
            source=source,
            field="serving.policy",
        )
    measures = [c for p in specs for c in p.confidence]
    if sv.confidence not in measures:
        at = next(i for i, p in enumerate(spec.policies) if p.name == sv.policy)
        raise ConfigError(
            f"confidence measure '{sv.confidence}' is not among policy '{sv.policy}''s measures "
            f"in this suite ({', '.join(measures)}), so no operating point of it is calibrated "
            f"to serve; add it to policies[{at}].confidence or serve one of those",
            source=source,
            field="serving.confidence",
        )
    if "fused" in sv.modes:
        fallback = next((p.options.get("fallback", "final") for p in specs), "final")
        why = None
        if sv.policy != "threshold" or fallback != "final":
            why = (
                f"decides thresholds in-graph; policy '{sv.policy}' is not a plain threshold policy"
            )
        elif sv.confidence not in FUSED_MEASURES:
            why = f"computes {', '.join(FUSED_MEASURES)} in-graph, not '{sv.confidence}'"
        if why is not None:
            raise ConfigError(
                f"the fused graph {why}; drop 'fused' from serving.modes or serve the "
                f"threshold policy on {', '.join(FUSED_MEASURES)}",
                source=source,
                field=f"serving.modes[{sv.modes.index('fused')}]",
            )

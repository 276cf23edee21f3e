"""Reading and checking profile files: every problem is one line naming the file and field path.

Two layers of checks:

1. the schema (:mod:`eebench.profiles.schema`): types, units, finite positive
   values, unknown keys (with the nearest valid key), complete sources;
2. sanity checks across fields (:func:`check_profile`): every number has a
   provenance that resolves, micro-benchmarks are ``measured``, achieved
   throughput and bandwidth do not exceed the stated peaks, achieved figures
   agree with their MACs and time, active power is not below idle power.

All problems are collected (not just the first) so one run of
``eebench profile validate`` shows everything to fix.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from eebench.errors import ConfigError
from eebench.profiles.overhead import fit_chain
from eebench.profiles.schema import ENGINES, HardwareProfile, Provenance

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# rounding in YAML files (4 significant digits) must not trip "achieved above peak"
PEAK_TOLERANCE = 0.005
CONSISTENCY_TOLERANCE = 0.02


@dataclass(frozen=True)
class ProfileIssue:
    """One problem in one profile file."""

    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.field}: {self.message}"
            if self.field
            else f"{self.source}: {self.message}"
        )


class ProfileError(ConfigError):
    """A profile that does not validate; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ProfileIssue]) -> None:
        self.issues = list(issues)
        first = issues[0] if issues else None
        super().__init__("\n".join(str(i) for i in issues) or "invalid profile")
        self.source = first.source if first else None
        self.field = first.field if first else None


# ------------------------------------------------------------------ YAML
class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (the second silently wins otherwise)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> tuple[Any, list[ProfileIssue]]:
    """The parsed file, or the issue saying why it cannot be parsed."""
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [ProfileIssue(src, "", "file not found")]
    except (OSError, UnicodeDecodeError) as err:
        return None, [ProfileIssue(src, "", f"cannot read the file: {err}")]
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        return None, [ProfileIssue(src, "", f"not valid YAML: {where}{problem}")]
    if not isinstance(data, dict):
        return None, [
            ProfileIssue(src, "", f"expected a mapping at the top level, got {type(data).__name__}")
        ]
    return data, []


# ------------------------------------------------------------------ schema errors
def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found at ``loc`` inside a HardwareProfile (for key suggestions)."""
    current: Any = HardwareProfile
    i = 0
    while i < len(loc):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        if loc[i] not in fields:
            return None
        annotation = _strip_optional(fields[loc[i]].annotation)
        i += 1
        if typing.get_origin(annotation) in (list, dict):
            if i >= len(loc):
                return None
            annotation = _strip_optional(typing.get_args(annotation)[-1])
            i += 1  # the list index or dict key
        current = annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _schema_issues(err: ValidationError, source: str) -> list[ProfileIssue]:
    issues = []
    for e in err.errors():
        loc = tuple(e["loc"])
        kind = e["type"]
        msg = e["msg"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            key = str(loc[-1])
            valid = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listing = f"; valid keys here: {', '.join(valid)}" if valid else ""
            msg = f"unknown key '{key}'{hint}{listing}"
        elif kind == "missing":
            msg = "missing required field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg = f"{msg}, got {e['input']!r}"
        issues.append(ProfileIssue(source, _format_loc(loc), msg))
    return issues


# ------------------------------------------------------------------ sanity checks
def check_profile(profile: HardwareProfile, source: str) -> list[ProfileIssue]:
    """Checks across fields; an empty list means the profile is usable."""
    issues: list[ProfileIssue] = []
    add = lambda field, msg: issues.append(ProfileIssue(source, field, msg))  # noqa: E731

    if not SLUG.match(profile.name):
        add(
            "name",
            f"must be a lowercase slug such as 'jetson-nano-10w', got '{profile.name}' "
            "(eebench profile submit normalises names)",
        )

    for sid, src in profile.sources.items():
        if src.ref is not None:
            add(
                f"sources.{sid}",
                "a source must be written out (kind, ...), not refer to another source",
            )

    known = list(profile.sources)
    for path, _q, prov in profile.quantities():
        if prov is None:
            add(
                f"{path}.provenance",
                "missing provenance: name an entry of 'sources' or write "
                "{kind: datasheet|measured|derived|assumption, ...} inline",
            )
        elif prov.ref is not None and prov.ref not in profile.sources:
            close = difflib.get_close_matches(prov.ref, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            add(
                f"{path}.provenance",
                f"unknown source '{prov.ref}'{hint}; defined sources: {', '.join(known) or '(none)'}",
            )

    m = profile.measured
    if m is not None:
        prov = m.provenance
        if prov.ref is not None and prov.ref not in profile.sources:
            close = difflib.get_close_matches(prov.ref, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            add("measured.provenance", f"unknown source '{prov.ref}'{hint}")
        else:
            resolved = profile.resolve(prov)
            if resolved.kind != "measured":
                add(
                    "measured.provenance",
                    f"micro-benchmarks must have kind 'measured', got '{resolved.kind}'",
                )
        peak = profile.peak(m.precision, m.engine)
        for kind, points in (("gemm", m.gemm), ("conv", m.conv)):
            for i, p in enumerate(points):
                path = f"measured.{kind}[{i}].achieved"
                achieved = p.achieved.base
                if peak is not None and achieved > peak.base * (1 + PEAK_TOLERANCE):
                    add(
                        path,
                        f"achieved {achieved / 1e9:.4g} GMAC/s is above the peak "
                        f"compute.{m.precision}.{m.engine} = {peak.base / 1e9:.4g} GMAC/s; "
                        "one of the two is wrong",
                    )
                expected = p.macs / p.time.base
                if abs(achieved - expected) > CONSISTENCY_TOLERANCE * expected:
                    add(
                        path,
                        f"{achieved / 1e9:.4g} GMAC/s does not match MACs / time = "
                        f"{p.macs} / {p.time.value:g} {p.time.unit} = {expected / 1e9:.4g} GMAC/s",
                    )
        for name, chain, fitted in (
            ("overhead_chain", m.overhead_chain, m.per_op_overhead),
            ("module_chain", m.module_chain, m.module_overhead),
        ):
            if len({c.ops for c in chain}) < 2:
                if chain:
                    add(f"measured.{name}", "needs chains of at least two different lengths")
                continue
            # a slope below zero (noise on a machine with almost no overhead) is stored as ~0
            slope = max(fit_chain([(c.ops, c.time.base) for c in chain]).slope_s, 0.0)
            if fitted is not None and abs(fitted.base - slope) > (
                CONSISTENCY_TOLERANCE * slope + 1e-8
            ):
                field = "per_op_overhead" if name == "overhead_chain" else "module_overhead"
                add(
                    f"measured.{field}",
                    f"{fitted.value:g} {fitted.unit} does not match the slope of measured.{name} "
                    f"({slope * 1e6:.4g} us per operator)",
                )
        for i, op in enumerate(m.ops):
            expected = op.bytes / op.time.base
            if abs(op.achieved.base - expected) > CONSISTENCY_TOLERANCE * expected:
                add(
                    f"measured.ops[{i}].achieved",
                    f"{op.achieved.base / 1e9:.4g} GB/s does not match bytes / time = {op.bytes} / "
                    f"{op.time.value:g} {op.time.unit} = {expected / 1e9:.4g} GB/s",
                )
        bw = profile.memory.bandwidth
        if (
            m.bandwidth is not None
            and bw is not None
            and m.bandwidth.base > bw.base * (1 + PEAK_TOLERANCE)
        ):
            add(
                "measured.bandwidth",
                f"achieved {m.bandwidth.base / 1e9:.4g} GB/s is above the peak memory.bandwidth = "
                f"{bw.base / 1e9:.4g} GB/s",
            )

    est = profile.estimation
    ratios = [
        (f"estimation.compute_efficiency.{e}", getattr(est.compute_efficiency, e)) for e in ENGINES
    ]
    ratios.append(("estimation.bandwidth_efficiency", est.bandwidth_efficiency))
    for path, q in ratios:
        if q is not None and q.base > 1:
            add(path, f"an efficiency is a fraction of the peak in (0, 1], got {q.value:g}")

    pw = profile.power
    if pw.idle is not None and pw.active is not None and pw.active.base < pw.idle.base:
        add(
            "power.active",
            f"{pw.active.value:g} {pw.active.unit} is below power.idle "
            f"({pw.idle.value:g} {pw.idle.unit})",
        )
    return issues


# ------------------------------------------------------------------ entry points
def parse_profile(
    data: dict[str, Any], source: str
) -> tuple[HardwareProfile | None, list[ProfileIssue]]:
    """Schema and sanity checks of already-parsed YAML; the profile is None when the schema fails."""
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as err:
        return None, _schema_issues(err, source)
    return profile, check_profile(profile, source)


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksum_issues(path: Path) -> list[ProfileIssue]:
    """A submitted profile carries ``<file>.sha256``; a mismatch means it was edited afterwards."""
    side = checksum_path(path)
    if not side.exists():
        return []
    expected = (
        side.read_text(encoding="utf-8").split()[0]
        if side.read_text(encoding="utf-8").strip()
        else ""
    )
    actual = file_sha256(path)
    if expected != actual:
        return [
            ProfileIssue(
                str(path),
                "",
                f"sha256 {actual[:12]}... does not match {side.name} "
                f"({expected[:12]}...): the file changed after submission; "
                "re-run eebench profile submit",
            )
        ]
    return []


def validate_file(path: str | Path) -> list[ProfileIssue]:
    """Every problem in one profile file (an empty list: the file is valid)."""
    p = Path(path)
    data, issues = read_yaml(p)
    if issues:
        return issues
    _, issues = parse_profile(data, str(p))
    return issues + _checksum_issues(p)


def load_profile_file(path: str | Path) -> HardwareProfile:
    """Load and check one file; raise :class:`ProfileError` listing every problem."""
    p = Path(path)
    data, issues = read_yaml(p)
    if issues:
        raise ProfileError(issues)
    profile, issues = parse_profile(data, str(p))
    issues += _checksum_issues(p)
    if issues or profile is None:
        raise ProfileError(issues)
    return profile


def resolved_provenance(profile: HardwareProfile, prov: Provenance | None) -> Provenance | None:
    """``prov`` with references followed (None stays None)."""
    return None if prov is None else profile.resolve(prov)

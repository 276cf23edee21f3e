"""Submitting a profile: validate, give it a slug name, file it under community/ with a checksum.

The checksum (``<slug>.yaml.sha256``, in ``sha256sum`` format) lets
``eebench profile validate`` notice a submitted file that was edited
afterwards. An existing profile is never overwritten: a new measurement of a
known device gets a new name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

from eebench.errors import ConfigError
from eebench.profiles.locate import community_profiles_dir, profile_entries
from eebench.profiles.schema import HardwareProfile
from eebench.profiles.validate import (
    ProfileError,
    ProfileIssue,
    checksum_path,
    file_sha256,
    parse_profile,
    read_yaml,
)

_NAME_LINE = re.compile(r"^name:[ \t]*.*$", re.MULTILINE)


def slugify(name: str) -> str:
    """``"Jetson Orin Nano (Super) 25W"`` -> ``"jetson-orin-nano-super-25w"``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Submission:
    name: str
    path: Path
    checksum: str
    checksum_file: Path
    profile: HardwareProfile

    def pull_request_text(self, repo_root: Path | None = None) -> str:
        """What to put in the pull request that shares the profile."""
        root = repo_root or self.path.parents[2]
        rel = self.path.relative_to(root) if self.path.is_relative_to(root) else self.path
        rel_sum = (
            self.checksum_file.relative_to(root)
            if self.checksum_file.is_relative_to(root)
            else self.checksum_file
        )
        p = self.profile
        kinds = sorted(
            {
                (p.resolve(prov).kind or "?")
                for _, _, prov in p.quantities()
                if prov is not None and (prov.ref is None or prov.ref in p.sources)
            }
        )
        lines = [
            f"Profile '{self.name}' written to {rel} (sha256 {self.checksum}).",
            "",
            "Open a pull request that adds these two files:",
            f"  git add {rel} {rel_sum}",
            f'  git commit -m "Add hardware profile {self.name}"',
            "",
            f"Title: Add hardware profile: {p.identity.vendor} {p.identity.device} ({p.identity.power_mode})",
            "Body:",
            f"  - profile: {self.name} ({rel})",
            f"  - device: {p.identity.vendor} {p.identity.device}, power mode {p.identity.power_mode}",
            f"  - provenance kinds: {', '.join(kinds) or '(none)'}",
        ]
        if p.measured is not None:
            src = p.resolve(p.measured.provenance)
            lines.append(
                f"  - micro-benchmarks: {p.measured.engine}/{p.measured.precision}, measured {src.date} "
                f"with {src.tool} (eebench {src.eebench_version or '?'}, backend {src.backend or '?'}, "
                f"{src.threads or '?'} threads)"
            )
            if src.command:
                lines.append(f"  - command: {src.command}")
        lines += [
            f"  - sha256: {self.checksum}",
            f"  - checked with: eebench profile validate {rel}",
        ]
        return "\n".join(lines)


def submit_profile(path: str | Path, community_dir: Path | None = None) -> Submission:
    """Validate ``path`` and file it as ``community/<slug>.yaml`` plus its checksum."""
    src = Path(path)
    data, issues = read_yaml(src)
    if issues:
        raise ProfileError(issues)
    _, issues = parse_profile({**data, "name": slugify(str(data.get("name", ""))) or "x"}, str(src))
    if issues:
        raise ProfileError(issues)
    slug = slugify(str(data["name"]))
    if not slug:
        raise ProfileError(
            [ProfileIssue(str(src), "name", "needs letters or digits to make a file name from")]
        )

    target_dir = community_dir or community_profiles_dir()
    target = target_dir / f"{slug}.yaml"
    existing = {e.name: e for e in profile_entries()}
    if slug in existing or target.exists():
        where = existing[slug].path if slug in existing else target
        raise ConfigError(
            f"a profile named '{slug}' already exists ({where}); refusing to overwrite it. "
            f"Give this one another name (e.g. '{slug}-2' or add the date) and submit again",
            source=str(src),
        )

    text = src.read_text(encoding="utf-8")
    if data["name"] != slug:
        text, n = _NAME_LINE.subn(f"name: {slug}", text, count=1)
        if n != 1 or (yaml.safe_load(text) or {}).get("name") != slug:
            text = yaml.safe_dump({**data, "name": slug}, sort_keys=False, allow_unicode=True)
    profile, issues = parse_profile(yaml.safe_load(text), str(target))
    if issues or profile is None:
        raise ProfileError(issues)

    target_dir.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as fh:  # "x": never overwrite, even in a race
        fh.write(text)
    checksum = file_sha256(target)
    side = checksum_path(target)
    side.write_text(f"{checksum}  {target.name}\n", encoding="utf-8")
    return Submission(slug, target, checksum, side, profile)

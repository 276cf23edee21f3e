"""asv.conf.json is checked against asv itself, so that no key is silently ignored.

asv 0.6 ships no JSON schema: ``asv.config.Config.from_json`` copies every
key of the file onto a ``Config`` object, so a misspelt key is simply never
read. The keys asv knows are the attributes ``Config()`` sets, the keys asv's
own modules read with ``getattr(conf, "...")`` (``build_cache_size``) and the
file-format ``version``.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "asv.conf.json"


def _known_keys() -> dict[str, object]:
    """Every asv configuration key with its default (``None`` when asv has none)."""
    import asv
    from asv.config import Config

    known: dict[str, object] = dict(vars(Config()))
    pattern = re.compile(r"getattr\(\s*(?:conf|config|self\._conf)\s*,\s*['\"](\w+)['\"]")
    for source in Path(asv.__file__).parent.rglob("*.py"):
        for key in pattern.findall(source.read_text(encoding="utf-8")):
            known.setdefault(key, None)
    known["version"] = Config.api_version
    return known


@pytest.fixture(scope="module")
def raw() -> dict[str, object]:
    return json.loads(CONF.read_text())


def test_every_key_is_one_asv_reads(raw):
    known = _known_keys()
    unknown = {k: difflib.get_close_matches(k, list(known), n=1) for k in raw if k not in known}
    assert not unknown, f"asv.conf.json keys asv never reads (nearest known key): {unknown}"


def test_values_have_the_type_asv_expects(raw):
    known = _known_keys()
    for key, value in raw.items():
        default = known[key]
        if default is None or key == "branches":
            continue
        expected = (int, float) if isinstance(default, (int, float)) else type(default)
        assert isinstance(value, expected), f"{key}: expected {expected}, got {value!r}"


def test_asv_loads_it_and_the_paths_are_where_eebench_keeps_them():
    from asv.config import Config

    conf = Config.load(str(CONF))
    assert conf.repo == "." and conf.branches == ["main"] and conf.environment_type == "virtualenv"
    assert (ROOT / conf.benchmark_dir / "__init__.py").is_file()
    # results and HTML under results/ (git-ignored), environments under .asv/ (git-ignored)
    assert Path(conf.results_dir).parts[:2] == ("results", "asv")
    assert Path(conf.html_dir).parts[:3] == ("results", "asv", "html")
    assert Path(conf.env_dir).parts[0] == ".asv"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "results/*" in ignored and ".asv/" in ignored


def test_environments_install_the_cpu_torch_then_the_project():
    from asv.config import Config
    from asv.environment import iter_matrix

    conf = Config.load(str(CONF))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    combos = list(iter_matrix(conf.environment_type, [python], conf))
    assert combos, "the requirement matrix gives no environment"
    for combo in combos:
        reqs = {key[1]: value for key, value in combo.items() if key[0] == "req"}
        assert reqs == {"torch": "2.13.0"}
    # the project is installed from the wheel built for each commit, its own version forced
    assert any("{wheel_file}" in c for c in conf.install_command)
    assert all("{build_cache_dir}" in c and "--no-deps" in c for c in conf.build_command)

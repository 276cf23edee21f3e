"""Finding a suite from what a user types: a path, or a built-in name."""

from __future__ import annotations

import pytest

from eebench.errors import ConfigError
from eebench.suites.locate import builtin_suites, resolve_suite


def test_a_folder_named_like_a_builtin_suite_does_not_hide_it(tmp_path, monkeypatch):
    """``eebench run quick`` in a folder that holds ``quick/`` (e.g. its results) runs the
    built-in suite instead of trying to read the folder as a suite file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()
    assert resolve_suite("quick") == builtin_suites()["quick"]


def test_a_suite_file_path_wins_over_the_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    assert resolve_suite("mine.yaml").resolve() == (tmp_path / "mine.yaml").resolve()


def test_a_missing_yaml_path_and_a_typo_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="suite file not found"):
        resolve_suite("nope.yaml")
    with pytest.raises(ConfigError, match="Did you mean 'quick'"):
        resolve_suite("quik")

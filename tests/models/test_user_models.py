"""User models named by a factory spec, the public register_model decorator, and models from
installed packages' ``eebench.models`` entry points; every bad spec gets one clear error."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import eebench
from eebench import cli
from eebench.errors import ConfigError
from eebench.models import MODELS, MultiExitModel, create_model, list_models, resolve_model_spec
from eebench.models import entry_points as eps
from eebench.models.user import ModelSpecError

NET = textwrap.dedent(
    """
    import torch
    from torch import nn
    import eebench

    def build(num_classes, input_shape, width=4):
        backbone = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
        )
        return eebench.attach_exits(backbone, ["1"], num_classes=num_classes, input_shape=input_shape)

    def plain(num_classes, input_shape):
        return nn.Linear(3, num_classes)

    def broken(num_classes, input_shape):
        widths = {"a": 1}
        return widths["b"]

    def wrong_classes(num_classes, input_shape):
        return build(num_classes + 1, input_shape)

    CONSTANT = 3
    """
)


@pytest.fixture
def net_dir(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(NET)
    return tmp_path


def test_a_file_factory_builds_relative_to_base_dir_and_records_an_absolute_name(net_dir):
    model = resolve_model_spec("net.py:build", {"width": 6}, 5, (1, 8, 8), base_dir=net_dir)
    assert isinstance(model, MultiExitModel) and model.num_exits == 2
    assert model.metadata.name == f"{(net_dir / 'net.py').resolve()}:build"
    assert model.metadata.config == {"width": 6}
    assert model.backbone[0].out_channels == 6  # the config reached the factory
    with torch.no_grad():
        assert [tuple(o.shape) for o in model(torch.zeros(3, 1, 8, 8))] == [(3, 5), (3, 5)]
    # the recorded name rebuilds the same model from anywhere (checkpoints and the cache use it)
    again = create_model(model.metadata.name, num_classes=5, input_shape=(1, 8, 8), width=6)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_a_module_factory_builds(net_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(net_dir))
    model = create_model("net:build", num_classes=3, input_shape=(1, 8, 8))
    assert model.metadata.name == "net:build" and model.num_classes == 3


@pytest.mark.parametrize(
    ("spec", "config", "needles"),
    [
        ("missing.py:build", {}, ["missing.py", "does not exist", "relative path"]),
        ("net.py:biuld", {}, ["no function 'biuld'", "did you mean 'build'", "plain"]),
        ("net.py:CONSTANT", {}, ["'CONSTANT'", "int, not a function"]),
        (
            "net.py:plain",
            {},
            ["torch.nn.modules.linear.Linear", "not an eebench MultiExitModel", "attach_exits"],
        ),
        (
            "net.py:broken",
            {},
            [
                "raised KeyError: 'b'",
                "traceback from your code",
                'widths["b"]',
                "net.py",
                "end of your traceback",
            ],
        ),
        ("net.py:build", {"widht": 3}, ["config key 'widht'", "did you mean 'width'"]),
        ("net.py:wrong_classes", {}, ["asked for 10 classes", "built a model for 11 classes"]),
        (
            "no_such_pkg.models:build",
            {},
            ["module 'no_such_pkg.models'", "not found", "PYTHONPATH"],
        ),
        ("net.py:", {}, ["not 'package.module:function'"]),
    ],
)
def test_every_bad_spec_gets_one_clear_error(net_dir, spec, config, needles):
    with pytest.raises(ModelSpecError) as info:
        resolve_model_spec(spec, config, 10, (1, 8, 8), base_dir=net_dir)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    if not any("traceback" in n for n in needles):
        assert "traceback" not in str(info.value)  # only the user's own errors carry one


def test_an_import_error_in_the_users_file_shows_their_line(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\n\nx = 1 / 0\n")
    with pytest.raises(ModelSpecError) as info:
        resolve_model_spec("bad.py:build", {}, 10, (1, 8, 8), base_dir=tmp_path)
    msg = str(info.value)
    assert "importing model file" in msg and "ZeroDivisionError" in msg
    assert 'bad.py", line 3' in msg and "x = 1 / 0" in msg
    assert "eebench/models/user.py" not in msg  # eebench's own frames are left out


def test_an_edited_file_is_imported_again(tmp_path):
    (tmp_path / "n.py").write_text(NET)
    first = resolve_model_spec("n.py:build", {}, 10, (1, 8, 8), base_dir=tmp_path)
    (tmp_path / "n.py").write_text(NET.replace("width=4", "width=5"))
    second = resolve_model_spec("n.py:build", {}, 10, (1, 8, 8), base_dir=tmp_path)
    assert first.backbone[0].out_channels == 4 and second.backbone[0].out_channels == 5


@pytest.fixture
def clean_registry():
    """Remove what a test registers (the registry is process-wide)."""
    before = set(MODELS.names())
    failed = dict(eps.FAILED)
    state = dict(eps._state)
    yield
    for name in set(MODELS.names()) - before:
        del MODELS._items[name]
    eps.FAILED.clear()
    eps.FAILED.update(failed)
    eps._state.update(state)


def test_register_model_from_user_code(net_dir, clean_registry):
    sys.path.insert(0, str(net_dir))
    try:
        import net  # noqa: PLC0415
    finally:
        sys.path.remove(str(net_dir))

    @eebench.register_model("my-user-net")
    def my_user_net(num_classes, input_shape, width=4):
        return net.build(num_classes, input_shape, width)

    @eebench.register_model
    def another_user_net(num_classes, input_shape):
        return net.build(num_classes, input_shape)

    assert {"my-user-net", "another-user-net"} <= set(list_models())
    model = create_model("my-user-net", num_classes=4, input_shape=(1, 8, 8), width=3)
    assert model.metadata.name == "my-user-net" and model.num_classes == 4
    with pytest.raises(ValueError, match="already registered"):
        eebench.register_model("my-user-net")(my_user_net)
    with pytest.raises(ValueError, match="contains ':'"):
        eebench.register_model("a:b")(my_user_net)


def _fake_entry_points(monkeypatch, entries: list[tuple[str, str]]) -> None:
    real = importlib.metadata.entry_points

    def entry_points(group=None, **kw):
        if group != eps.GROUP:
            return real(group=group, **kw)
        return [importlib.metadata.EntryPoint(n, v, eps.GROUP) for n, v in entries]

    monkeypatch.setattr(eps.importlib.metadata, "entry_points", entry_points)
    eps._state["loaded"] = False


def test_entry_points_add_models_to_the_listing_and_the_registry(
    net_dir, monkeypatch, clean_registry, capsys
):
    monkeypatch.syspath_prepend(str(net_dir))
    (net_dir / "zoo_pkg.py").write_text(
        "import eebench\nimport net\n\n"
        "@eebench.register_model('zoo-net')\n"
        "def zoo_net(num_classes, input_shape):\n"
        "    return net.build(num_classes, input_shape, width=2)\n"
    )
    _fake_entry_points(
        monkeypatch,
        [("ep-net", "net:build"), ("zoo", "zoo_pkg"), ("ep-broken", "no_such_module_xyz:build")],
    )
    names = list_models()
    assert {"ep-net", "zoo-net"} <= set(names) and "ep-broken" not in names
    assert create_model("ep-net", num_classes=3, input_shape=(1, 8, 8)).num_exits == 2
    assert (
        create_model("zoo-net", num_classes=3, input_shape=(1, 8, 8)).backbone[0].out_channels == 2
    )
    with pytest.raises(ModelSpecError, match="entry point 'ep-broken = no_such_module_xyz:build'"):
        create_model("ep-broken", num_classes=3, input_shape=(1, 8, 8))
    assert cli.main(["list", "models", "--input-shape", "1,8,8", "--filter", "*-net"]) == 0
    out = capsys.readouterr().out
    assert "ep-net" in out and "zoo-net" in out
    assert cli.main(["list", "models", "--input-shape", "1,8,8", "--filter", "ep-*"]) == 0
    broken = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ep-broken")]
    assert len(broken) == 1 and "not loaded: entry point 'ep-broken" in broken[0]


def test_check_names_accepts_a_factory_spec_and_entry_point_models(net_dir):
    from eebench.suites import parse_suite
    from eebench.suites.names import check_names

    spec = parse_suite({"name": "s", "models": [{"name": "net.py:build"}]}, "s.yaml")
    check_names(spec, "s.yaml")  # resolved when built, not by name
    bad = parse_suite({"name": "s", "models": [{"name": "msdnett"}]}, "s.yaml")
    with pytest.raises(ConfigError, match="did you mean 'msdnet'"):
        check_names(bad, "s.yaml")


def test_the_training_cache_key_follows_the_model_files_content(tmp_path):
    from eebench.models.user import canonical_model_name
    from eebench.training import TrainConfig, cache_key

    (tmp_path / "n.py").write_text(NET)
    name = canonical_model_name("n.py:build", tmp_path)

    def key() -> str:
        return cache_key(name, {}, 10, (1, 8, 8), "fingerprint", TrainConfig())

    first = key()
    (tmp_path / "n.py").write_text(NET.replace("width=4", "width=5"))
    assert key() != first  # an edited model file is trained again, not served from the cache
    (tmp_path / "n.py").write_text(NET)
    assert key() == first
    assert cache_key("msdnet", {}, 10, (1, 8, 8), "fingerprint", TrainConfig()) != first

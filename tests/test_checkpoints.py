"""Checkpoints and the cache: exact round-trip, clear errors for damaged or mismatched files, reuse."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from eebench.data import get_splits
from eebench.errors import CheckpointError, ConfigError
from eebench.training import (
    CheckpointCache,
    TrainConfig,
    create_seeded_model,
    load_checkpoint,
    read_checkpoint,
    train_model,
)
from eebench.training.atomic import atomic_write

CONFIG = TrainConfig(scheme="cascade", epochs=1, batch_size=32, lr=1e-2)
MODEL = {"width": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def splits():
    return get_splits("digits", seed=0, limit=300)


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    model = create_seeded_model(
        "cascade", MODEL, splits.num_classes, splits.input_shape, CONFIG.seed
    )
    result = train_model(model, splits, CONFIG, progress=False, checkpoint_path=path)
    return model, result, path


def test_round_trip_gives_identical_logits_and_metadata(trained, splits):
    model, result, path = trained
    loaded, info = load_checkpoint(
        path,
        model_name="cascade",
        model_config=MODEL,
        dataset_fingerprint=splits.fingerprint,
        train_config=CONFIG,
    )
    with torch.no_grad():
        for a, b in zip(model.forward_all(splits.test.x), loaded.forward_all(splits.test.x)):
            assert torch.equal(a, b)
    assert info.complete and info.model_name == "cascade" and info.model_config == MODEL
    assert info.num_classes == 10 and info.input_shape == (1, 8, 8)
    assert info.train_config == CONFIG and info.dataset_fingerprint == splits.fingerprint
    assert info.test_accuracy == result.test_accuracy and info.val_accuracy == result.val_accuracy
    assert len(info.test_accuracy) == model.num_exits and info.eebench_version
    assert [r.to_dict() for r in info.result.history] == [r.to_dict() for r in result.history]
    # plain weights-only loading works: metadata is JSON types only
    payload = torch.load(path, weights_only=True)
    json.dumps(payload["meta"])


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"dataset_fingerprint": "0" * 20}, "dataset_fingerprint"),
        ({"model_config": {"width": 8}}, "model_config.width"),
        ({"model_name": "big-little"}, "model_name"),
        ({"train_config": CONFIG.replace(epochs=2)}, "train_config.epochs"),
        ({"input_shape": (1, 16, 16)}, "input_shape"),
    ],
)
def test_mismatched_checkpoint_names_the_differing_field(trained, asked, field):
    _, _, path = trained
    with pytest.raises(CheckpointError, match=rf"does not match what was asked: {field} is"):
        load_checkpoint(path, **asked)


def test_corrupted_and_truncated_files_get_a_clear_error(trained, tmp_path):
    _, _, path = trained
    data = path.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": b"not a checkpoint at all" * 10,
        "empty.pt": b"",
    }
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(
            CheckpointError, match=r"corrupt or truncated.*delete it and train again"
        ) as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a valid eebench checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_model_are_refused(trained, tmp_path):
    _, _, path = trained
    payload = torch.load(path, weights_only=True)
    payload["meta"]["model"]["config"] = {"width": 8}  # claims another architecture
    bad = tmp_path / "wrong.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="do not fit model 'cascade'"):
        load_checkpoint(bad)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


# ----------------------------------------------------------------------------- cache
def test_cache_trains_once_then_reuses(splits, tmp_path, monkeypatch):
    cache = CheckpointCache(tmp_path / "cache")
    model, info = cache.get_or_train("cascade", MODEL, splits, CONFIG, progress=False)
    assert not info.reused and info.complete and info.path.parent == tmp_path / "cache"

    def no_training(*args, **kwargs):
        raise AssertionError("the cache retrained a model it already holds")

    monkeypatch.setattr("eebench.training.cache.train_model", no_training)
    again, info2 = cache.get_or_train("cascade", MODEL, splits, CONFIG, progress=False)
    assert info2.reused and info2.path == info.path and info2.test_accuracy == info.test_accuracy
    with torch.no_grad():
        assert torch.equal(model.forward_all(splits.val.x)[-1], again.forward_all(splits.val.x)[-1])
    # anything that changes the weights is another entry
    other = get_splits("digits", seed=1, limit=300)
    assert cache.path_for("cascade", MODEL, other, CONFIG) != info.path
    assert cache.path_for("cascade", MODEL, splits, CONFIG.replace(lr=0.02)) != info.path
    assert cache.path_for("cascade", {"width": 5}, splits, CONFIG) != info.path
    assert [e.path for e in cache.entries()] == [info.path]


def test_cache_retrains_an_interrupted_entry_and_reports_a_damaged_one(splits, tmp_path):
    cache = CheckpointCache(tmp_path)
    path = cache.path_for("cascade", MODEL, splits, CONFIG)
    model = create_seeded_model("cascade", MODEL, splits.num_classes, splits.input_shape, 0)
    from eebench.training.checkpoint import save_checkpoint
    from eebench.training.trainer import TrainResult

    save_checkpoint(
        path, model, splits, CONFIG, TrainResult(scheme="cascade", phases=[])
    )  # incomplete
    assert cache.get("cascade", MODEL, splits, CONFIG) is None
    _, info = cache.get_or_train("cascade", MODEL, splits, CONFIG, progress=False)
    assert info.complete and not info.reused
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        cache.get_or_train("cascade", MODEL, splits, CONFIG, progress=False)


# ----------------------------------------------------------------------------- CLI
def _cli(argv: list[str]) -> int:
    from eebench.training.commands import add_commands

    parser = argparse.ArgumentParser(prog="eebench")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub, sub.add_parser("list").add_subparsers(dest="what"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_command_prints_per_exit_accuracy_and_writes_checkpoint_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "cascade",
        "--config",
        "width=4",
        "--data",
        "limit=300",
        "--scheme",
        "cascade",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert _cli(argv) == 0
    text = capsys.readouterr().out
    assert "test_acc" in text and "scheme cascade" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["test_accuracy"]) == 3 and len(metrics["exits"]) == 3
    assert metrics["dataset"]["fingerprint"] == get_splits("digits", limit=300).fingerprint
    _, info = read_checkpoint(out / "checkpoint.pt")
    assert info.test_accuracy == metrics["test_accuracy"]
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        _cli(argv)
    with pytest.raises(ConfigError, match="unknown training option"):
        _cli([*argv, "--force", "--train", "temprature=3"])

"""A user's network in a real suite: a model defined in a file outside the package runs to a
complete bundle and report; its weights round-trip through a plain state_dict with
``training: none``; a backbone's weights with ``training: heads`` keep the final exit as it was;
every bad input is one error naming the suite file and field, exit 2, and no run folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from eebench import cli
from eebench.results import Run
from eebench.suites.runner import RunOptions, run_suite
from eebench.training import read_checkpoint

NET = textwrap.dedent(
    """
    from torch import nn
    import eebench

    def backbone(num_classes, channels, width=6):
        return nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
        )

    def build(num_classes, input_shape, width=6):
        net = backbone(num_classes, input_shape[0], width)
        return eebench.attach_exits(net, ["2", "5"], num_classes=num_classes, input_shape=input_shape)

    def plain(num_classes, input_shape):
        return backbone(num_classes, input_shape[0])

    def broken(num_classes, input_shape):
        return build(num_classes, input_shape, width=undefined_width)

    def wrong_exit(num_classes, input_shape):
        net = backbone(num_classes, input_shape[0])
        return eebench.attach_exits(net, ["2", "50"], num_classes=num_classes, input_shape=input_shape)

    class Gate(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    def untraceable(num_classes, input_shape):
        net = nn.Sequential(Gate(), backbone(num_classes, input_shape[0]))
        return eebench.attach_exits(net, ["1.2"], num_classes=num_classes, input_shape=input_shape)

    class Liar(eebench.MultiExitModel):
        family = "intermediate"

        def __init__(self, num_classes, input_shape):
            super().__init__(num_classes, input_shape)
            self.stages.append(nn.Conv2d(input_shape[0], 4, 1))
            self.stages.append(nn.Conv2d(4, 4, 1))
            for _ in range(2):
                self.exits.append(nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes)))

        def forward_all(self, x):
            return super().forward_all(x)[::-1]

    def liar(num_classes, input_shape):
        return Liar(num_classes, input_shape)
    """
)

TRAINING = {"scheme": "joint", "epochs": 5, "lr": 0.01, "batch_size": 32}


def suite(model: dict) -> dict:
    return {
        "name": "mine",
        "dataset": {"name": "digits", "seed": 0, "options": {"limit": 300}},
        "models": [{"id": "mine", **model}],
        "policies": [{"name": "threshold", "thresholds": {"start": 0, "stop": 1, "num": 11}}],
        "baselines": ["oracle", "final-only"],
        "calibration": {"accuracy_within": [0.05], "budget_fractions": [0.9]},
        "backends": ["torch-cpu"],
        "measurement": {
            "warmup": 1,
            "min_repeats": 3,
            "min_time_s": 0.0,
            "max_time_s": 0.2,
            "adaptive": False,
            "energy": False,
        },
        "validation": {"samples": 10, "repeats": 1},
    }


def write(folder: Path, data: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path, root: Path, run_id: str, report: bool = False) -> Run:
    out = run_suite(
        str(path),
        RunOptions(
            out_root=root / "results",
            cache_root=root / "cache",
            run_id=run_id,
            progress=False,
            report=report,
        ),
    )
    return Run.open(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The user's model trained by a suite run from a temporary folder (outside the package)."""
    root = tmp_path_factory.mktemp("user-suite")
    (root / "net.py").write_text(NET)
    path = write(root, suite({"name": "net.py:build", "training": TRAINING}))
    return root, run(path, root, "trained", report=True)


def test_a_model_from_a_file_outside_the_package_runs_to_a_complete_bundle(trained):
    root, bundle = trained
    assert bundle.status == "complete" and bundle.verify() == []
    assert (bundle.path / "report" / "report.html").is_file()
    assert (bundle.path / "report" / "report.md").is_file()
    exits = bundle.table("exits")
    assert sorted(exits["exit"].unique()) == [0, 1, 2]
    costs = bundle.table("stage_costs")
    macs = costs[(costs.source_kind == "analytic") & (costs.metric == "macs")]
    assert sorted(macs[macs.part == "stage"]["index"]) == [0, 1, 2] and (macs["value"] > 0).all()
    assert bundle.table("operating_points")["model"].eq("mine").all()
    info = bundle.manifest["steps"]["train:mine"]["info"]["checkpoint"]
    assert info["model"]["name"] == f"{(root / 'net.py').resolve()}:build"


def _exit_rows(bundle: Run) -> pd.DataFrame:
    cols = ["split", "sample_id", "exit", "label", "prediction", "max_softmax"]
    return bundle.table("exits")[cols].sort_values(cols[:3]).reset_index(drop=True)


def _trained_state(root: Path) -> dict[str, torch.Tensor]:
    (path,) = (root / "cache" / "checkpoints").glob("*net.py_build-*.pt")
    return read_checkpoint(path)[0]


def test_plain_state_dict_round_trip_with_training_none_gives_the_same_exit_record(trained):
    root, bundle = trained
    torch.save(_trained_state(root), root / "weights.pt")  # a plain state_dict, no eebench meta
    path = write(
        root,
        suite({"name": "net.py:build", "training": "none", "checkpoint": "weights.pt"}),
        "none.yaml",
    )
    again = run(path, root, "none")
    assert again.status == "complete"
    pd.testing.assert_frame_equal(_exit_rows(again), _exit_rows(bundle))
    info = again.manifest["steps"]["train:mine"]["info"]["checkpoint"]
    assert info["weights"]["part"] == "model" and len(info["weights"]["sha256"]) == 64
    assert "result" not in info  # nothing was trained


def test_backbone_weights_with_training_heads_keep_the_final_exit(trained):
    from eebench.models import resolve_model_spec

    root, bundle = trained
    model = resolve_model_spec("net.py:build", {}, 10, (1, 8, 8), base_dir=root)
    model.load_state_dict(_trained_state(root))
    torch.save(model.backbone.state_dict(), root / "backbone.pt")
    training = {"scheme": "heads", "epochs": 1, "lr": 0.01, "batch_size": 32}
    path = write(
        root,
        suite(
            {
                "name": "net.py:build",
                "training": training,
                "checkpoint": {"backbone": "backbone.pt"},
            }
        ),
        "heads.yaml",
    )
    heads = run(path, root, "heads")
    assert heads.status == "complete"
    got, want = _exit_rows(heads), _exit_rows(bundle)
    final = got["exit"] == 2
    pd.testing.assert_frame_equal(got[final], want[final])  # the frozen backbone's own classifier
    assert not got[~final]["max_softmax"].equals(want[~final]["max_softmax"])  # new heads
    info = heads.manifest["steps"]["train:mine"]["info"]["checkpoint"]
    assert info["weights"]["part"] == "backbone" and info["result"]["phases"] == ["heads"]


def _corrupt(root: Path) -> str:
    (root / "corrupt.pt").write_bytes(b"not a torch file at all")
    return "corrupt.pt"


def _truncated(root: Path) -> str:
    torch.save({"w": torch.zeros(100)}, root / "full.pt")
    data = (root / "full.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    return "truncated.pt"


def _other_architecture(root: Path) -> str:
    torch.save(
        {"stages.0.0.weight": torch.zeros(3, 1, 3, 3), "fc.weight": torch.zeros(1)},
        root / "other.pt",
    )
    return "other.pt"


@pytest.mark.parametrize(
    ("model", "field", "needles"),
    [
        ({"name": "nowhere.py:build"}, "models[0].name", ["does not exist"]),
        ({"name": "net.py:biuld"}, "models[0].name", ["did you mean 'build'"]),
        (
            {"name": "net.py:plain"},
            "models[0].name",
            ["not an eebench MultiExitModel", "attach_exits"],
        ),
        (
            {"name": "net.py:broken"},
            "models[0].name",
            ["NameError", "traceback from your code", "undefined_width"],
        ),
        ({"name": "net.py:wrong_exit"}, "models[0].name", ["exit '50' is not a submodule", "'5'"]),
        ({"name": "net.py:untraceable"}, "models[0].name", ["cannot be traced", "submodule '0'"]),
        ({"name": "net.py:liar"}, "models[0].name", ["breaks the model contract", "check-model"]),
        (
            {"name": "net.py:build", "config": {"widht": 3}},
            "models[0].config",
            ["did you mean 'width'"],
        ),
        (
            {"name": "net.py:build", "training": "none", "checkpoint": _corrupt},
            "models[0].checkpoint",
            ["corrupt, truncated"],
        ),
        (
            {"name": "net.py:build", "training": "none", "checkpoint": _truncated},
            "models[0].checkpoint",
            ["corrupt, truncated"],
        ),
        (
            {"name": "net.py:build", "training": "none", "checkpoint": _other_architecture},
            "models[0].checkpoint",
            [
                "missing keys (21): exits.0.head.2.bias",
                "and 13 more",
                "unexpected keys (1): fc.weight",
                "'stages.0.0.weight' is (3, 1, 3, 3) in the file but (6, 1, 3, 3)",
            ],
        ),
        (
            {"name": "msdnet", "training": "none", "checkpoint": {"backbone": "x.pt"}},
            "models[0].checkpoint",
            ["no weights file"],
        ),
        (
            {"name": "net.py:build", "training": "none"},
            "models[0]",
            ["training: none", "checkpoint"],
        ),
    ],
)
def test_every_bad_input_is_one_clear_error_and_leaves_no_run(
    tmp_path, capsys, model, field, needles
):
    (tmp_path / "net.py").write_text(NET)
    model = dict(model)
    if callable(model.get("checkpoint")):
        model["checkpoint"] = model["checkpoint"](tmp_path)
    path = write(tmp_path, suite(model))
    out = tmp_path / "results"
    code = cli.main(["run", str(path), "--out", str(out), "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{path}: {field}" in err or f"{path}: {field}." in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists() or not any(out.rglob("manifest.json")), "a run folder was left behind"

"""The ``eebench`` command as a shell user meets it: help without imports, closed pipes,
redirected output, where files land, ONNX export and the cached model table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eebench import cli

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["EEBENCH_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def _subcommands(parser) -> dict[str, str]:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {a.dest: a.help for a in action._choices_actions}


# ----------------------------------------------------------------- the static command table
def test_the_command_table_matches_what_the_modules_add():
    full = cli.build_parser()
    assert _subcommands(full) == {name: text for name, (_, text) in cli.COMMANDS.items()}
    list_sub = full._defaults["_list_sub"]
    assert {a.dest: a.help for a in list_sub._choices_actions} == {
        name: text for name, (_, text) in cli.LIST_COMMANDS.items()
    }
    # the module named for a command is the one that adds it (it has a function to run)
    for name, (module, _) in cli.COMMANDS.items():
        if module is None:
            continue
        parser = cli.build_parser([name])
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        assert sub.choices[name]._defaults or any(
            a.__class__.__name__ == "_SubParsersAction" for a in sub.choices[name]._actions
        ), f"{name}: {module} does not add it"
    for name in cli.LIST_COMMANDS:
        parser = cli.build_parser(["list", name])
        assert "func" in parser._defaults["_list_sub"].choices[name]._defaults, name


def test_help_imports_no_command_module(tmp_path):
    code = (
        "import sys\nfrom eebench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'eebench.models', 'numpy') "
        "if m in sys.modules)\nprint('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    for name in cli.COMMANDS:
        assert name in out.stdout  # every command is listed with its help line


# ----------------------------------------------------------------- a reader that went away
@pytest.mark.parametrize(
    "command",
    [["results", "list", "--root", "{tmp}"], ["list", "suites"], ["list", "policies"]],
)
def test_closed_pipe_ends_quietly(command, tmp_path):
    argv = [c.format(tmp=tmp_path) for c in command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "eebench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
    )
    proc.stdout.close()  # like `| head -0`: nothing will ever be read
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


# ----------------------------------------------------------------- redirected output
def test_progress_bars_only_on_a_terminal(monkeypatch, tmp_path):
    from eebench.suites import commands

    seen = {}

    def fake_run_suite(suite, options):
        seen["progress"] = options.progress

    monkeypatch.setattr("eebench.suites.runner.run_suite", fake_run_suite)

    class Terminal:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    with open(tmp_path / "log.txt", "w") as redirected:
        monkeypatch.setattr(sys, "stderr", redirected)
        assert cli.main(["run", "quick", "--out", str(tmp_path)]) == 0
        assert seen["progress"] is False
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert cli.main(["run", "quick", "--out", str(tmp_path)]) == 0
    assert seen["progress"] is True
    assert cli.main(["run", "quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen["progress"] is False
    assert commands.show_progress_bars(False) is True


# ----------------------------------------------------------------- profile measure's file
def test_profile_measure_writes_beside_the_profiles_not_here(monkeypatch, tmp_path):
    import eebench.profiles.locate as locate
    import eebench.profiles.measure as measure

    community = tmp_path / "hardware_profiles" / "community"
    here = tmp_path / "somewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(locate, "community_profiles_dir", lambda: community)
    monkeypatch.setattr(
        measure, "measure_profile", lambda name, **kw: {"name": name, "threads": kw["threads"]}
    )
    assert cli.main(["profile", "measure", "--name", "my-host", "--threads", "1"]) == 0
    assert (community / "measured" / "my-host.yaml").is_file()
    assert list(here.iterdir()) == []
    out = tmp_path / "elsewhere" / "mine.yaml"
    assert cli.main(["profile", "measure", "--name", "x", "--threads", "1", "--out", str(out)]) == 0
    assert out.is_file()


# ----------------------------------------------------------------- export
def test_export_writes_the_checkpoints_graphs(tmp_path, capsys):
    import onnxruntime as ort
    import torch

    from eebench.backends.onnx_export import model_hash
    from eebench.models import create_model

    torch.manual_seed(3)
    model = create_model("branchynet-lenet", num_classes=10, input_shape=(1, 16, 16)).eval()
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    argv = ["export", "branchynet-lenet", "--format", "onnx", "--input-shape", "1,16,16"]
    assert cli.main([*argv, "--checkpoint", str(weights), "--out", str(tmp_path / "x")]) == 0
    folder = tmp_path / "x" / model_hash(model)  # the folder is keyed by these exact weights
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["stages"]) == len(model.stages)
    assert len(manifest["exits"]) == model.num_exits
    # the first stage's graph computes what the model's first stage computes
    x = torch.rand(2, 1, 16, 16)
    session = ort.InferenceSession(str(folder / manifest["stages"][0]["file"]))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model.stages[0](x)
    want = want[0] if isinstance(want, tuple) else want
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)
    assert str(folder) in capsys.readouterr().out
    assert cli.main([*argv, "--checkpoint", str(tmp_path / "none.pt")]) == 2


# ----------------------------------------------------------------- list models' cache
def test_list_models_cached_table_is_the_built_one_without_torch(tmp_path):
    env = _env(tmp_path)
    argv = [sys.executable, "-m", "eebench", "list", "models", "--filter", "big-little"]
    first = subprocess.run([*argv, "--input-shape", "1,16,16"], capture_output=True, env=env)
    code = (
        "import sys\nfrom eebench.cli import main\n"
        "main(['list', 'models', '--filter', 'big-little', '--input-shape', '1,16,16'])\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    built = subprocess.run(
        [*argv, "--input-shape", "1,16,16", "--no-cache"], capture_output=True, env=env
    )
    assert first.returncode == second.returncode == built.returncode == 0
    assert first.stdout == built.stdout
    assert second.stdout.decode() == first.stdout.decode() + "TORCH False\n"
    # another input shape is another table
    other = subprocess.run([*argv, "--input-shape", "1,32,32"], capture_output=True, env=env)
    assert other.stdout != first.stdout


def test_train_draws_bars_only_on_a_terminal(monkeypatch, tmp_path):
    """``eebench train`` redirected to a file gets no bar redraws (as ``eebench run``)."""
    seen = []

    def fake_train_model(model, splits, config, *, progress, **kwargs):
        seen.append(progress)

    monkeypatch.setattr("eebench.training.trainer.train_model", fake_train_model)
    args = ["train", "branchynet-lenet", "--dataset", "digits", "--epochs", "1"]
    with open(tmp_path / "log.txt", "w") as redirected:
        monkeypatch.setattr(sys, "stderr", redirected)
        cli.main([*args, "--out", str(tmp_path / "a")])
    assert seen == [False]

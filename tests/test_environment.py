"""Environment capture: CPU model from cpuinfo fixtures (x86 and ARM), frequency from a cpufreq
fixture, the board model, package versions, git state and the JSON round trip."""

import json
import subprocess

import pytest

from eebench.measure.environment import (
    Environment,
    board_model,
    capture_environment,
    cpu_frequency,
    cpu_model,
    git_state,
)

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
processor\t: 1
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
"""

ARM = """processor\t: 0
BogoMIPS\t: 62.50
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""


def test_cpu_model_from_x86_and_arm_cpuinfo(tmp_path):
    (tmp_path / "x86").write_text(X86)
    (tmp_path / "arm").write_text(ARM)
    assert cpu_model(tmp_path / "x86") == "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"
    assert cpu_model(tmp_path / "arm") == "ARM implementer 0x41 part 0xd42"


def test_cpu_frequency_and_governor_from_cpufreq(tmp_path):
    base = tmp_path / "devices/system/cpu/cpu0/cpufreq"
    base.mkdir(parents=True)
    (base / "scaling_cur_freq").write_text("1510400\n")
    (base / "cpuinfo_max_freq").write_text("1510400\n")
    (base / "cpuinfo_min_freq").write_text("115200\n")
    (base / "scaling_governor").write_text("schedutil\n")
    freq, governor = cpu_frequency(tmp_path)
    assert freq == {"current": 1510.4, "min": 115.2, "max": 1510.4}
    assert governor == "schedutil"


def test_board_model_from_the_device_tree(tmp_path):
    (tmp_path / "device-tree").mkdir()
    (tmp_path / "device-tree" / "model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert board_model(tmp_path) == "NVIDIA Jetson Orin Nano Developer Kit"


def test_capture_describes_this_machine_and_round_trips(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86)
    env = capture_environment(proc_root=tmp_path)
    assert env.cpu_model.startswith("Intel(R) Core(TM) i7-8700")
    assert env.cores_logical and env.cores_logical >= 1
    assert env.packages["torch"] and env.packages["onnxruntime"] and env.packages["eebench"]
    assert "torch_threads" in env.threads
    assert env.python.split()[1].count(".") == 2
    back = Environment.from_dict(json.loads(json.dumps(env.to_dict())))
    assert back == env


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_git_commit_and_dirty_flag_of_a_checkout(tmp_path, tmp_path_factory):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    (tmp_path / "f.txt").write_text("a")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    commit, dirty = git_state(tmp_path)
    assert commit and len(commit) == 40 and dirty is False
    (tmp_path / "f.txt").write_text("b")
    assert git_state(tmp_path) == (commit, True)
    assert git_state(tmp_path_factory.mktemp("not-a-checkout")) == (None, None)

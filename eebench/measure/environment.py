"""What machine and software a number was measured on, captured with the number.

Everything is read when :func:`capture_environment` is called (never at
import): CPU model and core counts, CPU frequency where the kernel exposes it,
OS, Python and package versions, thread settings, the CUDA device and driver,
the board model on Jetson-like devices, and the git commit (with a dirty flag)
when eebench runs from a checkout. Paths to /proc and /sys are parameters so
the readers are tested against fixture files.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("eebench", "torch", "onnxruntime", "onnx", "numpy", "pandas", "scikit-learn", "fvcore")
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass(frozen=True)
class CudaInfo:
    """The CUDA device a run used (or could use) and its driver."""

    device: str
    compute_capability: str
    memory_bytes: int
    runtime: str | None
    driver: str | None
    cudnn: int | None


@dataclass(frozen=True)
class Environment:
    """The machine and software behind a measurement."""

    captured_at: str
    hostname: str
    os: str
    kernel: str
    machine: str
    python: str
    cpu_model: str
    cores_logical: int | None
    cores_physical: int | None
    cpu_freq_mhz: dict[str, float] = field(default_factory=dict)
    cpu_governor: str | None = None
    board: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)
    cuda: CudaInfo | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    cpu_vendor: str | None = None
    cpu_flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Environment:
        d = dict(d)
        if d.get("cuda") is not None:
            d["cuda"] = CudaInfo(**d["cuda"])
        return cls(**d)


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name from /proc/cpuinfo (x86 ``model name``; ARM ``Hardware``/``CPU part``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "processor", "cpu model"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    if "cpu implementer" in fields:
        return f"ARM implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    return platform.processor() or platform.machine() or "unknown"


_VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel", "0x41": "ARM", "0x4e": "NVIDIA"}

# instruction-set flags that change how fast the same operator runs (SIMD width, FMA,
# VNNI/AMX matrix units; NEON/SVE on ARM): what a host profile is compared on
SPEED_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
)


def _cpuinfo_fields(cpuinfo: str | Path) -> dict[str, str]:
    """The first value of every key of /proc/cpuinfo (lower-case keys); empty when unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_vendor(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU vendor (``AMD``, ``Intel``, ``ARM``, or /proc/cpuinfo's raw id), None if unknown."""
    fields = _cpuinfo_fields(cpuinfo)
    raw = fields.get("vendor_id") or fields.get("cpu implementer")
    return _VENDORS.get(raw, raw) if raw else None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The speed-relevant instruction-set flags (:data:`SPEED_FLAGS`) the CPU reports, sorted."""
    fields = _cpuinfo_fields(cpuinfo)
    have = set((fields.get("flags") or fields.get("features") or "").split())
    return sorted(f for f in SPEED_FLAGS if f in have)


def cpu_frequency(sys_root: str | Path = "/sys") -> tuple[dict[str, float], str | None]:
    """cpu0's current/min/max frequency in MHz from cpufreq, and its governor."""
    base = Path(sys_root) / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    freq: dict[str, float] = {}
    for key, name in (
        ("current", "scaling_cur_freq"),
        ("min", "cpuinfo_min_freq"),
        ("max", "cpuinfo_max_freq"),
    ):
        with suppress(OSError, ValueError):
            freq[key] = int((base / name).read_text().strip()) / 1e3  # kHz -> MHz
    if not freq:
        try:
            import psutil

            f = psutil.cpu_freq()
            if f is not None and f.current:
                freq = {"current": float(f.current), "min": float(f.min), "max": float(f.max)}
        except (ImportError, OSError, NotImplementedError):
            pass
    try:
        governor: str | None = (base / "scaling_governor").read_text().strip()
    except OSError:
        governor = None
    return freq, governor


def board_model(proc_root: str | Path = "/proc") -> str | None:
    """The board name from the device tree (Jetson, Raspberry Pi, ...), if any."""
    for path in (
        Path(proc_root) / "device-tree" / "model",
        Path("/sys/firmware/devicetree/base/model"),
    ):
        try:
            return path.read_text().strip("\x00\n ") or None
        except OSError:
            continue
    return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def thread_settings() -> dict[str, Any]:
    """torch's thread counts and the environment variables that change them."""
    out: dict[str, Any] = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    if "torch" in sys.modules:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def cuda_info() -> CudaInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return CudaInfo(
        device=props.name,
        compute_capability=f"{props.major}.{props.minor}",
        memory_bytes=int(props.total_memory),
        runtime=torch.version.cuda,
        driver=_nvidia_driver(),
        cudnn=torch.backends.cudnn.version(),
    )


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # nvidia-ml-py absent or NVML not usable: fall back to the proc file
        pass
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    parts = [p for p in line.split() if p[:1].isdigit() and "." in p]
    return parts[0] if parts else line.strip()


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout containing ``path`` (default: the eebench package), or
    (None, None) when it is not in a git checkout or git is missing."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return commit.stdout.strip() or None, dirty


def capture_environment(
    proc_root: str | Path = "/proc",
    sys_root: str | Path = "/sys",
    git_path: str | Path | None = None,
) -> Environment:
    """Describe this machine and software now."""
    import psutil

    freq, governor = cpu_frequency(sys_root)
    commit, dirty = git_state(git_path)
    uname = platform.uname()
    return Environment(
        captured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        os=platform.platform(),
        kernel=uname.release,
        machine=uname.machine,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        cpu_model=cpu_model(Path(proc_root) / "cpuinfo"),
        cores_logical=psutil.cpu_count(logical=True),
        cores_physical=psutil.cpu_count(logical=False),
        cpu_freq_mhz=freq,
        cpu_governor=governor,
        board=board_model(proc_root),
        packages=package_versions(),
        threads=thread_settings(),
        cuda=cuda_info(),
        git_commit=commit,
        git_dirty=dirty,
        cpu_vendor=cpu_vendor(Path(proc_root) / "cpuinfo"),
        cpu_flags=cpu_flags(Path(proc_root) / "cpuinfo"),
    )

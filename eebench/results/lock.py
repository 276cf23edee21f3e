"""One process per run: a lock file in the run folder, created atomically.

Two processes resuming the same run would both redo the missing steps and
race on the manifest. The lock file is created with ``O_CREAT | O_EXCL`` (so
exactly one process wins) and names its holder (pid, host, start time). A
lock whose holder is gone - same host, pid no longer alive - is stale (a
killed run): it is taken over with a message. A lock held by a live process,
or by a process on another host (which cannot be checked from here), is
refused with the way out.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eebench.errors import RunLocked

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(folder: Path) -> dict[str, Any] | None:
    """The holder recorded in ``folder``'s lock file; ``{}`` when unreadable, None when absent."""
    try:
        text = (folder / LOCK_NAME).read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_is_live(holder: dict[str, Any] | None) -> bool:
    """Whether a recorded holder may still be working (another host counts as live)."""
    if holder is None:
        return False
    if not holder:  # written half (killed between create and write): nobody holds it
        return False
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    return isinstance(pid, int) and _pid_alive(pid)


def describe_holder(holder: dict[str, Any]) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(since {holder.get('since', '?')})"
    )


@dataclass
class RunLock:
    """The lock of one run folder, held by this process until :meth:`release`."""

    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self, log: Callable[[str], None] | None = None) -> RunLock:
        """Take the lock, taking over a stale one; RunLocked when a live process holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.folder)
                if lock_is_live(holder):
                    assert holder is not None
                    raise RunLocked(
                        f"{self.folder}: another process is working on this run: "
                        f"{describe_holder(holder)}. Wait for it to finish; if that process is "
                        f"gone (e.g. on another machine), remove {self.path} and try again"
                    ) from None
                if log is not None:
                    who = describe_holder(holder) if holder else "an unreadable lock"
                    log(
                        f"{self.folder}: taking over a stale lock of {who}: that process is no "
                        "longer running"
                    )
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(holder))
            return self
        raise RunLocked(
            f"{self.folder}: could not take the lock {self.path} (other processes keep taking it); "
            "make sure only one process works on this run"
        )

    def release(self) -> None:
        """Remove the lock if it is still ours (never someone else's that took over)."""
        holder = read_lock(self.folder)
        if (
            holder
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
        ):
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_NAME", "RunLock", "describe_holder", "lock_is_live", "read_lock"]

"""eebench's exception hierarchy: every error a user can cause says what, where and how to fix.

The CLI prints these as one line (no traceback) and exits with ``exit_code``.
"""

from __future__ import annotations


class EEBenchError(Exception):
    """Base class of errors caused by input (files, names, configs, data) rather than bugs."""

    exit_code = 2


class ConfigError(EEBenchError, ValueError):
    """A suite, profile or model config that does not validate.

    ``source`` is the file (or other origin), ``field`` the dotted field path.
    """

    def __init__(self, message: str, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DataError(EEBenchError):
    """A dataset that is missing or malformed; the message says where eebench looked."""


class CheckpointError(EEBenchError):
    """A checkpoint that is corrupt, truncated or does not match what was asked for."""


class ResultsError(EEBenchError):
    """A results bundle that cannot be written or read safely (exists, checksum mismatch, ...)."""


class ResumeRefused(ResultsError):
    """``--resume`` of a run that another suite, another code version or another process owns.

    Raised before anything is written, so the run stays exactly as it was.
    """


class RunLocked(ResultsError):
    """A run folder that another live process is working on (its lock file names it)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what state the run was left in and how to resume.

    A ``KeyboardInterrupt`` (so ``except KeyboardInterrupt`` still catches it) that carries the
    run's state for the command line to print instead of a bare "interrupted".
    """


class BackendUnavailable(EEBenchError):
    """A backend that cannot run on this machine; ``reason`` is recorded in the results."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend '{backend}' is not available here: {reason}")

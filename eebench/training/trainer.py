"""``train_model``: run a scheme's phases on a model, deterministically, with per-epoch checkpoints.

Determinism on the CPU: the model is built under ``torch.manual_seed(seed)``
(:func:`create_seeded_model`), shuffling and augmentation draw from one
seeded ``torch.Generator``, anything else random (dropout) from the global
generator seeded inside ``fork_rng`` (the caller's random state is restored
afterwards). The CPU kernels training uses are deterministic for a fixed
thread count, so a seed gives bit-identical weights (a test holds this);
``torch.use_deterministic_algorithms`` is not toggled: it is process-global
and pulls in the inductor stack (seconds of import) for no gain on the CPU.

When ``checkpoint_path`` is given, a checkpoint is written atomically after
every epoch (marked incomplete) and once more at the end (complete, with the
final per-exit val and test accuracy). An interrupt (Ctrl-C, a kill) can only
ever lose the epoch in progress: the file on disk is always a whole checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eebench.data import DatasetSplits
from eebench.errors import ConfigError
from eebench.models import MultiExitModel, create_model
from eebench.training.config import TrainConfig
from eebench.training.loop import EpochRecord, exit_accuracy, run_phase
from eebench.training.schemes import get_scheme


@dataclass
class TrainResult:
    """What training produced: the per-epoch history and every exit's final val/test accuracy."""

    scheme: str
    phases: list[str]
    history: list[EpochRecord] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "phases": list(self.phases),
            "history": [r.to_dict() for r in self.history],
            "val_accuracy": list(self.val_accuracy),
            "test_accuracy": list(self.test_accuracy),
            "seconds": self.seconds,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(
            scheme=data["scheme"],
            phases=list(data["phases"]),
            history=[EpochRecord.from_dict(r) for r in data["history"]],
            val_accuracy=[float(a) for a in data["val_accuracy"]],
            test_accuracy=[float(a) for a in data["test_accuracy"]],
            seconds=float(data["seconds"]),
            complete=bool(data["complete"]),
        )


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for the duration; the caller's random state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (``None``: leave as is); restore afterwards."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"expected a positive integer, got {threads!r}", field="threads")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def create_seeded_model(
    name: str, config: dict[str, Any], num_classes: int, input_shape: Sequence[int], seed: int
) -> MultiExitModel:
    """Build a registered model with its initial weights fixed by ``seed``."""
    with seeded(seed):
        return create_model(name, num_classes=num_classes, input_shape=tuple(input_shape), **config)


def check_compatible(model: MultiExitModel, splits: DatasetSplits) -> None:
    """The model must have been built for the dataset's classes and input shape."""
    name = model.metadata.name
    if model.num_classes != splits.num_classes:
        raise ConfigError(
            f"model '{name}' has {model.num_classes} classes but dataset '{splits.name}' has "
            f"{splits.num_classes}; build it with num_classes={splits.num_classes}",
            field="num_classes",
        )
    if tuple(model.input_shape) != tuple(splits.input_shape):
        raise ConfigError(
            f"model '{name}' expects input {model.input_shape} but dataset '{splits.name}' gives "
            f"{splits.input_shape}; build it with input_shape={splits.input_shape}",
            field="input_shape",
        )


def train_model(
    model: MultiExitModel,
    splits: DatasetSplits,
    config: TrainConfig,
    *,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``splits.train`` with ``config.scheme``; report every exit on val and test.

    The model is left in eval mode. With ``checkpoint_path``, a checkpoint is
    saved atomically after every epoch and at the end (see module docstring).
    ``threads`` sets torch's intra-op thread count for the duration (restored
    after); on a busy machine one thread is often faster than oversubscribing.
    """
    from eebench.training.checkpoint import save_checkpoint

    scheme = get_scheme(config.scheme)
    scheme.check(model)
    check_compatible(model, splits)
    phases = scheme.phases(model, config)
    result = TrainResult(scheme=config.scheme, phases=[p.name for p in phases])
    started = time.perf_counter()

    def save(record: EpochRecord | None = None) -> None:
        if record is not None:
            result.history.append(record)
        result.seconds = time.perf_counter() - started
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, splits, config, result)

    with seeded(config.seed), thread_count(threads):
        generator = torch.Generator().manual_seed(config.seed)
        for phase in phases:
            run_phase(
                model,
                splits,
                config,
                phase,
                generator=generator,
                progress=progress,
                on_epoch_end=save,
            )
        result.val_accuracy = exit_accuracy(model, splits.val)
        result.test_accuracy = exit_accuracy(model, splits.test)
    result.complete = True
    save()
    model.eval()
    return result

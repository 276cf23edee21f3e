"""The training loop shared by every scheme: a scheme is a list of phases, a phase is run here.

A :class:`Phase` says which modules learn, which stay frozen and what the
loss is. Frozen modules have ``requires_grad`` off *and* are in eval mode, so
neither their weights nor their BatchNorm running statistics change: "frozen"
means bit-identical. After every epoch the loop measures every exit's
accuracy on val and hands the record to a callback (which saves a checkpoint).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from eebench.data import DatasetSplits, Split, iterate_batches, num_batches
from eebench.models import MultiExitModel
from eebench.training.config import TrainConfig

EVAL_BATCH_SIZE = 512

# loss(model, x, y) -> (scalar loss, {exit index: logits}) ; the logits feed the progress accuracy
LossFn = Callable[[MultiExitModel, Tensor, Tensor], tuple[Tensor, dict[int, Tensor]]]


@dataclass
class Phase:
    """One stretch of training: these modules learn with this loss for ``epochs`` epochs."""

    name: str
    epochs: int
    train_modules: list[nn.Module]
    loss: LossFn
    frozen_modules: list[nn.Module] = field(default_factory=list)
    start: Callable[[], None] | None = None  # runs when the phase begins (e.g. snapshot a teacher)


@dataclass
class EpochRecord:
    """What one epoch did: mean train loss, running train accuracy of the exits it trained
    (``None`` for the others) and every exit's val accuracy after the epoch."""

    phase: str
    epoch: int
    train_loss: float
    train_accuracy: list[float | None]
    val_accuracy: list[float]
    lr: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        return cls(**data)


def _unique_params(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def build_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_at(config: TrainConfig, epoch: int, step: int, total_steps: int, epochs: int) -> float:
    """The learning rate at a step of a phase (cosine per step, step decay per epoch)."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    if config.schedule == "step":
        size = config.step_size or max(1, epochs // 3)
        return config.lr * config.gamma ** (epoch // size)
    return config.lr


@torch.no_grad()
def exit_accuracy(
    model: MultiExitModel, split: Split, batch_size: int = EVAL_BATCH_SIZE
) -> list[float]:
    """Top-1 accuracy of every exit on ``split`` (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros(model.num_exits, dtype=torch.long)
        for x, y in iterate_batches(split, batch_size):
            for i, out in enumerate(model.forward_all(x)):
                correct[i] += (out.argmax(1) == y).sum()
        return [float(c) / max(len(split), 1) for c in correct]
    finally:
        model.train(was_training)


def _fmt(values: Iterable[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:.3f}" for v in values)


def run_phase(
    model: MultiExitModel,
    splits: DatasetSplits,
    config: TrainConfig,
    phase: Phase,
    *,
    generator: torch.Generator,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> list[EpochRecord]:
    """Train one phase; returns one record per epoch. Shuffling and augmentation draw from
    ``generator``; the train split is augmented per ``splits.augmentation``, val never."""
    from tqdm import tqdm

    params = _unique_params(phase.train_modules)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    if phase.start is not None:
        phase.start()
    optimizer = build_optimizer(config, params)
    per_epoch = num_batches(len(splits.train), config.batch_size, drop_singleton=True)
    total = per_epoch * phase.epochs
    records: list[EpochRecord] = []
    bar = tqdm(
        total=total,
        desc=phase.name,
        file=sys.stderr,
        disable=not progress,
        leave=True,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    step = 0
    try:
        for epoch in range(phase.epochs):
            started = time.perf_counter()
            model.train()
            for m in phase.frozen_modules:
                m.eval()
            loss_sum, seen = 0.0, 0
            correct = torch.zeros(model.num_exits, dtype=torch.long)
            trained: set[int] = set()
            lr = config.lr
            batches = iterate_batches(
                splits.train,
                config.batch_size,
                shuffle=True,
                generator=generator,
                augmentation=splits.augmentation,
                drop_singleton=True,
            )
            for x, y in batches:
                lr = lr_at(config, epoch, step, total, phase.epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, logits = phase.loss(model, x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach()) * y.shape[0]
                seen += y.shape[0]
                for i, out in logits.items():
                    trained.add(i)
                    correct[i] += (out.detach().argmax(1) == y).sum()
                train_acc = [
                    float(correct[i]) / seen if i in trained else None
                    for i in range(model.num_exits)
                ]
                bar.set_postfix_str(
                    f"ep {epoch + 1}/{phase.epochs} loss {loss_sum / seen:.4f} acc {_fmt(train_acc)}"
                )
                bar.update(1)
            val = exit_accuracy(model, splits.val)
            record = EpochRecord(
                phase=phase.name,
                epoch=epoch + 1,
                train_loss=loss_sum / max(seen, 1),
                train_accuracy=[
                    float(correct[i]) / seen if i in trained and seen else None
                    for i in range(model.num_exits)
                ],
                val_accuracy=val,
                lr=lr,
                seconds=time.perf_counter() - started,
            )
            records.append(record)
            bar.set_postfix_str(
                f"ep {epoch + 1}/{phase.epochs} loss {record.train_loss:.4f} val {_fmt(val)}"
            )
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
    return records

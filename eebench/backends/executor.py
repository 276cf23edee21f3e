"""The true early-exit executor: inference that stops at the first exit whose decision fires.

It runs any prepared model (any backend) under any exit decider (any policy),
in one of two modes:

* ``per-sample`` — one sample at a time (batch 1). After each stage the exit
  head runs, its logits are copied to the host (the only host sync per exit
  evaluated) and the decider says whether to leave; when it fires nothing
  further runs for that sample. This is the latency a deployed early-exit
  network sees.
* ``batched`` — batch shrinking: a batch runs stage by stage; after each exit
  the rows that leave are dropped from the state (``select``/index_select)
  and the rest go on, so later stages run on fewer rows.

A third mode, ``parts``, is the per-sample loop that does not stop: every
sample runs every stage, head, host copy and decision, each timed where it
runs (after the parts before it, as in a true early-exit run). It measures
the parts a per-sample run is predicted from, with the same code and clock.

Two baselines use the same loop and the same clock: ``aggregation`` (every
stage and every exit head run for every sample, the decision applied
afterwards, so predictions equal the early-exit ones) and ``backbone``
(the plain network: the stages given as ``plain_stages`` and only the final
head — every stage for intermediate classifiers and multi-scale networks, a
cascade's last member alone from the raw input, see
:func:`eebench.costs.plain.plain_network`), at batch 1 or at the batch size
of the batched run they are compared with.

Latency is per sample, from the moment its input is on the device (after
``to_input``) until its exit decision (in a batch: from the batch's start);
the decision overhead (time inside ``decider.decide``) is recorded per exit. At batch
1 the latency is also split into consecutive clock intervals per exit
(``part_ns``): stage (with the loop's own step), head with its host copy,
decision; they sum to the sample's latency exactly. On an asynchronous device
the stage interval only launches work and the host copy waits for it.
The clock is injectable and its name is recorded with the result (see
:data:`eebench.measure.timing.CLOCKS`). The predicted latency of the same run
is the sum, per sample, of the measured latencies of the stages and heads it
executed (:func:`eebench.measure.parts.predict_latency`).

Backends do not know about policies: the executor only needs the
:class:`ExitDecider` protocol defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from eebench.backends.base import PreparedModel
from eebench.errors import EEBenchError
from eebench.measure.timing import DEFAULT_CLOCK, Clock, clock_name

MODES = ("per-sample", "batched", "aggregation", "backbone", "parts")
PART_KINDS = ("stage", "head", "decision")
"""The three intervals of ``ExecutionResult.part_ns`` per sample and exit, in this order."""


@runtime_checkable
class ExitDecider(Protocol):
    """An online exit decision, as a policy provides it for chosen thresholds.

    ``reset(batch_size)`` starts a new batch (per-sample mode: a batch of one).
    ``decide(exit_index, logits, active)`` gets the logits ``(B_active, C)``
    of the rows still in the batch and their row indices in the original
    batch; it returns a boolean mask ``(B_active,)``: True = leave here.
    The final exit always leaves: ``decide`` is not called there.
    """

    def reset(self, batch_size: int) -> None: ...

    def decide(self, exit_index: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray: ...


class DeciderError(EEBenchError, ValueError):
    """A decider returned something other than one boolean per active row."""


@dataclass
class ExecutionResult:
    """What an executor run produced, per sample and per exit.

    ``latency_ns[k]`` is sample k's measured latency; ``decision_ns[e]`` the
    total time spent in ``decide`` at exit e over ``decision_calls[e]`` calls.
    ``part_ns[k, e]`` (per-sample and ``parts`` modes; None otherwise) is sample
    k's time at exit e in each of :data:`PART_KINDS`, zero where it did not run.
    """

    mode: str
    predictions: np.ndarray
    exit_indices: np.ndarray
    latency_ns: np.ndarray
    decision_ns: np.ndarray
    decision_calls: np.ndarray
    batch_size: int
    num_exits: int
    backend: dict[str, Any] = field(default_factory=dict)
    wall_ns: int = 0
    clock: str = "wall"
    part_ns: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def mean_latency_ns(self) -> float:
        return float(self.latency_ns.mean())

    @property
    def decision_overhead_us(self) -> np.ndarray:
        """Mean time per ``decide`` call at each exit, in microseconds (NaN where never called)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.decision_calls > 0,
                self.decision_ns / np.maximum(self.decision_calls, 1) / 1e3,
                np.nan,
            )

    @property
    def exit_fractions(self) -> np.ndarray:
        counts = np.bincount(self.exit_indices, minlength=self.num_exits)
        return counts / max(self.num_samples, 1)

    @property
    def source(self) -> str:
        """``measured:<backend>``, or what the backend says (``estimated:<profile>``)."""
        return str(self.backend.get("source") or f"measured:{self.backend.get('backend', '?')}")

    def accuracy(self, labels: np.ndarray) -> float:
        return float((self.predictions == np.asarray(labels)).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "num_exits": self.num_exits,
            "backend": dict(self.backend),
            "predictions": self.predictions.tolist(),
            "exit_indices": self.exit_indices.tolist(),
            "latency_ns": self.latency_ns.tolist(),
            "decision_ns": self.decision_ns.tolist(),
            "decision_calls": self.decision_calls.tolist(),
            "wall_ns": self.wall_ns,
            "clock": self.clock,
            "part_ns": None if self.part_ns is None else self.part_ns.tolist(),
        }

    @classmethod
    def concatenate(cls, results: Sequence[ExecutionResult]) -> ExecutionResult:
        """One result for runs over consecutive slices of the inputs (same executor and mode):
        per-sample arrays joined in order, decision totals and wall times summed."""
        if not results:
            raise ValueError("concatenate: no results")
        first = results[0]
        for r in results[1:]:
            if (r.mode, r.num_exits, r.batch_size, r.clock) != (
                first.mode,
                first.num_exits,
                first.batch_size,
                first.clock,
            ):
                raise ValueError(
                    "concatenate: results differ in mode, exits, batch size or clock: "
                    f"{(first.mode, first.num_exits, first.batch_size, first.clock)} vs "
                    f"{(r.mode, r.num_exits, r.batch_size, r.clock)}"
                )
        parts = [r.part_ns for r in results]
        return cls(
            first.mode,
            np.concatenate([r.predictions for r in results]),
            np.concatenate([r.exit_indices for r in results]),
            np.concatenate([r.latency_ns for r in results]),
            np.sum([r.decision_ns for r in results], axis=0),
            np.sum([r.decision_calls for r in results], axis=0),
            first.batch_size,
            first.num_exits,
            dict(first.backend),
            int(sum(r.wall_ns for r in results)),
            first.clock,
            None if any(p is None for p in parts) else np.concatenate(parts),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecutionResult:
        return cls(
            mode=d["mode"],
            predictions=np.asarray(d["predictions"], dtype=np.int64),
            exit_indices=np.asarray(d["exit_indices"], dtype=np.int64),
            latency_ns=np.asarray(d["latency_ns"], dtype=np.int64),
            decision_ns=np.asarray(d["decision_ns"], dtype=np.int64),
            decision_calls=np.asarray(d["decision_calls"], dtype=np.int64),
            batch_size=int(d["batch_size"]),
            num_exits=int(d["num_exits"]),
            backend=dict(d.get("backend", {})),
            wall_ns=int(d.get("wall_ns", 0)),
            clock=str(d.get("clock", "wall")),
            part_ns=None
            if d.get("part_ns") is None
            else np.asarray(d["part_ns"], dtype=np.int64).reshape(-1, int(d["num_exits"]), 3),
        )


class EarlyExitExecutor:
    """Runs a prepared model under an exit decider; see the module docstring for the modes."""

    def __init__(
        self,
        prepared: PreparedModel,
        decider: ExitDecider | None = None,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        self.prepared = prepared
        self.decider = decider
        self.clock = clock

    def run(
        self,
        x: Any,
        mode: str = "per-sample",
        batch_size: int | None = None,
        *,
        plain_stages: Sequence[int] | None = None,
    ) -> ExecutionResult:
        """Run every sample of ``x`` (N x C x H x W, host) in ``mode``.

        ``batch_size`` applies to ``batched`` mode (default: all of ``x`` at
        once) and to the ``aggregation`` and ``backbone`` baselines (default 1,
        so they compare with per-sample mode); ``per-sample`` and ``parts`` are
        always batch 1.
        ``plain_stages`` (``backbone`` mode only, required there) are the stages
        the plain network runs, ``plain_network(model).stages``: the backend
        does not know the model's family, and a cascade's plain network is its
        last member alone.
        """
        if mode not in MODES:
            raise ValueError(f"unknown executor mode '{mode}'; expected one of {MODES}")
        if mode in ("per-sample", "batched", "parts") and self.decider is None:
            raise ValueError(f"mode '{mode}' needs an exit decider")
        n = int(x.shape[0])
        E = self.prepared.num_stages
        plain = _check_plain_stages(plain_stages, E) if mode == "backbone" else ()
        preds = np.zeros(n, dtype=np.int64)
        exits = np.zeros(n, dtype=np.int64)
        latency = np.zeros(n, dtype=np.int64)
        dec_ns = np.zeros(E, dtype=np.int64)
        dec_calls = np.zeros(E, dtype=np.int64)
        out = (preds, exits, latency, dec_ns, dec_calls)
        one = mode in ("per-sample", "parts")
        part_ns = np.zeros((n, E, len(PART_KINDS)), dtype=np.int64) if one else None
        bs = 1 if one else int(batch_size or (n if mode == "batched" else 1))
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        step = {
            "per-sample": partial(self._early_exit_sample, parts=part_ns, through=False),
            "parts": partial(self._early_exit_sample, parts=part_ns, through=True),
            "batched": self._early_exit_batch,
            "aggregation": self._aggregation_batch,
            "backbone": partial(self._backbone_batch, stages=plain),
        }[mode]
        with self.prepared.activated():
            t_start = self.clock()
            for lo in range(0, n, bs):
                step(x[lo : lo + bs], lo, out)
            wall = self.clock() - t_start
            describe = self.prepared.describe()
        return ExecutionResult(
            mode,
            preds,
            exits,
            latency,
            dec_ns,
            dec_calls,
            bs,
            E,
            describe,
            int(wall),
            clock_name(self.clock),
            part_ns,
        )

    # ------------------------------------------------------------------ modes
    def _decide(
        self,
        e: int,
        logits: np.ndarray,
        active: np.ndarray,
        dec_ns: np.ndarray,
        dec_calls: np.ndarray,
    ) -> np.ndarray:
        decider = cast(ExitDecider, self.decider)
        t0 = self.clock()
        mask = decider.decide(e, logits, active)
        dec_ns[e] += self.clock() - t0
        dec_calls[e] += 1
        return self._check_mask(e, mask, logits.shape[0])

    def _early_exit_sample(
        self,
        xb: Any,
        offset: int,
        out: tuple[np.ndarray, ...],
        parts: np.ndarray,
        through: bool,
    ) -> None:
        """Batch 1, kept lean: per exit one stage, one head, one host copy, one decision and
        three clock reads, kept in a list and turned into ``parts`` after the sample is done.

        ``through`` (``parts`` mode) goes on through every exit after the decision fired; the
        sample still leaves, and answers, where it fired first.
        """
        preds, exits, latency, dec_ns, dec_calls = out
        p = self.prepared
        clock = self.clock
        decider = cast(ExitDecider, self.decider)
        last = p.num_stages - 1
        active = np.zeros(1, dtype=np.int64)
        decider.reset(1)
        state = (p.to_input(xb),)
        marks = [clock()]
        mark = marks.append
        e = 0
        fired = -1
        while True:
            state = p.run_stage(e, state)
            mark(clock())
            logits = p.to_numpy(p.run_exit(e, state))
            mark(clock())
            if e == last:  # the final exit always leaves: no decision to make
                break
            fire = decider.decide(e, logits, active)
            mark(clock())
            if not (isinstance(fire, np.ndarray) and fire.shape == (1,) and fire.dtype == np.bool_):
                fire = self._check_mask(e, fire, 1)
            if fire[0] and fired < 0:
                fired, answer = e, logits
                if not through:
                    break
            e += 1
        if fired >= 0:
            e, logits = fired, answer
        t = np.diff(np.asarray(marks, dtype=np.int64))
        row = parts[offset].reshape(-1)
        row[: t.size] = t
        k = (len(marks) - 1) // 3  # decisions made: one per exit passed before the final one
        dec_ns[:k] += parts[offset, :k, 2]
        dec_calls[:k] += 1
        latency[offset] = (marks[3 * e + 3] if e < last else marks[-1]) - marks[0]
        if e == last and getattr(decider, "overrides_final", False):  # SDN: most confident answers
            preds[offset] = int(decider.final_predictions(logits, active)[0])
        else:
            preds[offset] = int(logits[0].argmax())
        exits[offset] = e

    def _check_mask(self, e: int, mask: Any, rows: int) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape != (rows,) or mask.dtype != np.bool_:
            raise DeciderError(
                f"{type(self.decider).__name__}.decide(exit {e}) returned shape {mask.shape} dtype "
                f"{mask.dtype}; expected a boolean array of shape ({rows},), one per active row"
            )
        return mask

    def _early_exit_batch(self, xb: Any, offset: int, out: tuple[np.ndarray, ...]) -> None:
        preds, exits, latency, dec_ns, dec_calls = out
        p = self.prepared
        last = p.num_stages - 1
        b = int(xb.shape[0])
        self.decider.reset(b)  # type: ignore[union-attr]
        active = np.arange(b)
        state = (p.to_input(xb),)
        t0 = self.clock()
        for e in range(p.num_stages):
            state = p.run_stage(e, state)
            logits = p.to_numpy(p.run_exit(e, state))
            if e == last:  # the final exit always leaves: no decision to make
                mask = np.ones(logits.shape[0], dtype=bool)
            else:
                mask = self._decide(e, logits, active, dec_ns, dec_calls)
            now = self.clock()
            if mask.any():
                rows = active[mask]
                if e == last and getattr(self.decider, "overrides_final", False):
                    preds[offset + rows] = self.decider.final_predictions(logits, active)  # type: ignore[union-attr]
                else:
                    preds[offset + rows] = logits[mask].argmax(axis=1)
                exits[offset + rows] = e
                latency[offset + rows] = now - t0
            if mask.all():
                return
            if mask.any():
                keep = np.flatnonzero(~mask)
                state = p.select(state, keep)
                active = active[keep]

    def _aggregation_batch(self, xb: Any, offset: int, out: tuple[np.ndarray, ...]) -> None:
        """Every stage and head on the whole batch; the decision is applied afterwards, exit by
        exit on the rows not yet decided, so the predictions equal the early-exit ones."""
        preds, exits, latency, dec_ns, dec_calls = out
        p = self.prepared
        last = p.num_stages - 1
        b = int(xb.shape[0])
        state = (p.to_input(xb),)
        t0 = self.clock()
        logits = []
        for e in range(p.num_stages):
            state = p.run_stage(e, state)
            logits.append(p.to_numpy(p.run_exit(e, state)))
        chosen = np.full(b, last, dtype=np.int64)
        if self.decider is not None:
            self.decider.reset(b)
            active = np.arange(b)
            for e in range(last):
                mask = self._decide(e, logits[e][active], active, dec_ns, dec_calls)
                chosen[active[mask]] = e
                active = active[~mask]
                if active.size == 0:
                    break
        latency[offset : offset + b] = self.clock() - t0
        stacked = np.stack(logits, axis=1)  # (b, E, C)
        preds[offset : offset + b] = stacked[np.arange(b), chosen].argmax(axis=1)
        if self.decider is not None and getattr(self.decider, "overrides_final", False):
            rows = np.flatnonzero(chosen == last)  # no exit fired: the decider gives the answer
            if rows.size:
                preds[offset + rows] = self.decider.final_predictions(logits[last][rows], rows)
        exits[offset : offset + b] = chosen

    def _backbone_batch(
        self, xb: Any, offset: int, out: tuple[np.ndarray, ...], stages: tuple[int, ...]
    ) -> None:
        """The plain network: ``stages`` from the raw input, then only the final head."""
        preds, exits, latency, _, _ = out
        p = self.prepared
        b = int(xb.shape[0])
        state = (p.to_input(xb),)
        t0 = self.clock()
        for e in stages:
            state = p.run_stage(e, state)
        logits = p.to_numpy(p.run_exit(p.num_stages - 1, state))
        latency[offset : offset + b] = self.clock() - t0
        preds[offset : offset + b] = logits.argmax(axis=1)
        exits[offset : offset + b] = p.num_stages - 1


def _check_plain_stages(plain_stages: Sequence[int] | None, num_stages: int) -> tuple[int, ...]:
    """The plain network's stages: ``k..num_stages - 1`` for some ``k`` (stage ``k`` reads the raw
    input: ``k = 0`` for a shared backbone, the last stage for a cascade)."""
    if plain_stages is None:
        raise ValueError(
            "mode 'backbone' needs plain_stages=...: the stages the plain network runs, "
            "eebench.costs.plain_network(model.family, model.num_exits).stages "
            "(every stage for a shared backbone, the last member alone for a cascade)"
        )
    stages = tuple(int(i) for i in plain_stages)
    if not stages or stages != tuple(range(stages[0], num_stages)):
        raise ValueError(
            f"plain_stages must be consecutive stages ending with the last one ({num_stages - 1}), "
            f"e.g. {tuple(range(num_stages))} or ({num_stages - 1},); got {stages}"
        )
    return stages

"""Batching strategies of an early-exit server, and the plain network under the same load.

Each strategy is a worker loop: it takes requests from an :class:`~eebench.serving.inbox.Inbox`,
runs a prepared model (any backend) stage by stage under an exit decider, and answers each
request through ``respond(requests, predictions, exits)`` at the moment its answer is known.

* ``per-sample`` — one request at a time, stopping at the first exit whose decision fires
  (the executor's ``per-sample`` mode).
* ``batch-shrinking`` — a batch runs stage by stage; rows that leave are answered at once and
  dropped from the state, later stages run on the rest (the executor's ``batched`` mode).
* ``wait-for-slowest`` — a static batch: every row runs every stage until the last row has
  exited, and the whole batch is answered together (what a plain batched deployment of an
  early-exit network does).
* ``regroup`` — survivors are regrouped: a queue before each stage; a stage runs when its
  queue holds ``batch_size`` rows or its oldest row has waited ``timeout_s``. The deepest
  ready stage runs first, so work already paid for finishes first.
* ``plain`` — the plain network (no exits): the stages :func:`eebench.costs.plain_network`
  names and only the final head, on the same batches; the denominator of every saving.

A decider keeps per-row state for a batch (patience counts agreeing exits), so every batch
admitted to stage 0 gets its own decider (``decider_factory()``), and a regrouped stage asks
each batch's decider about its own rows: decisions never depend on which rows shared a call.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eebench.backends.base import NativeState, PreparedModel
from eebench.errors import ConfigError
from eebench.serving.inbox import Inbox, Request

STRATEGIES = ("per-sample", "batch-shrinking", "wait-for-slowest", "regroup", "plain")
"""Serving strategies; ``plain`` is the plain network, the baseline of the other four."""

Respond = Callable[[list[Request], np.ndarray, np.ndarray], None]
DeciderFactory = Callable[[], Any]


@dataclass
class StrategyConfig:
    """How a strategy batches: at most ``batch_size`` rows per call, waiting at most
    ``timeout_s`` for a batch (or a regrouped stage queue) to fill."""

    name: str
    batch_size: int = 1
    timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            import difflib

            close = difflib.get_close_matches(self.name, STRATEGIES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"unknown serving strategy '{self.name}'; {hint}expected one of {STRATEGIES}",
                field="serving.strategies",
            )
        if self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be >= 1, got {self.batch_size}", field="serving.batch_size"
            )
        if self.timeout_s < 0:
            raise ConfigError(
                f"timeout must be >= 0 s, got {self.timeout_s}", field="serving.timeout_ms"
            )

    @property
    def max_batch(self) -> int:
        return 1 if self.name == "per-sample" else self.batch_size


def _answer(decider: Any, e: int, last: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The class each leaving row answers at exit ``e`` (SDN's fallback at the final exit)."""
    if e == last and getattr(decider, "overrides_final", False):
        return np.asarray(decider.final_predictions(logits, active), dtype=np.int64)
    return logits.argmax(axis=1).astype(np.int64)


def _decide(decider: Any, e: int, last: int, logits: np.ndarray, active: np.ndarray) -> np.ndarray:
    if e == last:  # the final exit always leaves: no decision is made there
        return np.ones(logits.shape[0], dtype=bool)
    mask = np.asarray(decider.decide(e, logits, active))
    if mask.shape != (logits.shape[0],) or mask.dtype != np.bool_:
        raise ValueError(
            f"{type(decider).__name__}.decide(exit {e}) returned shape {mask.shape} dtype "
            f"{mask.dtype}; expected one boolean per active row ({logits.shape[0]},)"
        )
    return mask


class Worker:
    """Serves one inbox with one strategy on one prepared model until the inbox is closed."""

    def __init__(
        self,
        prepared: PreparedModel,
        config: StrategyConfig,
        x: np.ndarray,
        respond: Respond,
        decider_factory: DeciderFactory | None = None,
        plain_stages: Sequence[int] | None = None,
        engine: Any = None,
    ) -> None:
        """``engine`` (a :class:`eebench.serving.modes.Deployment`) serves a mode other than
        ``per-stage``: one graph per batch instead of a call per stage and head (``static``,
        ``fused``), or a prepared model whose parts run compiled, which the strategy then runs
        stage by stage as it runs the eager one (``compiled``)."""
        if config.name != "plain" and decider_factory is None:
            raise ValueError(f"strategy '{config.name}' needs a decider_factory")
        if config.name == "plain" and not plain_stages:
            raise ValueError("strategy 'plain' needs plain_stages (plain_network(model).stages)")
        self.prepared = prepared
        self.config = config
        self.x = x
        self.respond = respond
        self.decider_factory = decider_factory
        self.plain_stages = tuple(plain_stages or ())
        self.last = prepared.num_stages - 1
        self.engine = engine
        if engine is not None:
            from eebench.serving.modes import unsupported

            why = unsupported(engine.mode, config.name)
            if why:
                raise ValueError(f"strategy '{config.name}' in mode '{engine.mode}': {why}")
            if engine.prepared is not None:
                self.prepared = engine.prepared

    def serve(self, inbox: Inbox) -> None:
        """The worker loop (call it on the worker thread, inside ``prepared.activated()``)."""
        if self.config.name == "regroup":
            self._regroup(inbox)
            return
        step = {
            "per-sample": self._shrinking,
            "batch-shrinking": self._shrinking,
            "wait-for-slowest": self._wait_for_slowest,
            "plain": self._plain,
        }[self.config.name]
        if self.engine is not None and self.engine.run is not None:
            step = self._fused if self.engine.mode == "fused" else self._static
        while True:
            batch = inbox.batch(self.config.max_batch, self.config.timeout_s)
            if not batch:
                return
            step(batch)

    def _inputs(self, batch: list[Request]) -> Any:
        if len(batch) == 1:
            return self.prepared.to_input(self.x[batch[0].index : batch[0].index + 1])
        return self.prepared.to_input(self.x[[r.index for r in batch]])

    # ------------------------------------------------------------------ one batch at a time
    def _shrinking(self, batch: list[Request]) -> None:
        p, last = self.prepared, self.last
        decider = self.decider_factory()  # type: ignore[misc]
        decider.reset(len(batch))
        active = np.arange(len(batch))
        state: NativeState = (self._inputs(batch),)
        for e in range(p.num_stages):
            state = p.run_stage(e, state)
            logits = p.to_numpy(p.run_exit(e, state))
            mask = _decide(decider, e, last, logits, active)
            if mask.any():
                rows = np.flatnonzero(mask)
                preds = _answer(decider, e, last, logits[mask], active[mask])
                self.respond([batch[i] for i in active[rows]], preds, np.full(rows.size, e))
                if mask.all():
                    return
                keep = np.flatnonzero(~mask)
                state = p.select(state, keep)
                active = active[keep]

    def _wait_for_slowest(self, batch: list[Request]) -> None:
        p, last = self.prepared, self.last
        b = len(batch)
        decider = self.decider_factory()  # type: ignore[misc]
        decider.reset(b)
        preds = np.zeros(b, dtype=np.int64)
        exits = np.zeros(b, dtype=np.int64)
        active = np.arange(b)
        state: NativeState = (self._inputs(batch),)
        for e in range(p.num_stages):
            state = p.run_stage(e, state)  # every row, also those that have left
            logits = p.to_numpy(p.run_exit(e, state))[active]
            mask = _decide(decider, e, last, logits, active)
            if mask.any():
                preds[active[mask]] = _answer(decider, e, last, logits[mask], active[mask])
                exits[active[mask]] = e
                active = active[~mask]
            if active.size == 0:
                break
        self.respond(batch, preds, exits)

    def _static(self, batch: list[Request]) -> None:
        """Every exit in one call; the decisions follow on the host, exit by exit."""
        b, last = len(batch), self.last
        logits = self.engine.run(self.x[[r.index for r in batch]])  # (B, E, C)
        decider = self.decider_factory()  # type: ignore[misc]
        decider.reset(b)
        preds = np.zeros(b, dtype=np.int64)
        exits = np.zeros(b, dtype=np.int64)
        active = np.arange(b)
        for e in range(last + 1):
            le = logits[active, e]
            mask = _decide(decider, e, last, le, active)
            if mask.any():
                preds[active[mask]] = _answer(decider, e, last, le[mask], active[mask])
                exits[active[mask]] = e
                active = active[~mask]
            if active.size == 0:
                break
        self.respond(batch, preds, exits)

    def _fused(self, batch: list[Request]) -> None:
        """The exit decision inside the graph: the host reads the answer and its exit."""
        logits, e = self.engine.run(self.x[[r.index for r in batch]])
        self.respond(batch, logits.argmax(axis=1).astype(np.int64), np.full(len(batch), e))

    def _plain(self, batch: list[Request]) -> None:
        p = self.prepared
        state: NativeState = (self._inputs(batch),)
        for e in self.plain_stages:
            state = p.run_stage(e, state)
        logits = p.to_numpy(p.run_exit(self.last, state))
        self.respond(batch, logits.argmax(axis=1).astype(np.int64), np.full(len(batch), self.last))

    # ------------------------------------------------------------------ regrouping survivors
    def _regroup(self, inbox: Inbox) -> None:
        p, last = self.prepared, self.last
        cfg = self.config
        timeout_ns = int(cfg.timeout_s * 1e9)
        queues: list[deque[_Fragment]] = [deque() for _ in range(p.num_stages)]
        while True:
            ready = _ready_stage(queues, cfg.batch_size, timeout_ns, time.perf_counter_ns())
            if ready is None:
                pending = [q[0].since_ns + timeout_ns for q in queues if q]
                new = inbox.drain(min(pending) if pending else None)
                if new is None and not pending:
                    return
                if new:
                    self._admit(new, queues[0])
                elif new is None:  # closed: nothing more comes, run what waits at once
                    timeout_ns = 0
                continue
            new = inbox.drain(0)
            if new:
                self._admit(new, queues[0])
            self._run_stage(ready, queues, cfg.batch_size, last)

    def _admit(self, requests: list[Request], queue0: deque[_Fragment]) -> None:
        """New requests join stage 0's queue in batches of at most ``batch_size``."""
        step = self.config.batch_size
        for lo in range(0, len(requests), step):
            chunk = requests[lo : lo + step]
            decider = self.decider_factory()  # type: ignore[misc]
            decider.reset(len(chunk))
            queue0.append(
                _Fragment(
                    chunk,
                    decider,
                    np.arange(len(chunk)),
                    (self._inputs(chunk),),
                    min(r.arrival_ns for r in chunk),
                )
            )

    def _run_stage(
        self, e: int, queues: list[deque[_Fragment]], batch_size: int, last: int
    ) -> None:
        p = self.prepared
        group: list[_Fragment] = []
        rows = 0
        while queues[e] and rows < batch_size:
            frag = queues[e].popleft()
            group.append(frag)
            rows += frag.rows.size
        state = concat_states(p, [f.state for f in group])
        state = p.run_stage(e, state)
        logits = p.to_numpy(p.run_exit(e, state))
        now = time.perf_counter_ns()
        lo = 0
        for frag in group:
            n = frag.rows.size
            part = logits[lo : lo + n]
            mask = _decide(frag.decider, e, last, part, frag.rows)
            if mask.any():
                leaving = frag.rows[mask]
                preds = _answer(frag.decider, e, last, part[mask], leaving)
                self.respond([frag.requests[i] for i in leaving], preds, np.full(leaving.size, e))
            if not mask.all():
                keep = lo + np.flatnonzero(~mask)
                queues[e + 1].append(
                    _Fragment(
                        frag.requests, frag.decider, frag.rows[~mask], p.select(state, keep), now
                    )
                )
            lo += n


@dataclass
class _Fragment:
    """The rows of one admitted batch waiting before a stage: their decider (per-row state is
    indexed by ``rows``, the rows' positions in the admitted batch) and their state."""

    requests: list[Request]
    decider: Any
    rows: np.ndarray
    state: NativeState
    since_ns: int


def _ready_stage(
    queues: list[deque[_Fragment]], batch_size: int, timeout_ns: int, now_ns: int
) -> int | None:
    """The deepest stage whose queue is full or whose oldest rows waited ``timeout_ns``."""
    for e in range(len(queues) - 1, -1, -1):
        q = queues[e]
        if not q:
            continue
        if sum(f.rows.size for f in q) >= batch_size or now_ns - q[0].since_ns >= timeout_ns:
            return e
    return None


def concat_states(prepared: PreparedModel, states: list[NativeState]) -> NativeState:
    """Rows of several native states stacked into one (torch tensors or numpy arrays)."""
    if len(states) == 1:
        return states[0]
    first = states[0][0]
    if hasattr(first, "index_select"):  # torch
        import torch

        return tuple(torch.cat(parts, dim=0) for parts in zip(*states))
    if isinstance(first, np.ndarray):
        return tuple(np.concatenate(parts, axis=0) for parts in zip(*states))
    # device buffers without a concatenation from Python (ORT OrtValues): through the host
    return tuple(
        prepared.to_input(np.concatenate([prepared.to_numpy(v) for v in parts], axis=0))
        for parts in zip(*states)
    )

"""Every policy's decider drives the true early-exit executor to exactly the decisions the
vectorised evaluation predicts from the exit record: on every registered model, per sample and
with batch shrinking on torch-cpu, and with batch shrinking on onnxruntime.

Models are untrained (seeded). Untrained networks map unit-variance inputs to nearly uniform
softmax outputs, so the inputs are scaled by factors from 1 to ~30 to spread the confidences
across samples. The record's labels are the final exit's predictions, so the learned gate sees
both "right" and "wrong" at the early exits and the oracle has something to find.

Thresholds sit at midpoints between distinct scores of an exit, farther from every score than
backend rounding can move one (batch 1 vs batch 12, torch vs ONNX Runtime), so a decision can
only differ if the executor or a decider takes a different path from the vectorised evaluation.
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from eebench.backends import EarlyExitExecutor, ExecutionResult, PreparedModel, get_backend
from eebench.evaluation import ExitRecord, exit_indices, operating_points, record_exits
from eebench.models import InputShapeError, create_model, list_models
from eebench.policies import (
    LearnedGatePolicy,
    LogitsView,
    NonFiniteLogitsError,
    Policy,
    PolicyError,
    create_policy,
    list_policies,
)

SHAPES = [(1, 8, 8), (3, 32, 32), (3, 48, 48)]
N = 12
BATCH = 4
# backends and batch sizes change logits by up to ~1.5e-6 x the largest |logit| (measured on this
# registry: torch batch 1 vs 12, onnxruntime vs torch); the tolerance keeps a ~6x safety factor
LOGIT_REL_TOL = 1e-5
LOGIT_ABS_TOL = 1e-7
MODELS = list_models()


# ----------------------------------------------------------------- policies under test


def logit_tolerance(record: ExitRecord) -> np.ndarray:
    """``(N, E)``: how far backend rounding may move the logits of each sample at each exit."""
    return LOGIT_REL_TOL * np.abs(record.logits).max(axis=-1) + LOGIT_ABS_TOL


def score_tolerance(policy: Policy, record: ExitRecord) -> np.ndarray:
    """``(N, E)``: how far backend rounding may move each score. Confidence measures change by
    at most ~2x the largest logit change (4x kept); the gate's sigmoid of standardised features
    multiplies that by 0.25 * sum_k |coef_k| / scale_k of the exit."""
    tol = 4.0 * logit_tolerance(record)
    if isinstance(policy, LearnedGatePolicy):
        state = policy.state_dict()
        tol = tol * 0.25 * (np.abs(state["coef"]) / state["scale"]).sum(axis=1)
    return tol


def untied_thresholds(scores: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """One threshold per exit: the midpoint between two distinct scores of that exit nearest its
    median that is farther from every sample's score than that score's tolerance; ``inf``
    (nobody leaves there) when there is none. The final exit's entry is ignored."""
    th = np.zeros(scores.shape[1])
    for i in range(scores.shape[1] - 1):
        values = np.unique(scores[:, i])
        mids = (values[1:] + values[:-1]) / 2
        clear = (np.abs(scores[:, i, None] - mids[None, :]) > tolerance[:, i, None]).all(axis=0)
        ok = np.flatnonzero(clear)
        if ok.size == 0:
            th[i] = np.inf
            continue
        th[i] = mids[ok[np.argmin(np.abs(ok + 0.5 - (values.size - 1) / 2))]]
    return th


@dataclasses.dataclass(frozen=True)
class PolicyCase:
    """A registered policy with options, and the thresholds it runs at."""

    name: str
    policy: str
    options: dict = dataclasses.field(default_factory=dict)
    patience: float | None = None  # shared patience k; None: per-exit untied thresholds
    whole_batch_only: bool = False  # decider labels are per row of one batch (oracle)

    def build(self, record: ExitRecord) -> Policy:
        policy = create_policy(self.policy, **self.options)
        return policy.fit(record)  # learned gate: fitted on the record it is checked on

    def thresholds(self, policy: Policy, record: ExitRecord) -> np.ndarray | float | None:
        if not policy.uses_thresholds:
            return None
        if self.patience is not None:
            return self.patience
        return untied_thresholds(policy.scores(record), score_tolerance(policy, record))


POLICY_CASES = [
    PolicyCase("threshold-max_softmax", "threshold", {"confidence": "max_softmax"}),
    PolicyCase("threshold-score_margin", "threshold", {"confidence": "score_margin"}),
    PolicyCase("threshold-entropy", "threshold", {"confidence": "entropy"}),
    # Shallow-Deep Networks: a sample no exit is sure of answers with its most confident exit
    PolicyCase(
        "threshold-most-confident",
        "threshold",
        {"confidence": "max_softmax", "fallback": "most-confident"},
    ),
    PolicyCase("idk-cascade", "idk-cascade"),
    PolicyCase("patience-1", "patience", patience=1.0),
    PolicyCase("patience-2", "patience", patience=2.0),
    PolicyCase("learned-gate", "learned-gate"),
    # per-exit thresholds from a precision target, defined on the record itself
    PolicyCase("gate-classification", "gate-classification"),
    # learned accuracy-cost policies: scores are grid values of theta, untied by construction
    PolicyCase("bolukbasi-early-exit", "bolukbasi-early-exit"),
    PolicyCase("epnet", "epnet", {"bins": 4}),
    PolicyCase("routing-actor", "routing-actor"),
    PolicyCase("routing-pragmatic-critic", "routing-pragmatic-critic"),
    PolicyCase("routing-optimistic-critic", "routing-optimistic-critic"),
    PolicyCase("guan-cascade", "guan-cascade"),
    PolicyCase("final-only", "final-only"),
    PolicyCase("oracle", "oracle", whole_batch_only=True),
]
CASES = {c.name: c for c in POLICY_CASES}
# aggregation predicts from the summed softmax of every exit, which the early-exit executor's
# per-exit argmax does not reproduce: its counterpart is the executor's own aggregation mode
NOT_EARLY_EXIT = {"aggregation"}


# ----------------------------------------------------------------- one model, prepared once


@dataclasses.dataclass
class ModelCase:
    """One model with its inputs, its record, and its prepared backends (prepared once)."""

    model: torch.nn.Module
    x: torch.Tensor
    record: ExitRecord
    onnx_cache: Path
    prepared: dict[str, PreparedModel] = dataclasses.field(default_factory=dict)

    def on(self, backend: str) -> PreparedModel:
        if backend not in self.prepared:
            options = {"cache_dir": self.onnx_cache} if backend == "onnxruntime" else {}
            self.prepared[backend] = get_backend(backend).prepare(
                self.model, batch_size=BATCH, threads=1, **options
            )
        return self.prepared[backend]


def smallest_model(name: str) -> torch.nn.Module:
    for shape in SHAPES:
        try:
            torch.manual_seed(0)
            return create_model(name, num_classes=10, input_shape=shape).eval()
        except InputShapeError:
            continue
    pytest.fail(f"model '{name}' builds at none of the input shapes {SHAPES}")


def split_for(model: torch.nn.Module, seed: int) -> types.SimpleNamespace:
    """A split-like object of N random inputs (what record_exits reads of eebench.data.Split)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0.0, 1.5, N)[torch.randperm(N, generator=g)]
    return types.SimpleNamespace(
        name="val",
        x=torch.randn(N, *model.input_shape, generator=g) * scale.view(N, 1, 1, 1),
        y=torch.randint(0, 10, (N,), generator=g),
        ids=np.array([f"s{i}" for i in range(N)]),
        meta={"difficulty": np.linspace(0.0, 1.0, N)},
        fingerprint=f"random-{seed}",
    )


@pytest.fixture(scope="module")
def model_cases(tmp_path_factory):
    onnx_cache = tmp_path_factory.mktemp("onnx-cache")
    cache: dict[str, ModelCase] = {}

    def get(name: str) -> ModelCase:
        if name not in cache:
            torch.set_num_threads(1)
            model = smallest_model(name)
            split = split_for(model, seed=MODELS.index(name))
            record = record_exits(model, split)
            # labels = the final exit's answers: the early exits are right for some samples only
            record = dataclasses.replace(record, labels=record.predictions[:, -1])
            top2 = np.sort(record.logits, axis=-1)[..., -2:]
            assert (top2[..., 1] - top2[..., 0] > 2 * logit_tolerance(record)).all(), (
                f"{name}: near-tied logits; choose another input seed"
            )
            cache[name] = ModelCase(model, split.x, record, onnx_cache)
        return cache[name]

    return get


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


# ----------------------------------------------------------------- the check


def expected_decisions(
    policy: Policy, record: ExitRecord, thresholds: np.ndarray | float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exit index and prediction of every sample, from the vectorised evaluation."""
    th = policy.fixed_thresholds() if thresholds is None else np.asarray(thresholds)[None, ...]
    exits = exit_indices(policy.scores(record), th)[0]
    preds = policy.predictions(record)[np.arange(record.num_samples), exits]
    return exits, preds


def decisions_within_rounding(
    policy: Policy,
    record: ExitRecord,
    thresholds: np.ndarray | float | None,
    backend_logits: list[np.ndarray] = (),
    draws: int = 16,
) -> list[set[tuple[int, int]]]:
    """Per sample, every (exit, prediction) the vectorised evaluation gives when each logit moves
    by at most the backends' rounding (``logit_tolerance``; seeded draws plus the record itself)
    or is the logit the backend itself computes (``backend_logits``, same shape as the record's).

    Thresholds are placed away from every score (``untied_thresholds``), but a learned policy
    also has boundaries of its own inside the confidence range (EPNet's bins, a trade-off grid):
    a sample whose confidence sits within rounding of one may legitimately leave elsewhere on
    another backend. Such a sample is allowed any of the outcomes rounding can produce."""
    want_exits, want_preds = expected_decisions(policy, record, thresholds)
    allowed = [{(int(e), int(p))} for e, p in zip(want_exits, want_preds)]
    tol = logit_tolerance(record)[..., None]
    rng = np.random.default_rng(0)
    variants = [rng.uniform(-1.0, 1.0, size=record.logits.shape) * tol for _ in range(draws)]
    variants = [record.logits + noise for noise in variants] + list(backend_logits)
    for logits in variants:
        moved = dataclasses.replace(record, logits=np.asarray(logits, dtype=np.float32))
        exits, preds = expected_decisions(policy, moved, thresholds)
        for n, outcome in enumerate(zip(exits.tolist(), preds.tolist())):
            allowed[n].add(outcome)
    return allowed


def assert_same_decisions(
    got: ExecutionResult,
    want_exits: np.ndarray,
    want_preds: np.ndarray,
    policy: Policy,
    record: ExitRecord,
    thresholds: np.ndarray | float | None,
    where: str,
    allowed: list[set[tuple[int, int]]] | None = None,
) -> None:
    moved = 0
    for n in range(record.num_samples):
        outcome = (int(got.exit_indices[n]), int(got.predictions[n]))
        want = (int(want_exits[n]), int(want_preds[n]))
        if outcome != want and allowed is not None and outcome in allowed[n]:
            moved += 1  # a sample within rounding of one of the policy's own boundaries
            continue
        assert outcome == want, (
            f"{where}: sample {n} (exit, prediction) differs from the vectorised evaluation"
        )
    # borderline samples are the exception: at most one of the N here
    assert moved <= 1, f"{where}: {moved} samples left elsewhere within logit rounding"
    if moved:
        return
    # the operating point of the same thresholds says the same thing in aggregate
    # (a 1-D array there is T shared thresholds: one per-exit setting is a (1, E) row)
    setting = None if thresholds is None else np.asarray(thresholds)[None, ...]
    point = operating_points(record, policy, setting)
    np.testing.assert_array_equal(got.exit_fractions, point.exit_fractions[0], err_msg=where)
    assert got.accuracy(record.labels) == point.accuracy[0], where


def backend_record_logits(prepared: PreparedModel, x: torch.Tensor) -> list[np.ndarray]:
    """``(N, E, C)`` logits as the backend computes them, one sample at a time and in batches of
    ``BATCH`` (the executor's batch sizes)."""
    out = []
    for bs in (1, BATCH):
        parts = []
        for start in range(0, x.shape[0], bs):
            exits = prepared.run_all(prepared.to_input(x[start : start + bs]))
            parts.append(np.stack([prepared.to_numpy(v) for v in exits], axis=1))
        out.append(np.concatenate(parts, axis=0))
    return out


def run_case(
    case: ModelCase, policy_name: str, prepared: PreparedModel, runs: list[tuple[str, int | None]]
) -> None:
    pc = CASES[policy_name]
    record = case.record
    policy = pc.build(record)
    thresholds = pc.thresholds(policy, record)
    want_exits, want_preds = expected_decisions(policy, record, thresholds)
    decider = policy.decider(thresholds, num_exits=record.num_exits, labels=record.labels)
    executor = EarlyExitExecutor(prepared, decider)
    allowed = None
    if not pc.whole_batch_only:
        allowed = decisions_within_rounding(
            policy, record, thresholds, backend_record_logits(prepared, case.x)
        )
    for mode, bs in runs:
        got = executor.run(case.x, mode=mode, batch_size=bs)
        where = f"{prepared.backend} {mode} batch={got.batch_size} {policy_name}"
        assert_same_decisions(
            got, want_exits, want_preds, policy, record, thresholds, where, allowed
        )
    if isinstance(thresholds, np.ndarray) and np.isfinite(thresholds[:-1]).any():
        # a midpoint near an exit's median: the thresholds really split the samples between exits
        assert len(set(want_exits.tolist())) > 1, "thresholds should send samples to 2+ exits"


@pytest.mark.parametrize("policy_name", [c.name for c in POLICY_CASES])
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime"])
def test_executor_takes_the_vectorised_decisions(model_cases, backend, model_name, policy_name):
    """Per sample (torch-cpu) and batch shrinking with batches of 4 (both backends); the oracle's
    labels are given per row of one batch, so it runs as one batch of all N samples."""
    case = model_cases(model_name)
    if CASES[policy_name].whole_batch_only:
        runs = [("batched", N)]
    elif backend == "torch-cpu":
        runs = [("per-sample", None), ("batched", BATCH)]
    else:
        runs = [("batched", BATCH)]
    run_case(case, policy_name, case.on(backend), runs)


def test_every_registered_policy_is_run_through_the_executor():
    covered = {c.policy for c in POLICY_CASES}
    missing = set(list_policies()) - covered - NOT_EARLY_EXIT
    assert not missing, f"policies without an executor test here: {sorted(missing)}"


# ----------------------------------------------------------------- what decide() still refuses


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decide_refuses_every_non_finite_logit(bad):
    decider = create_policy("threshold").decider(0.5, num_exits=3)
    decider.reset(4)
    logits = np.zeros((2, 3), dtype=np.float32)
    logits[1, 2] = bad
    with pytest.raises(NonFiniteLogitsError, match="sample row 3.*exit 1, class 2"):
        decider.decide(1, logits, np.array([0, 3]))


def test_decide_accepts_huge_finite_logits_silently():
    """The finiteness screen sums the logits (in float64: no float32 overflow, no warning)."""
    logits = np.array([[3e38, 3e38, -1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    policy = create_policy("threshold")
    decider = policy.decider(0.4, num_exits=2)
    decider.reset(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decider.decide(0, logits, np.array([0, 1]))
    want = policy.scores(LogitsView(logits[:, None, :]))[:, 0] >= 0.4
    assert got.tolist() == want.tolist() == [True, True]


@pytest.mark.parametrize("rows", [1, 40])  # both sides of the short-list bounds check
def test_decide_refuses_rows_outside_the_batch(rows):
    decider = create_policy("patience").decider(1.0, num_exits=3)
    decider.reset(rows)
    logits = np.zeros((rows, 3), dtype=np.float32)
    assert decider.decide(0, logits, np.arange(rows)).shape == (rows,)
    for active in (np.arange(rows) + 1, np.arange(rows) - 1):
        with pytest.raises(PolicyError, match=rf"\[0, {rows}\)"):
            decider.decide(0, logits, active)

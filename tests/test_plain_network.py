"""The no-early-exit baseline costs what the plain network costs.

The test models carry their own hand-computed MACs (fvcore counts a Linear(a, b) as a * b
MACs per sample; bias additions and ReLU are not MACs). For a cascade the plain network is
its last member alone, from the raw input; for an intermediate-classifier model it is every
stage and the final head only. The analytic cost, the ``final-only`` operating point, the
budget denominator and the executor's ``backbone`` mode must all agree with that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from eebench.backends import EarlyExitExecutor, get_backend
from eebench.costs import analyze_costs, count_macs, plain_network, plain_network_of
from eebench.evaluation import CostVector, ExitRecord, evaluate, reference_operating_points
from eebench.models.base import MultiExitModel
from eebench.models.cascade import CascadeHead, CascadeStage
from eebench.policies import create_policy

INPUT = (1, 4, 4)  # 16 input features once flattened
CLASSES = 3


class TinyCascade(MultiExitModel):
    """Two independent members of plain linear layers, each reading the raw input."""

    family = "cascade"
    # member 0: 16->8, head 8->3; member 1: 16->32->16, head 16->3
    macs = {"stage": [16 * 8, 16 * 32 + 32 * 16], "exit": [8 * 3, 16 * 3]}
    plain_macs = 16 * 32 + 32 * 16 + 16 * 3  # the last member alone: 1072
    all_macs = 16 * 8 + 8 * 3 + 16 * 32 + 32 * 16 + 16 * 3  # every member: 1224

    def __init__(self) -> None:
        super().__init__(CLASSES, INPUT)
        self.members = [
            nn.Sequential(nn.Flatten(), nn.Linear(16, 8)),
            nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)),
        ]
        self.stages = nn.ModuleList(CascadeStage(m) for m in self.members)
        self.exits = nn.ModuleList([CascadeHead(8, CLASSES), CascadeHead(16, CLASSES)])


class TinyIntermediate(MultiExitModel):
    """A three-stage linear backbone with a classifier head after every stage."""

    family = "intermediate"
    macs = {"stage": [16 * 12, 12 * 12, 12 * 6], "exit": [12 * 3, 12 * 3, 6 * 3]}
    plain_macs = 16 * 12 + 12 * 12 + 12 * 6 + 6 * 3  # every stage + the final head: 426
    all_macs = plain_macs + 12 * 3 + 12 * 3  # + the two early heads: 498

    def __init__(self) -> None:
        super().__init__(CLASSES, INPUT)
        self.stages = nn.ModuleList(
            [nn.Sequential(nn.Flatten(), nn.Linear(16, 12)), nn.Linear(12, 12), nn.Linear(12, 6)]
        )
        self.exits = nn.ModuleList([nn.Linear(12, 3), nn.Linear(12, 3), nn.Linear(6, 3)])


MODELS = [TinyCascade, TinyIntermediate]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.family)
def test_analytic_plain_network_macs_match_the_hand_count(cls):
    model = cls().eval()
    costs = analyze_costs(model)
    assert costs.stage_macs.tolist() == cls.macs["stage"]
    assert costs.head_macs.tolist() == cls.macs["exit"]
    assert costs.plain_macs == cls.plain_macs
    assert costs.cumulative_macs[-1] == cls.all_macs  # what aggregation still pays


def test_cascade_plain_network_is_exactly_its_last_member():
    model = TinyCascade().eval()
    last = nn.Sequential(model.members[-1], model.exits[-1].fc)  # the member as a standalone net
    assert count_macs(last, (torch.zeros(1, *INPUT),)) == TinyCascade.plain_macs
    assert analyze_costs(model).plain_macs == TinyCascade.plain_macs


def test_plain_network_parts_per_family():
    assert plain_network("cascade", 3).stages == (2,)
    assert plain_network("cascade", 3).from_input
    for family in ("intermediate", "msdnet"):
        net = plain_network(family, 4)
        assert net.stages == (0, 1, 2, 3) and net.head == 3 and not net.from_input
    assert plain_network_of(TinyCascade()).stages == (1,)
    with pytest.raises(ValueError, match="one stage and one head cost per exit"):
        plain_network("cascade", 3).cost([1, 2], [1, 2])


def _make(logits: np.ndarray, labels: np.ndarray) -> ExitRecord:
    return ExitRecord(logits, labels, np.arange(len(labels)), "model-a", "data-a", "test")


def _record(model: MultiExitModel, n: int = 40, seed: int = 0) -> ExitRecord:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *INPUT, generator=g)
    with torch.no_grad():
        logits = torch.stack(model.forward_all(x), dim=1).numpy()
    labels = np.random.default_rng(seed).integers(0, CLASSES, n)
    return _make(logits, labels)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.family)
def test_final_only_pays_the_plain_network_and_aggregation_pays_everything(cls):
    model = cls().eval()
    costs = analyze_costs(model)
    macs = CostVector.from_parts(
        costs.stage_macs, costs.head_macs, unit="MACs", source="analytic", plain=costs.plain
    )
    assert macs.plain == cls.plain_macs and macs.values[-1] == cls.all_macs
    record = _record(model)
    final = evaluate(record, create_policy("final-only"), None, [macs]).iloc[0]
    assert final["expected_macs"] == cls.plain_macs
    assert final["exit_frac_" + str(model.num_exits - 1)] == 1.0
    aggregation = evaluate(record, create_policy("aggregation"), None, [macs]).iloc[0]
    assert aggregation["expected_macs"] == cls.all_macs
    # the plain per-sample reference charges the same
    slow = reference_operating_points(record, create_policy("final-only"), None, [macs]).iloc[0]
    assert slow["expected_macs"] == cls.plain_macs
    assert slow["wasted_frac_macs"] == pytest.approx(final["wasted_frac_macs"], rel=1e-12)


def test_from_parts_without_a_plain_network_takes_every_stage_and_the_final_head():
    c = CostVector.from_parts([10, 20, 30], [1, 2, 4], unit="ms", source="measured:torch-cpu")
    assert c.plain == 64.0 and c.values[-1] == 67.0
    cascade = CostVector.from_parts(
        [10, 20, 30],
        [1, 2, 4],
        unit="ms",
        source="measured:torch-cpu",
        plain=plain_network("cascade", 3),
    )
    assert cascade.plain == 34.0
    assert CostVector.macs([1.0, 3.0]).plain == 3.0  # unknown split: the final exit's cost


def test_a_plain_network_dearer_than_the_whole_model_is_refused():
    with pytest.raises(Exception, match="plain network cost must be"):
        CostVector.macs([1.0, 3.0], plain=3.5)


class CallLog:
    """Wraps a prepared model and logs every stage and head it runs, in order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_stage(self, i, state):
        self.calls.append(("stage", i))
        return self.inner.run_stage(i, state)

    def run_exit(self, i, state):
        self.calls.append(("exit", i))
        return self.inner.run_exit(i, state)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.family)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_executor_backbone_mode_runs_exactly_the_plain_network(cls, batch_size):
    model = cls().eval()
    n = 6
    x = torch.randn(n, *INPUT, generator=torch.Generator().manual_seed(1))
    log = CallLog(get_backend("torch-cpu").prepare(model, threads=1))
    plain = plain_network_of(model)
    result = EarlyExitExecutor(log).run(
        x, mode="backbone", batch_size=batch_size, plain_stages=plain.stages
    )
    last = model.num_exits - 1
    if cls is TinyCascade:
        one_batch = [("stage", 1), ("exit", 1)]  # the last member only, from the raw input
    else:
        one_batch = [("stage", 0), ("stage", 1), ("stage", 2), ("exit", 2)]
    assert log.calls == one_batch * (n // batch_size)
    with torch.no_grad():
        want = model.forward_all(x)[-1].argmax(dim=1).numpy()
    assert result.predictions.tolist() == want.tolist()
    assert (result.exit_indices == last).all()


def test_executor_backbone_mode_needs_the_plain_network_stages():
    model = TinyCascade().eval()
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    x = torch.zeros(2, *INPUT)
    with pytest.raises(ValueError, match="needs plain_stages"):
        EarlyExitExecutor(prepared).run(x, mode="backbone")
    with pytest.raises(ValueError, match="consecutive stages ending with the last one"):
        EarlyExitExecutor(prepared).run(x, mode="backbone", plain_stages=(0,))


# ----------------------------------------------------------------- wasted computation (SDN)


def _three_samples() -> ExitRecord:
    # sample 0: right at exit 0, wrong at the final exit; sample 1: wrong at exit 0, right
    # later; sample 2: right everywhere
    logits = np.zeros((3, 3, 2), dtype=np.float32)
    logits[0] = [[4, 0], [0, 1], [0, 1]]
    logits[1] = [[0, 1], [3, 0], [3, 0]]
    logits[2] = [[5, 0], [5, 0], [5, 0]]
    return _make(logits, np.zeros(3, dtype=np.int64))


def test_wasted_computation_by_hand():
    record = _three_samples()
    macs = CostVector.macs([10, 30, 60], plain=50)  # first correct exits: 0, 1, 0
    final = evaluate(record, create_policy("final-only"), None, [macs]).iloc[0]
    # final-only pays 50 each; wasted beyond the first correct exit: 40, 20, 40
    assert final["wasted_macs"] == pytest.approx(100 / 3)
    assert final["wasted_frac_macs"] == pytest.approx((40 / 50 + 20 / 50 + 40 / 50) / 3)
    # a threshold nothing reaches: every sample runs to the final exit and pays 60
    late = evaluate(record, create_policy("threshold"), [2.0], [macs]).iloc[0]
    assert late["wasted_macs"] == pytest.approx((50 + 30 + 50) / 3)
    assert late["wasted_frac_macs"] == pytest.approx((50 / 60 + 30 / 60 + 50 / 60) / 3)
    # everyone leaves at exit 0 (pays 10): nothing is spent after a correct exit
    early = evaluate(record, create_policy("threshold"), [0.0], [macs]).iloc[0]
    assert early["wasted_macs"] == 0 and early["wasted_frac_macs"] == 0
    assert early["lost_by_exiting_early"] == pytest.approx(1 / 3)  # sample 1

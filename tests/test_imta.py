"""IMTA training: gradient equilibrium against hand-computed gradients, one-for-all KD by hand,
the two phases, training on digits, and its refusal for cascades."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eebench.data import get_splits, iterate_batches
from eebench.errors import ConfigError
from eebench.models import MultiExitModel
from eebench.training import TrainConfig, create_seeded_model, get_scheme, train_model
from eebench.training.imta import forward_all_equilibrium
from eebench.training.losses import one_for_all_loss


class Scale(nn.Module):
    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))

    def forward(self, x: Tensor) -> Tensor:
        return self.w * x


class Sum(nn.Module):
    """An exit whose 'logits' are the state summed with a learnable bias, shape (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x.sum(1) + self.b, torch.zeros(x.shape[0])], 1)


class ScalarChain(MultiExitModel):
    """s_i = w_i * s_{i-1}; exit i reads s_i: gradients small enough to work out by hand."""

    family = "test-scalar"

    def __init__(self, weights: list[float]) -> None:
        super().__init__(2, (1, 1, 1))
        for w in weights:
            self.stages.append(Scale(w))
            self.exits.append(Sum())


class TupleChain(ScalarChain):
    """The same chain with a two-tensor state (like a multi-scale network): (s_i, 2 s_i)."""

    def forward_stage(self, i: int, state):
        prev = state if i == 0 else state[0]
        s = self.stages[i](prev)
        return (s, 2 * s)

    def forward_exit(self, i: int, state) -> Tensor:
        return self.exits[i](state[1] / 2)


class Chain(MultiExitModel):
    family = "test-chain"

    def __init__(self, stages: int = 3, width: int = 4) -> None:
        super().__init__(10, (1, 8, 8))
        c = 1
        for _ in range(stages):
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
                )
            )
            self.exits.append(nn.Sequential(nn.Flatten(), nn.Linear(width * 64, 10)))
            c = width
        self.set_metadata("test-chain", {"stages": stages})


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def splits():
    return get_splits("digits", seed=0, limit=400)


# ----------------------------------------------------------------------------- gradient equilibrium
@pytest.mark.parametrize("cls", [ScalarChain, TupleChain])
def test_gradient_equilibrium_gives_each_stage_the_mean_of_its_later_exits(cls):
    # L = s0 + s1 + s2 (the first logit of each exit), x = 1, w = (2, 3, 5).
    # Plain: dL/dw2 = w0 w1 = 6; dL/dw1 = w0 + w0 w2 = 12; dL/dw0 = 1 + w1 + w1 w2 = 19.
    # GE averages over the exits reading each stage: 6 / 1, 12 / 2, 19 / 3.
    model = cls([2.0, 3.0, 5.0])
    x = torch.ones(1, 1)
    outs = forward_all_equilibrium(model, x)
    assert [float(o[0, 0].detach()) for o in outs] == [2.0, 6.0, 30.0]  # forward unchanged
    sum(o[:, 0].sum() for o in outs).backward()
    grads = [float(s.w.grad) for s in model.stages]
    assert grads == pytest.approx([19 / 3, 6.0, 6.0])
    # the exits' own parameters keep their full gradient (each exit's bias adds 1 to its loss)
    assert [float(e.b.grad) for e in model.exits] == [1.0, 1.0, 1.0]

    model.zero_grad()
    sum(o[:, 0].sum() for o in model.forward_all(x)).backward()
    assert [float(s.w.grad) for s in model.stages] == pytest.approx([19.0, 12.0, 6.0])


def test_gradient_equilibrium_on_a_network_is_the_mean_of_per_exit_gradients():
    torch.manual_seed(0)
    model = Chain(stages=3).eval()  # eval: BatchNorm uses running statistics, passes comparable
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    per_exit = []
    for k in range(3):
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model.forward_all(x)[k], y).backward()
        per_exit.append(
            [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in model.stages.parameters()
            ]
        )
    model.zero_grad()
    sum(F.cross_entropy(o, y) for o in forward_all_equilibrium(model, x)).backward()
    idx = 0
    for i, stage in enumerate(model.stages):
        for p in stage.parameters():
            expected = sum(per_exit[k][idx] for k in range(i, 3)) / (3 - i)
            assert torch.allclose(p.grad, expected, atol=1e-6), (i, idx)
            idx += 1


# ----------------------------------------------------------------------------- one-for-all KD
def test_one_for_all_loss_by_hand():
    # two exits, two classes, one sample of class 0; T = 2, alpha = 0.25
    early = torch.tensor([[1.0, 0.0]], requires_grad=True)
    final = torch.tensor([[2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    t, alpha = 2.0, 0.25

    def softmax(z):
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]

    p = softmax([1.0, 0.0])  # teacher at T = 2: logits (2, 0) / 2
    q = softmax([0.5, 0.0])  # student at T = 2: logits (1, 0) / 2
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    ce_early = -math.log(softmax([1.0, 0.0])[0])
    ce_final = -math.log(softmax([2.0, 0.0])[0])
    expected = ce_final + alpha * t * t * kl + (1 - alpha) * ce_early
    loss = one_for_all_loss([early, final], y, t, alpha)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # the final exit learns from its own cross-entropy only: d CE / d z = softmax - onehot
    s = softmax([2.0, 0.0])
    assert final.grad[0].tolist() == pytest.approx([s[0] - 1, s[1]], rel=1e-6)


# ----------------------------------------------------------------------------- the scheme
FAST = {"epochs": 1, "batch_size": 32, "lr": 1e-2}


def test_imta_phases_use_equilibrium_then_distil_with_a_frozen_backbone(splits):
    torch.manual_seed(0)
    model = Chain()
    cfg = TrainConfig(scheme="imta", teacher_epochs=2, epochs=1, temperature=3.0, alpha=0.5)
    ge, ofa = get_scheme("imta").phases(model, cfg)
    assert (ge.name, ge.epochs, ofa.name, ofa.epochs) == ("ge", 2, "ofa", 1)
    x, y = next(iterate_batches(splits.train, 16))
    model.eval()
    loss, logits = ge.loss(model, x, y)
    outs = model.forward_all(x)
    assert torch.allclose(loss, sum(F.cross_entropy(o, y) for o in outs)) and sorted(logits) == [
        0,
        1,
        2,
    ]
    trained = {id(p) for m in ofa.train_modules for p in m.parameters()}
    frozen = {id(p) for m in ofa.frozen_modules for p in m.parameters()}
    assert trained == {id(p) for i in (0, 1) for p in model.exits[i].parameters()}
    assert frozen == {id(p) for p in model.parameters()} - trained
    loss, logits = ofa.loss(model, x, y)
    assert sorted(logits) == [0, 1]
    assert torch.allclose(loss, one_for_all_loss(outs, y, 3.0, 0.5))


def test_imta_trains_every_exit_above_chance_on_digits(splits):
    torch.manual_seed(0)
    model = Chain()
    cfg = TrainConfig(scheme="imta", teacher_epochs=3, epochs=1, batch_size=32, lr=2e-2)
    result = train_model(model, splits, cfg, progress=False, threads=1)
    assert [r.phase for r in result.history] == ["ge", "ge", "ge", "ofa"]
    assert result.complete
    assert min(result.test_accuracy) > 0.3  # chance is 0.1


def test_imta_is_refused_for_a_cascade(splits):
    cascade = create_seeded_model("cascade", {"width": 4}, 10, splits.input_shape, 0)
    with pytest.raises(ConfigError, match=r"scheme: 'imta' does not apply to cascade.*'cascade'"):
        train_model(cascade, splits, TrainConfig(scheme="imta", **FAST), progress=False)


@pytest.mark.parametrize(
    ("name", "config"),
    [("msdnet", {}), ("ranet", {}), ("sdn-resnet", {"depth": 20, "width": 4})],
)
def test_gradient_equilibrium_rule_holds_for_multi_scale_and_intermediate_families(name, config):
    """Stage i's parameters get the mean of the gradients of exits i..n-1, whatever the state."""
    model = create_seeded_model(name, config, 10, (1, 8, 8), 0).eval()
    n = model.num_stages
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    params = [list(s.parameters()) for s in model.stages]

    def grads(loss: Tensor) -> list[list[Tensor]]:
        flat = [p for ps in params for p in ps]
        g = torch.autograd.grad(loss, flat, allow_unused=True)
        out, k = [], 0
        for ps in params:
            out.append([torch.zeros_like(p) if gi is None else gi for p, gi in zip(ps, g[k:])])
            k += len(ps)
        return out

    per_exit = [grads(F.cross_entropy(model.forward_all(x)[e], y)) for e in range(n)]
    outs = forward_all_equilibrium(model, x)
    for a, b in zip(outs, model.forward_all(x)):
        assert torch.equal(a, b)
    ge = grads(sum(F.cross_entropy(o, y) for o in outs))
    for i in range(n):
        for j, g in enumerate(ge[i]):
            expected = sum(per_exit[e][i][j] for e in range(i, n)) / (n - i)
            assert torch.allclose(g, expected, atol=1e-6, rtol=1e-4), (name, i, j)

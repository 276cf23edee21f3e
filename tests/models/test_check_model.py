"""``eebench check-model SPEC``: one PASS/FAIL line per contract clause, exit 2 when one fails,
and the same clause functions catch each way a hand-written model can break the contract."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from eebench import cli
from eebench.models import MultiExitModel, contract

REPO = Path(__file__).resolve().parents[2]

BROKEN = textwrap.dedent(
    """
    import torch
    from torch import nn
    from eebench.models import MultiExitModel

    class Net(MultiExitModel):
        family = "intermediate"

        def __init__(self, num_classes, input_shape, flaw=""):
            super().__init__(num_classes, input_shape)
            c = input_shape[0]
            shared = nn.Conv2d(c, c, 3, padding=1)
            self.stages.append(nn.Sequential(shared, nn.ReLU()))
            self.stages.append(nn.Sequential(shared if flaw == "shared" else nn.Conv2d(c, c, 3, padding=1), nn.ReLU()))
            for _ in range(2):
                self.exits.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)))
            self.flaw = flaw

        def forward_all(self, x):
            outs = super().forward_all(x)
            if self.flaw == "extra":  # work outside the stages: the record and the executor disagree
                outs[-1] = outs[-1] + x.flatten(1) @ torch.full((x[0].numel(), outs[-1].shape[1]), 0.01)
            return outs

    def build(num_classes, input_shape, flaw=""):
        return Net(num_classes, input_shape, flaw)
    """
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check-model", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_example_passes_every_clause(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, _ = _run(capsys, "examples/resnet_exits.py:build", "--input-shape", "1,8,8")
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert len(lines) == len(contract.CLAUSES) and all(ln.startswith("PASS") for ln in lines)
    for clause in contract.CLAUSES:
        assert clause in out
    assert f"{len(contract.CLAUSES)}/{len(contract.CLAUSES)} clauses pass" in out


@pytest.mark.parametrize(
    ("flaw", "failing"),
    [
        ("shared", ["no parameter shared between stages"]),
        (
            "extra",
            [
                "stage by stage == forward_all",
                "ONNX export == torch within 1e-4",
                "cost table adds up (stages + heads == whole pass)",
            ],
        ),
    ],
)
def test_a_broken_model_fails_the_clauses_it_breaks_with_a_fix(tmp_path, capsys, flaw, failing):
    (tmp_path / "net.py").write_text(BROKEN)
    spec = f"{tmp_path / 'net.py'}:build"
    code, out, _ = _run(capsys, spec, "--input-shape", "2,6,6", "--config", f'{{"flaw": "{flaw}"}}')
    assert code == 2
    failed = [ln.split(":")[0][6:] for ln in out.splitlines() if ln.startswith("FAIL")]
    # the executor clause may also fail (the extra term can move a prediction); nothing else may
    assert [f for f in failed if f != "executor decisions == vectorised evaluation"] == failing, out
    assert out.count("fix: ") == len(failed)
    assert f"failing: {', '.join(failed)}" in out


def test_a_spec_that_does_not_resolve_is_one_error_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "net.py").write_text(BROKEN)
    code, out, err = _run(capsys, f"{tmp_path / 'net.py'}:biuld")
    assert code == 2 and out == ""
    assert "no function 'biuld'" in err and "did you mean 'build'" in err
    code, _, err = _run(capsys, "msdnet", "--config", "[1]")
    assert code == 2 and "--config" in err and "JSON object" in err


def test_a_lying_exit_declaration_is_caught():
    class Liar(MultiExitModel):
        family = "intermediate"

        def __init__(self) -> None:
            super().__init__(3, (2, 4, 4))
            self.stages.append(nn.Conv2d(2, 5, 1))
            self.exits.append(nn.Sequential(nn.Flatten(), nn.Linear(80, 3)))

        def _exit_read_tensor(self, i, state):
            return torch.zeros(1, 7, 4, 4)  # declares 7 channels, the head reads 5

    with pytest.raises(contract.ContractViolation, match=r"declares features \(7, 4, 4\)"):
        contract.exits_declared_truthfully(Liar().eval())

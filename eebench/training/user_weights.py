"""A user's own weights: a plain ``state_dict`` file for the whole model or for its backbone.

Researchers bring networks trained elsewhere; their checkpoints are plain
``torch.save(model.state_dict(), path)`` files, not eebench checkpoints. They
are opened with ``torch.load(..., weights_only=True)`` (opening one cannot run
code) and loaded strictly: missing and unexpected keys are listed, a shape
mismatch names the parameter and both shapes, so a checkpoint of another
architecture is refused with what differs instead of a half-loaded model.

The file's SHA-256 is recorded with the run, so a result says exactly which
weights it measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from eebench.errors import CheckpointError
from eebench.models.base import MultiExitModel

Part = Literal["model", "backbone"]

_LISTED = 8  # keys named in full in an error; the rest are counted


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights were loaded into which part of the model (recorded in the run)."""

    path: str
    part: str
    sha256: str
    tensors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a state_dict file (an eebench checkpoint's ``state_dict`` also works)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at '{path}': check the checkpoint path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or non-torch files
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = (lines[-1] if lines else type(err).__name__)[:300]
        raise CheckpointError(
            f"cannot read weights file '{path}': it is corrupt, truncated or not a torch.save file "
            f"of tensors ({reason}); save it again with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # an eebench checkpoint, or {"state_dict": ...} wrappers
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(
            f"weights file '{path}' holds a {type(payload).__name__}, not a state_dict; save "
            "model.state_dict() (a mapping of parameter names to tensors)"
        )
    bad = [str(k) for k, v in payload.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"weights file '{path}' maps {bad[:_LISTED]} to non-tensors; save model.state_dict()"
        )
    return {str(k): v for k, v in payload.items()}


def is_eebench_checkpoint(path: str | Path) -> bool:
    """True for a file eebench's own training wrote (a ``meta`` mapping beside the weights)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # unreadable: the state_dict reader reports it with the fix
        return False
    return isinstance(payload, dict) and isinstance(payload.get("meta"), dict)


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], path: str, what: str) -> None:
    """Refuse a state_dict that does not fit ``module``: names every missing and unexpected key
    and every shape mismatch (parameter, both shapes)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"'{k}' is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the {what}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:_LISTED])}")
    if problems:
        hint = (
            "; the keys look like a backbone's: use checkpoint: {backbone: PATH}"
            if what == "model"
            and missing
            and all(k.startswith(("stages.", "exits.")) for k in own)
            and not any(k.startswith(("stages.", "exits.")) for k in state)
            else ""
        )
        raise CheckpointError(
            f"weights file '{path}' does not fit the {what} (another architecture or config?): "
            + "; ".join(problems)
            + hint
            + f". Save the {what}'s state_dict() or build the {what} the file was saved from"
        )


def load_user_weights(model: MultiExitModel, path: str | Path, part: Part = "model") -> WeightsInfo:
    """Load a plain state_dict into the whole model or into its backbone (strict)."""
    path = Path(path)
    state = read_state_dict(path)
    if part == "backbone":
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise CheckpointError(
                f"checkpoint: {{backbone: {path}}} needs a model built with eebench.attach_exits "
                f"(it knows its backbone); '{model.metadata.name}' is a {type(model).__name__}: "
                "use checkpoint: {model: PATH} with the whole model's state_dict"
            )
        check_state_dict(backbone, state, str(path), "backbone")
        backbone.load_state_dict(state, strict=True)
    else:
        check_state_dict(model, state, str(path), "model")
        model.load_state_dict(state, strict=True)
    model.eval()
    return WeightsInfo(
        path=str(path.resolve()), part=part, sha256=_sha256(path), tensors=len(state)
    )

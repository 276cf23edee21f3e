"""Export every stage and every exit head of a model to its own ONNX graph, cached.

Each graph has flat inputs ``in0..inK`` (the state tensors) and outputs
``out0..outM`` (a stage's state) or ``logits`` (an exit head), all with a
dynamic batch dimension. The exporter drops graph inputs that a module does
not read (a cascade stage receives ``(x, features)`` and reads only ``x``), so
a runner must feed each graph its *declared* inputs by name; the input names
keep the position in the state tuple.

Exports go to ``<cache>/<model hash>/`` where the hash covers the
architecture, the weights and buffers, the torch version and the opset; a
changed weight gives a new folder, an unchanged model loads from the cache.
The folder is written to a temporary name and renamed when complete, so an
interrupted export never leaves a half-written cache entry.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eebench.backends.threads import torch_threads
from eebench.models.base import MultiExitModel, as_tuple, from_tuple

EXPORT_FORMAT_VERSION = 1
DEFAULT_OPSET = 17


def default_cache_dir() -> Path:
    """``$EEBENCH_CACHE_DIR/onnx``, else ``~/.cache/eebench/onnx``."""
    root = os.environ.get("EEBENCH_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "eebench") / "onnx"


def model_hash(model: MultiExitModel, opset: int = DEFAULT_OPSET) -> str:
    """A digest of what determines the exported graphs: structure, weights, versions."""
    h = hashlib.sha256()
    meta = model.metadata.to_dict()
    head = {
        "format": EXPORT_FORMAT_VERSION,
        "torch": torch.__version__,
        "opset": opset,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "metadata": meta,
        "structure": repr(model),
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class GraphFile:
    """One exported graph: path, declared inputs (name -> state position) and outputs."""

    path: Path
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ExportedModel:
    """Every stage's and exit head's graph, and whether they came from the cache."""

    folder: Path
    key: str
    stages: tuple[GraphFile, ...]
    exits: tuple[GraphFile, ...]
    cached: bool
    opset: int


def export_model(
    model: MultiExitModel,
    cache_dir: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    example_batch: int = 2,
) -> ExportedModel:
    """Export (or load from the cache) one ONNX graph per stage and per exit head."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = model_hash(model, opset)
    folder = root / key
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            return _load_manifest(folder, key, json.loads(manifest.read_text()), cached=True)
        except (KeyError, ValueError, FileNotFoundError):
            shutil.rmtree(folder, ignore_errors=True)  # corrupt entry: export afresh
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        data = _export_all(model, tmp, opset, example_batch)
        (tmp / "manifest.json").write_text(json.dumps(data, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "manifest.json").is_file():  # not a concurrent identical export
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_manifest(
        folder, key, json.loads((folder / "manifest.json").read_text()), cached=False
    )


def _load_manifest(folder: Path, key: str, data: dict[str, Any], cached: bool) -> ExportedModel:
    def graph(g: dict[str, Any]) -> GraphFile:
        path = folder / g["file"]
        if not path.is_file():
            raise FileNotFoundError(path)
        return GraphFile(path, tuple((n, int(p)) for n, p in g["inputs"]), tuple(g["outputs"]))

    return ExportedModel(
        folder=folder,
        key=key,
        stages=tuple(graph(g) for g in data["stages"]),
        exits=tuple(graph(g) for g in data["exits"]),
        cached=cached,
        opset=int(data["opset"]),
    )


def _export_all(model: MultiExitModel, out: Path, opset: int, batch: int) -> dict[str, Any]:
    import onnx

    if any(t.device.type != "cpu" for t in model.state_dict().values()):
        model = copy.deepcopy(model).cpu()  # never move the caller's model
    was_training = model.training
    model.eval()
    try:
        # one thread: export time is dominated by per-shape kernel set-up, which extra
        # threads only slow down on a busy machine
        with torch_threads(1):
            states = model.example_states(batch)
            stages, exits = [], []
            for i in range(model.num_stages):
                n_out = len(states[i + 1])
                stage, head = _static_paths(model, i)
                names = [f"out{k}" for k in range(n_out)]
                stages.append(
                    _export_one(stage, states[i], names, out / f"stage{i}.onnx", opset, onnx)
                )
                exits.append(
                    _export_one(head, states[i + 1], ["logits"], out / f"exit{i}.onnx", opset, onnx)
                )
    finally:
        model.train(was_training)
    return {
        "format": EXPORT_FORMAT_VERSION,
        "model": model.metadata.to_dict(),
        "torch": torch.__version__,
        "opset": opset,
        "stages": stages,
        "exits": exits,
    }


class _OwnPart(nn.Module):
    """Stage or head ``i`` holding only its own submodule, with the flat signature of
    ``model.stage_module(i)`` / ``model.exit_module(i)``.

    The exporter walks every parameter of the module it is given; the model's
    own static paths hold the whole model, which makes exporting each part of
    a large model cost as much as exporting all of it. Used only when the
    model does not override how stages and exits are called.
    """

    def __init__(self, part: nn.Module, returns_state: bool) -> None:
        super().__init__()
        self.part = part
        self.returns_state = returns_state

    def forward(self, *tensors: torch.Tensor) -> Any:
        out = self.part(from_tuple(tensors))
        return as_tuple(out) if self.returns_state else out


def _static_paths(model: MultiExitModel, i: int) -> tuple[nn.Module, nn.Module]:
    cls = type(model)
    plain = all(
        getattr(cls, name) is getattr(MultiExitModel, name)
        for name in ("forward_stage", "forward_exit", "stage_module", "exit_module")
    )
    if plain:
        return _OwnPart(model.stages[i], True), _OwnPart(model.exits[i], False)
    return model.stage_module(i), model.exit_module(i)


def _export_one(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_names: list[str],
    path: Path,
    opset: int,
    onnx: Any,
) -> dict[str, Any]:
    input_names = [f"in{k}" for k in range(len(inputs))]
    dynamic = {n: {0: "batch"} for n in input_names + output_names}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript-based exporter is deprecated in torch >= 2.9 but needs no onnxscript;
        # its constant-folding notes are about export-time optimisation, not correctness
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            tuple(inputs),
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    declared = [i.name for i in graph.input if i.name not in initializers]
    return {
        "file": path.name,
        "inputs": [[name, int(name[2:])] for name in declared],
        "outputs": [o.name for o in graph.output],
    }

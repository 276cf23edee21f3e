"""``eebench export MODEL --format onnx``: a model's stages and exit heads as ONNX graphs.

The graphs are the ones the ``onnxruntime`` backend runs (one per stage and per
exit head, dynamic batch), written to ``<out>/<model hash>/`` with a
``manifest.json`` naming each graph's inputs and outputs. The hash covers the
architecture, the weights, the torch version and the opset, so exporting the
same weights again reuses the folder and different weights never overwrite it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eebench.input_shape import parse_input_shape

FORMATS = ("onnx",)
DEFAULT_OUT = "exports"


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model's stages and exit heads to ONNX graphs",
        description="MODEL is a registry name, package.module:function or path/to/file.py:function. "
        "With --checkpoint (an eebench checkpoint or a plain state_dict of the whole model) the "
        "trained weights are exported; without it, the freshly initialised ones.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="graph format (default onnx)")
    p.add_argument("--checkpoint", default=None, help="weights to export (default: untrained)")
    p.add_argument(
        "--out", default=DEFAULT_OUT, help=f"folder for the export (default: {DEFAULT_OUT})"
    )
    p.add_argument(
        "--input-shape", type=parse_input_shape, default=(3, 32, 32), help="C,H,W (default 3,32,32)"
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--config", default="{}", help="the model's config as JSON, e.g. '{\"width\": 8}'"
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: eebench's)")
    p.set_defaults(func=_export)


def _build(args: argparse.Namespace):  # -> MultiExitModel (torch imported lazily)
    import json

    from eebench.errors import ConfigError
    from eebench.models.registry import resolve_model_spec
    from eebench.training.checkpoint import load_checkpoint
    from eebench.training.user_weights import is_eebench_checkpoint, load_user_weights

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON: {err}", source="--config") from None
    if not isinstance(config, dict):
        raise ConfigError("expected a JSON object of config keys", source="--config")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise ConfigError(
            f"no such file: {args.checkpoint}; give the path of a checkpoint or state_dict file",
            source="--checkpoint",
        )
    if args.checkpoint and is_eebench_checkpoint(args.checkpoint):
        # an eebench checkpoint records its model, config and input shape: those are exported
        model, info = load_checkpoint(args.checkpoint, model_name=args.model)
        return model, f"weights from eebench checkpoint {args.checkpoint}"
    model = resolve_model_spec(args.model, config, args.num_classes, args.input_shape)
    if args.checkpoint:
        info = load_user_weights(model, args.checkpoint)
        return model, f"weights from {args.checkpoint} (sha256 {info.sha256[:12]})"
    model.eval()
    return model, "untrained weights (freshly initialised; pass --checkpoint for trained ones)"


def _export(args: argparse.Namespace) -> int:
    from eebench.backends.onnx_export import DEFAULT_OPSET, export_model

    model, weights = _build(args)
    exported = export_model(model, Path(args.out), opset=args.opset or DEFAULT_OPSET)
    shape = ",".join(map(str, model.input_shape))
    state = "already exported, reused" if exported.cached else "exported"
    print(
        f"{model.metadata.name}: {len(exported.stages)} stages and {len(exported.exits)} exit "
        f"heads, input {shape}, opset {exported.opset}, {weights}"
    )
    print(f"{state}: {exported.folder}/ (manifest.json names each graph's inputs and outputs)")
    for kind, graphs in (("stage", exported.stages), ("exit", exported.exits)):
        for i, g in enumerate(graphs):
            inputs = ", ".join(name for name, _ in g.inputs)
            print(f"  {kind} {i}: {g.path.name}  inputs {inputs} -> {', '.join(g.outputs)}")
    return 0

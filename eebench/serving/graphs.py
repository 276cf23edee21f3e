"""One-graph deployments of a multi-exit model, composed from its per-stage ONNX graphs.

:func:`eebench.backends.export_model` writes one ONNX graph per stage and per exit head. Two
other ways to deploy the same network are built here by inlining those graphs into one:

* ``static`` — every stage and every exit head in one graph, every exit's logits out (what a
  naive export of an early-exit network gives: it always pays for every exit; the exit
  decision is made afterwards on the host).
* ``fused`` — the early-exit control flow inside the graph: after exit ``i`` the graph
  computes the max softmax of its logits and, with an ONNX ``If``, either returns them (with
  the exit index) or runs the rest of the network in the ``else`` branch. The host reads only
  the final answer. A batch leaves at the first exit where *every* row's confidence reaches
  the threshold, so the fused graph serves one sample at a time.

The parts' weights become initializers of the outer graph, which the ``If`` branches read
from the enclosing scope; every name of part ``p`` gets the prefix ``p/``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from eebench.backends.onnx_export import ExportedModel, GraphFile

LOGITS = ["batch", "classes"]
"""Symbolic shape of logits outputs (the checker needs a shape; the sizes stay free)."""
FUSED_MEASURES = ("max_softmax",)
"""Confidence measures the fused graph computes in-graph."""


def _load(graph: GraphFile) -> Any:
    import onnx

    return onnx.load(str(graph.path)).graph


def _inline(part: Any, prefix: str, feeds: dict[str, str]) -> tuple[list, list, dict[str, str]]:
    """The nodes and initializers of ``part`` with every name prefixed, its graph inputs read
    from ``feeds`` (input name -> outer value); returns (nodes, initializers, output names)."""
    import onnx

    renamed: dict[str, str] = dict(feeds)
    inits = []
    for t in part.initializer:
        new = onnx.TensorProto()
        new.CopyFrom(t)
        new.name = renamed[t.name] = f"{prefix}/{t.name}"
        inits.append(new)
    nodes = []
    for n in part.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute
        ):
            raise ValueError(f"{prefix}: a part with control flow ({n.op_type}) cannot be inlined")
        for out in n.output:
            if out:
                renamed[out] = f"{prefix}/{out}"
        new = onnx.NodeProto()
        new.CopyFrom(n)
        new.name = f"{prefix}/{n.name or n.op_type}"
        del new.input[:]
        new.input.extend([renamed.get(i, i) if i else i for i in n.input])
        del new.output[:]
        new.output.extend([renamed[o] if o else o for o in n.output])
        nodes.append(new)
    missing = [i.name for i in part.input if i.name not in renamed]
    if missing:
        raise ValueError(f"{prefix}: graph inputs {missing} are not fed")
    outputs = {o.name: renamed[o.name] for o in part.output}
    return nodes, inits, outputs


def _stage_and_exit(
    exported: ExportedModel, i: int, state: list[str]
) -> tuple[list, list, list[str], str]:
    """Stage ``i`` fed by ``state`` (outer value names), then exit ``i`` on its output."""
    stage_g, exit_g = exported.stages[i], exported.exits[i]
    feeds = {name: state[pos] for name, pos in stage_g.inputs}
    s_nodes, s_inits, s_out = _inline(_load(stage_g), f"stage{i}", feeds)
    new_state = [s_out[name] for name in stage_g.outputs]
    feeds = {name: new_state[pos] for name, pos in exit_g.inputs}
    e_nodes, e_inits, e_out = _inline(_load(exit_g), f"exit{i}", feeds)
    return s_nodes + e_nodes, s_inits + e_inits, new_state, e_out[exit_g.outputs[0]]


def _model(graph: Any, opset: int) -> Any:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def _input(shape: tuple[int, ...]) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape[1:]])


def static_graph(exported: ExportedModel, input_shape: tuple[int, ...]) -> Any:
    """One graph computing every exit: outputs ``logits0 .. logits{E-1}``."""
    from onnx import TensorProto, helper

    nodes, inits, outputs = [], [], []
    state = ["x"]
    for i in range(len(exported.stages)):
        n, t, state, logits = _stage_and_exit(exported, i, state)
        nodes += n
        inits += t
        nodes.append(helper.make_node("Identity", [logits], [f"logits{i}"]))
        outputs.append(helper.make_tensor_value_info(f"logits{i}", TensorProto.FLOAT, LOGITS))
    g = helper.make_graph(nodes, "static_all_exits", [_input(input_shape)], outputs, inits)
    return _model(g, exported.opset)


def fused_graph(
    exported: ExportedModel, input_shape: tuple[int, ...], thresholds: np.ndarray
) -> Any:
    """One graph with the early exit inside: outputs ``logits`` (of the exit taken) and
    ``exit`` (its index), leaving at the first exit whose max softmax reaches ``thresholds[i]``
    for every row."""
    from onnx import TensorProto, helper

    last = len(exported.stages) - 1
    inits: list = []

    def level(i: int, state: list[str], out_logits: str, out_exit: str) -> list:
        n, t, state, logits = _stage_and_exit(exported, i, state)
        inits.extend(t)
        if i == last:
            return [
                *n,
                helper.make_node("Identity", [logits], [out_logits]),
                helper.make_node(
                    "Constant",
                    [],
                    [out_exit],
                    value=helper.make_tensor(f"exit{i}/index", TensorProto.INT64, [], [i]),
                ),
            ]
        p = f"decide{i}"
        decide = [
            helper.make_node("Softmax", [logits], [f"{p}/p"], axis=-1),
            helper.make_node("ReduceMax", [f"{p}/p"], [f"{p}/conf"], axes=[-1], keepdims=0),
            helper.make_node(
                "Constant",
                [],
                [f"{p}/theta"],
                value=helper.make_tensor(
                    f"{p}/theta_value", TensorProto.FLOAT, [], [float(thresholds[i])]
                ),
            ),
            helper.make_node("GreaterOrEqual", [f"{p}/conf", f"{p}/theta"], [f"{p}/fire"]),
            helper.make_node("Cast", [f"{p}/fire"], [f"{p}/fire_i"], to=TensorProto.INT32),
            helper.make_node("ReduceMin", [f"{p}/fire_i"], [f"{p}/all_i"], keepdims=0),
            helper.make_node("Cast", [f"{p}/all_i"], [f"{p}/leave"], to=TensorProto.BOOL),
        ]
        then_out = [f"{p}/then_logits", f"{p}/then_exit"]
        then_g = helper.make_graph(
            [
                helper.make_node("Identity", [logits], [then_out[0]]),
                helper.make_node(
                    "Constant",
                    [],
                    [then_out[1]],
                    value=helper.make_tensor(f"{p}/index", TensorProto.INT64, [], [i]),
                ),
            ],
            f"{p}/leave",
            [],
            [
                helper.make_tensor_value_info(then_out[0], TensorProto.FLOAT, LOGITS),
                helper.make_tensor_value_info(then_out[1], TensorProto.INT64, []),
            ],
        )
        else_out = [f"{p}/else_logits", f"{p}/else_exit"]
        else_g = helper.make_graph(
            level(i + 1, state, *else_out),
            f"{p}/go_on",
            [],
            [
                helper.make_tensor_value_info(else_out[0], TensorProto.FLOAT, LOGITS),
                helper.make_tensor_value_info(else_out[1], TensorProto.INT64, []),
            ],
        )
        branch = helper.make_node(
            "If",
            [f"{p}/leave"],
            [out_logits, out_exit],
            then_branch=then_g,
            else_branch=else_g,
            name=f"{p}/if",
        )
        return [*n, *decide, branch]

    nodes = level(0, ["x"], "logits", "exit")
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, LOGITS),
        helper.make_tensor_value_info("exit", TensorProto.INT64, []),
    ]
    g = helper.make_graph(nodes, "fused_early_exit", [_input(input_shape)], outputs, inits)
    return _model(g, exported.opset)


def identity_graph(input_shape: tuple[int, ...], fused: bool, opset: int) -> Any:
    """The fixed overhead floor of a deployment: a graph that only passes its input on (inside
    an ``If`` for the fused mode, whose decision is always 'leave')."""
    from onnx import TensorProto, helper

    if not fused:
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
    else:
        then_g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["t"])],
            "leave",
            [],
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", *input_shape[1:]])],
        )
        else_g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["e"])],
            "go_on",
            [],
            [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["batch", *input_shape[1:]])],
        )
        nodes = [
            helper.make_node(
                "Constant",
                [],
                ["c"],
                value=helper.make_tensor("c_value", TensorProto.BOOL, [], [True]),
            ),
            helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        ]
    g = helper.make_graph(
        nodes,
        "identity",
        [_input(input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *input_shape[1:]])],
    )
    return _model(g, opset)


def save_graph(model: Any, folder: Path, stem: str) -> Path:
    """Write ``model`` to ``folder/<stem>-<digest>.onnx`` once (atomically; reused after)."""
    data = model.SerializeToString()
    path = Path(folder) / f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path

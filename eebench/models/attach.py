"""``attach_exits``: any ``nn.Module`` backbone becomes a multi-exit model.

The backbone is traced with ``torch.fx``, treating each named exit module as
one opaque call, and the graph is cut right after each of them. Stage ``i``
is the graph piece between cut ``i - 1`` and cut ``i``, as its own
``GraphModule`` that shares the backbone's submodules (and so its parameters).
What crosses a cut is the stage's state: the exit module's output, last, plus
any other value a later piece still reads (a skip connection that spans the
cut), so a backbone with residual connections splits as well as a plain
``nn.Sequential``.

The final exit is the backbone's own classifier: the graph is cut once more at
the input of the last ``nn.Linear`` called (or of the last operation, or of
the module named by ``classifier``), so the plain network (every stage and the
final head) computes exactly what the backbone computed. The early exits get
``head`` (default: global average pooling and a linear layer, sized from a
probe forward).

Tracing happens once, in the mode the backbone is in; a forward that branches
on ``self.training`` keeps the branch of that mode. A backbone fx cannot
trace gets an error that names the submodule and the line where tracing
stopped, and how to keep that submodule opaque (``leaf_modules``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from eebench.errors import ConfigError
from eebench.models.base import MultiExitModel, State, as_tuple, from_tuple

HeadSpec = (
    Callable[[tuple[int, ...], int], nn.Module]
    | Sequence[nn.Module]
    | Mapping[str, nn.Module]
    | None
)

_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


class AttachError(ConfigError):
    """A backbone or exit list that ``attach_exits`` cannot turn into a multi-exit model."""


class AttachedExitsModel(MultiExitModel):
    """A backbone split into stages at named submodules, with a head on each cut.

    ``backbone`` is the original module (not registered as a child, so the
    weights appear once in ``state_dict``, under the stages); its parameters
    are the stages' parameters, which :meth:`load_backbone_state_dict` uses to
    load a checkpoint written for the backbone alone.
    """

    family = "intermediate"

    def __init__(
        self,
        backbone: nn.Module,
        stages: Sequence[fx.GraphModule],
        heads: Sequence[nn.Module],
        exit_names: Sequence[str],
        num_classes: int,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__(num_classes, input_shape)
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(heads)
        self.exit_names = [*exit_names, "classifier"]
        object.__setattr__(self, "_backbone", backbone)

    @property
    def backbone(self) -> nn.Module:
        """The module the exits were attached to (its parameters are the stages')."""
        return self.__dict__["_backbone"]

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the attached early-exit heads (not the backbone's classifier)."""
        return [p for head in list(self.exits)[:-1] for p in head.parameters()]

    def load_backbone_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load weights saved from the backbone alone (``backbone.state_dict()``)."""
        self.backbone.load_state_dict(state, strict=True)

    def forward_stage(self, i: int, state: State) -> State:
        return from_tuple(self.stages[i](*as_tuple(state)))

    def forward_exit(self, i: int, state: State) -> Tensor:
        return self.exits[i](*as_tuple(state))

    def stage_module(self, i: int) -> nn.Module:
        return self.stages[i]  # already flat: tensors in, a tuple of tensors out

    def exit_module(self, i: int) -> nn.Module:
        return self.exits[i]


class _LastTensorHead(nn.Module):
    """An exit head that reads the last tensor of the state (the exit module's output)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.head(tensors[-1])


def default_head(feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Global average pooling over the spatial axes, then a linear classifier."""
    if len(feature_shape) == 3:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature_shape[0], num_classes)
        )
    if len(feature_shape) == 2:
        return nn.Sequential(
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(feature_shape[0], num_classes)
        )
    if len(feature_shape) == 1:
        return nn.Linear(feature_shape[0], num_classes)
    raise AttachError(
        f"no default head for features of shape {feature_shape} (per sample); give head=... for it"
    )


class _Tracer(fx.Tracer):
    """Keeps the exit modules (and ``leaf_modules``) opaque; remembers where tracing failed."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves
        self.path: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(
            m, module_qualified_name
        )

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        name = self.path_of_module(m)
        self.path.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = name or "(the backbone's own forward)"
            raise
        finally:
            self.path.pop()


def _untraceable(backbone: nn.Module, tracer: _Tracer, err: Exception) -> AttachError:
    import traceback

    frames = [
        f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(_TORCH_DIR)
    ]
    where = ""
    if frames:
        f = frames[-1]
        where = f" at {f.filename}:{f.lineno} ({f.name}: `{(f.line or '').strip()}`)"
    module = tracer.failed_in or "(the backbone's own forward)"
    return AttachError(
        f"backbone {type(backbone).__name__} cannot be traced by torch.fx: in submodule '{module}'"
        f"{where}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Data-"
        "dependent Python control flow (if/for on tensor values) cannot be split; name that "
        f"submodule in leaf_modules=['{module}'] to keep it opaque (exits can then go before or "
        "after it), or rewrite the branch with tensor operations (torch.where)"
    )


def _nearest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    return f"; nearest valid names: {', '.join(repr(c) for c in close)}" if close else ""


def _check_names(
    backbone: nn.Module, exits: Sequence[str], leaf_modules: Sequence[str]
) -> list[str]:
    valid = [n for n, _ in backbone.named_modules() if n]
    for what, names in (("exit", exits), ("leaf module", leaf_modules)):
        for name in names:
            if name not in valid:
                raise AttachError(
                    f"{what} '{name}' is not a submodule of {type(backbone).__name__}{_nearest(name, valid)} "
                    "(names as in backbone.named_modules())"
                )
    if not exits:
        raise AttachError("exits is empty: name at least one submodule to attach an exit after")
    if len(set(exits)) != len(exits):
        raise AttachError(f"exits name a submodule twice: {list(exits)}")
    for a in exits:
        for b in [*exits, *leaf_modules]:
            if b != a and a.startswith(b + "."):
                raise AttachError(
                    f"exit '{a}' lies inside '{b}', which is {'an exit' if b in exits else 'a leaf module'} "
                    "and so runs as one call: attach the exit to a submodule outside it"
                )
    return list(exits)


def _trace(backbone: nn.Module, leaves: set[str]) -> fx.GraphModule:
    tracer = _Tracer(leaves)
    try:
        graph = tracer.trace(backbone)
    except Exception as err:
        raise _untraceable(backbone, tracer, err) from None
    return fx.GraphModule(tracer.root, graph)


def _classifier_node(gm: fx.GraphModule, classifier: str | None, out: fx.Node) -> fx.Node:
    nodes = list(gm.graph.nodes)
    if classifier is not None:
        found = [n for n in nodes if n.op == "call_module" and n.target == classifier]
        if not found:
            called = [str(n.target) for n in nodes if n.op == "call_module"]
            raise AttachError(
                f"classifier '{classifier}' is not called by the backbone's forward{_nearest(classifier, called)}"
            )
        return found[-1]
    linears = [
        n
        for n in nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), nn.Linear)
    ]
    if linears:
        return linears[-1]
    last = out.args[0]
    if not isinstance(last, fx.Node) or last.op == "placeholder":
        raise AttachError(
            "the backbone's forward must return one tensor of logits computed from its input"
        )
    return last


def _node_input(node: fx.Node) -> fx.Node:
    tensors = [a for a in node.all_input_nodes if a.op != "get_attr"]
    if len(tensors) != 1:
        raise AttachError(
            f"the classifier '{node.target}' reads {len(tensors)} values; name a classifier module "
            "with one input (classifier=...)"
        )
    return tensors[0]


def _split(gm: fx.GraphModule, cut_nodes: list[fx.Node]) -> list[fx.GraphModule]:
    """One GraphModule per piece between cuts; the last piece is the final head.

    Piece ``j < len(cut_nodes)`` returns the tuple of values live across cut ``j`` with the cut
    node last; the last piece returns what the backbone returns.
    """
    nodes = list(gm.graph.nodes)
    pos = {n: k for k, n in enumerate(nodes)}
    cuts = [pos[c] for c in cut_nodes]
    part = {}
    for n in nodes:
        if n.op in ("placeholder", "get_attr"):
            part[n] = 0
        else:
            part[n] = sum(1 for c in cuts if c < pos[n])
    live: list[list[fx.Node]] = []
    for j, c in enumerate(cut_nodes):
        crossing = [
            n
            for n in nodes
            if n.op != "get_attr"
            and part[n] <= j
            and n is not c
            and any(part[u] > j for u in n.users)
        ]
        live.append([*crossing, c])
    pieces = []
    for j in range(len(cut_nodes) + 1):
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        inputs = [n for n in nodes if n.op == "placeholder"] if j == 0 else live[j - 1]
        for k, n in enumerate(inputs):
            env[n] = g.placeholder(f"x{k}" if j == 0 else f"s{k}")
        for n in nodes:
            if part[n] != j or n.op in ("placeholder", "get_attr", "output"):
                continue
            for a in n.all_input_nodes:
                if a.op == "get_attr" and a not in env:
                    env[a] = g.node_copy(a)
            env[n] = g.node_copy(n, env.__getitem__)
        if j < len(cut_nodes):
            g.output(tuple(env[n] for n in live[j]))
        else:
            out = nodes[-1]
            g.output(fx.node.map_arg(out.args[0], env.__getitem__))
        g.lint()
        pieces.append(fx.GraphModule(gm, g))
    return pieces


def _make_heads(
    head: HeadSpec, exits: list[str], shapes: list[tuple[int, ...]], num_classes: int
) -> list[nn.Module]:
    if head is None or (callable(head) and not isinstance(head, nn.Module)):
        make = head or default_head
        return [_LastTensorHead(make(shape, num_classes)) for shape in shapes]
    if isinstance(head, Mapping):
        unknown = [k for k in head if k not in exits]
        if unknown:
            raise AttachError(f"head names {unknown}, which are not exits (exits: {exits})")
        return [
            _LastTensorHead(head[name] if name in head else default_head(shape, num_classes))
            for name, shape in zip(exits, shapes)
        ]
    if isinstance(head, Sequence) and not isinstance(head, (str, bytes)):
        if len(head) != len(exits):
            raise AttachError(
                f"head gives {len(head)} modules for {len(exits)} exits {exits}; give one per exit"
            )
        return [_LastTensorHead(h) for h in head]
    raise AttachError(
        f"head must be None, a function (feature_shape, num_classes) -> nn.Module, a list of "
        f"modules (one per exit) or a mapping exit name -> module; got {type(head).__name__}"
    )


@torch.no_grad()
def attach_exits(
    backbone: nn.Module,
    exits: Sequence[str],
    *,
    num_classes: int,
    input_shape: Sequence[int],
    head: HeadSpec = None,
    classifier: str | None = None,
    leaf_modules: Sequence[str] = (),
) -> AttachedExitsModel:
    """Turn ``backbone`` into a multi-exit model with an exit after each submodule in ``exits``.

    ``exits`` are names from ``backbone.named_modules()`` in the order they run (``"layer1"``,
    ``"layer2.1"``, ``"3"`` for an ``nn.Sequential``). ``head`` builds the early exits (see the
    module docstring); the backbone's classifier is the final exit. ``leaf_modules`` are
    submodules fx should not trace into (ones with data-dependent control flow).
    """
    if not isinstance(backbone, nn.Module):
        raise AttachError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    exits = _check_names(backbone, exits, leaf_modules)
    was_training = backbone.training
    backbone.eval()
    try:
        gm = _trace(backbone, set(exits) | set(leaf_modules))
        nodes = list(gm.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise AttachError(
                f"the backbone's forward takes {len(placeholders)} inputs; attach_exits needs a "
                "forward(x) of one input tensor"
            )
        exit_nodes = []
        for name in exits:
            calls = [n for n in nodes if n.op == "call_module" and n.target == name]
            if len(calls) != 1:
                raise AttachError(
                    f"exit '{name}' is called {len(calls)} times by the backbone's forward; an exit "
                    "goes after a submodule that runs exactly once"
                )
            exit_nodes.append(calls[0])
        order = sorted(exits, key=lambda e: nodes.index(exit_nodes[exits.index(e)]))
        if order != exits:
            raise AttachError(f"exits must be listed in the order they run: {order}, not {exits}")
        final_input = _node_input(_classifier_node(gm, classifier, nodes[-1]))
        if nodes.index(final_input) <= nodes.index(exit_nodes[-1]):
            raise AttachError(
                f"exit '{exits[-1]}' is at or after the input of the backbone's classifier; the final "
                "exit already reads there: remove it or attach it earlier"
            )
        pieces = _split(gm, [*exit_nodes, final_input])
        stages, final_head = pieces[:-1], pieces[-1]
        try:
            states = _probe(backbone, stages, input_shape)
        except AttachError:
            raise
        except Exception as err:
            raise AttachError(
                f"the backbone cannot run on input shape {tuple(input_shape)}: "
                f"{type(err).__name__}: {err}"
            ) from None
        shapes = [tuple(s[-1].shape[1:]) for s in states]
        heads = _make_heads(head, exits, shapes[:-1], int(num_classes))
        model = AttachedExitsModel(
            backbone, stages, [*heads, final_head], exits, num_classes, input_shape
        )
        _check_outputs(model, backbone, int(num_classes))
    finally:
        backbone.train(was_training)
    model.train(was_training)
    return model


def _probe(
    backbone: nn.Module, stages: list[fx.GraphModule], input_shape: Sequence[int]
) -> list[tuple[Tensor, ...]]:
    """Each stage's output on a zero batch: the tensors that cross each cut, all tensors."""
    state: tuple[Any, ...] = (torch.zeros(2, *input_shape),)
    states = []
    for i, stage in enumerate(stages):
        state = stage(*state)
        bad = [type(t).__name__ for t in state if not isinstance(t, Tensor)]
        if bad:
            raise AttachError(
                f"the cut after stage {i} carries a non-tensor value ({', '.join(bad)}, e.g. a shape "
                "read with x.size()) into a later stage; move the exit so no such value spans it"
            )
        states.append(state)
    return states


def _check_outputs(model: AttachedExitsModel, backbone: nn.Module, num_classes: int) -> None:
    """Logits of the right shape from every exit, and the plain network == the backbone."""
    x = torch.zeros(2, *model.input_shape)
    reference = backbone(x)
    if not isinstance(reference, Tensor) or reference.dim() != 2:
        raise AttachError(
            f"the backbone's forward returns {type(reference).__name__}"
            + (f" of shape {tuple(reference.shape)}" if isinstance(reference, Tensor) else "")
            + "; it must return logits of shape (batch, num_classes)"
        )
    if reference.shape[1] != num_classes:
        raise AttachError(
            f"the backbone's classifier gives {reference.shape[1]} classes but {num_classes} were "
            "asked for (the dataset's classes): build the backbone with that many outputs"
        )
    outs = model.forward_all(x)
    for i, out in enumerate(outs[:-1]):
        if tuple(out.shape) != (2, num_classes):
            raise AttachError(
                f"head of exit '{model.exit_names[i]}' returns shape {tuple(out.shape)} for a batch of 2; "
                f"it must return (batch, {num_classes})"
            )
    if not torch.allclose(outs[-1], reference, rtol=1e-5, atol=1e-6):
        raise AttachError(
            "the split backbone does not reproduce the backbone's output (its forward depends on "
            "something tracing fixes, e.g. self.training or a global); keep that submodule opaque "
            "with leaf_modules=[...]"
        )

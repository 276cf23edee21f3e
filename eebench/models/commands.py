"""``eebench check-model``: the model contract run on one model.

``eebench list models`` lives in :mod:`eebench.list_models`, outside this package, so that
a cached listing does not import the zoo.
"""

from __future__ import annotations

import argparse

from eebench.input_shape import parse_input_shape


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "check-model",
        help="run the model contract (exits, stages, ONNX parity, costs, executor) on a model",
        description="SPEC is a registry name, package.module:function or path/to/file.py:function. "
        "Prints one PASS/FAIL line per clause with what to fix; exits 2 when a clause fails.",
    )
    c.add_argument("spec", metavar="SPEC")
    c.add_argument(
        "--input-shape", type=parse_input_shape, default=(3, 32, 32), help="C,H,W (default 3,32,32)"
    )
    c.add_argument("--num-classes", type=int, default=10)
    c.add_argument(
        "--config", default="{}", help="the model's config as JSON, e.g. '{\"width\": 8}'"
    )
    c.set_defaults(func=_check_model)


def _check_model(args: argparse.Namespace) -> int:
    import json

    from eebench.errors import ConfigError
    from eebench.models.contract import check_model
    from eebench.models.registry import resolve_model_spec

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON: {err}", source="--config") from None
    if not isinstance(config, dict):
        raise ConfigError("expected a JSON object of config keys", source="--config")
    model = resolve_model_spec(args.spec, config, args.num_classes, args.input_shape)
    shape = ",".join(map(str, args.input_shape))
    print(
        f"model {model.metadata.name} ({type(model).__name__}, family {model.family}): "
        f"{model.num_exits} exits, input {shape}, {args.num_classes} classes"
    )
    results = check_model(model)
    for r in results:
        print(r.line())
    failed = [r.clause for r in results if not r.passed]
    print(
        f"{len(results) - len(failed)}/{len(results)} clauses pass"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )
    return 2 if failed else 0

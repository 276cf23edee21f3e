"""``eebench list models``: the zoo with its exits, parameters and per-exit cumulative MACs."""

from __future__ import annotations

import argparse


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,32,32, got '{text}'") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W, got '{text}'")
    return shape


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = list_sub.add_parser("models", help="registered models with exits, parameters and MACs")
    p.add_argument("--input-shape", type=_parse_shape, default=(3, 32, 32), help="C,H,W (default 3,32,32)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--filter", default=None, help="glob over names, e.g. 'sdn-*'")
    p.set_defaults(func=_list_models)


def _list_models(args: argparse.Namespace) -> int:
    from eebench.models.listing import models_table

    table = models_table(args.input_shape, args.num_classes, args.filter)
    print(f"Models on input {','.join(map(str, args.input_shape))}, {args.num_classes} classes. "
          "MACs are analytic (fvcore; 1 MAC = 1 multiply-add, FLOPs = 2 x MACs).")
    print(table.to_string(index=False))
    if table.attrs.get("note"):
        print(table.attrs["note"])
    return 0

"""``eebench results list``: the runs under a results folder, with status and integrity."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="inspect results bundles")
    rsub = p.add_subparsers(dest="results_command", metavar="ACTION")
    rsub.required = True
    lp = rsub.add_parser("list", help="list runs with status and table integrity")
    lp.add_argument("--root", default="results", help="results folder (default: results)")
    lp.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    from eebench.results.bundle import list_runs

    table = list_runs(args.root)
    if table.empty:
        print(f"no runs under {args.root}/ (run a suite: eebench run quick)")
        return 0
    print(table.to_string(index=False))
    return 0

"""``eebench list policies``: registered policies and baselines, and the confidence measures."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = list_sub.add_parser("policies", help="exit policies, baselines and confidence measures")
    p.add_argument("--filter", default=None, help="glob over names, e.g. 'thresh*'")
    p.set_defaults(func=_list_policies)


def _list_policies(args: argparse.Namespace) -> int:
    from eebench.policies import CONFIDENCE, policies_table

    table = policies_table(args.filter)
    print(
        "Exit policies (kind 'baseline' = reference point, not an early-exit design). "
        "A decision fires when score >= threshold; the final exit takes what is left."
    )
    if not len(table):
        print("(no policy matches)")
    for row in table.itertuples(index=False):
        print(f"  {row.policy:<13} {row.kind:<9} {row.description}")
        print(f"  {'':<13} {'':<9} options: {row.options}; thresholds: {row.thresholds}")
    print()
    print("Confidence measures (higher = more confident):")
    for name in CONFIDENCE.names():
        doc = (CONFIDENCE.get(name).__doc__ or "").strip().splitlines()
        print(f"  {name:<13} {doc[0] if doc else ''}")
    return 0

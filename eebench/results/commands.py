"""``eebench results list`` and ``eebench results clean``: the runs under a results folder."""

from __future__ import annotations

import argparse
import shutil


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="inspect results bundles")
    rsub = p.add_subparsers(dest="results_command", metavar="ACTION")
    rsub.required = True
    lp = rsub.add_parser("list", help="list runs with status and table integrity")
    lp.add_argument("--root", default="results", help="results folder (default: results)")
    lp.set_defaults(func=_list)
    cp = rsub.add_parser(
        "clean",
        help="remove what interrupted runs left behind (shows it first; --yes removes it)",
        description="Incomplete run folders (killed while their first manifest was being "
        "written) and temporary files of interrupted writes, in runs no live process holds. "
        "Finished steps and partial runs are never removed: continue those with --resume.",
    )
    cp.add_argument("--root", default="results", help="results folder (default: results)")
    cp.add_argument("--yes", action="store_true", help="remove them (default: only list them)")
    cp.set_defaults(func=_clean)


def _list(args: argparse.Namespace) -> int:
    from eebench.results.bundle import list_runs

    table = list_runs(args.root)
    if table.empty:
        print(f"no runs under {args.root}/ (run a suite: eebench run quick)")
        return 0
    print(table.to_string(index=False))
    return 0


def _clean(args: argparse.Namespace) -> int:
    from eebench.results.bundle import clean_candidates

    found = clean_candidates(args.root)
    if not found:
        print(f"nothing to clean under {args.root}/")
        return 0
    verb = "removing" if args.yes else "would remove"
    for item in found:
        print(f"{verb} {item.path}{'/' if item.path.is_dir() else ''}  ({item.why})")
    if not args.yes:
        print(f"{len(found)} item(s); run again with --yes to remove them")
        return 0
    for item in found:
        if item.path.is_dir():
            shutil.rmtree(item.path)
        else:
            item.path.unlink(missing_ok=True)
    print(f"removed {len(found)} item(s)")
    return 0

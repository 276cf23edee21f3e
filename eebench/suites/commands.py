"""``eebench run SUITE`` and ``eebench list suites``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a benchmark suite (a YAML file or a built-in name such as 'quick')"
    )
    p.add_argument("suite", help="suite file or built-in suite name")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue a partial run folder, redoing only what is missing",
    )
    p.add_argument(
        "--force-resume",
        action="store_true",
        help="with --resume: continue a run made by another eebench version or commit "
        "(recorded in the manifest)",
    )
    p.add_argument(
        "--run-id",
        default=None,
        help="name of the run folder: letters, digits, '-', '_', '.' (default: UTC timestamp)",
    )
    p.add_argument(
        "--backend",
        action="append",
        default=None,
        help="run only these backends (repeatable), e.g. --backend torch-cpu",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="checkpoint/ONNX cache folder (default: <out>/cache; with --resume: the run's cache)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the steps as Ray tasks: 'local' (Ray on this machine), 'auto' (the cluster "
        "this machine belongs to) or ray://HOST:PORT; device-bound steps of a backend "
        "'<backend>@<device>' run on the node with the Ray resource 'device:<device>' "
        "(needs: pip install 'eebench[cluster]')",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the HTML/Markdown report")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are shown only on a terminal; redirected output gets one "
        "line per finished step)",
    )
    p.set_defaults(func=_run)
    lp = list_sub.add_parser("suites", help="built-in suites")
    lp.set_defaults(func=_list_suites)


def show_progress_bars(no_progress: bool) -> bool:
    """Bars redraw in place: only on a terminal. In a file or a pipe every redraw would stay
    (one log line of thousands of characters), so there the step lines alone report progress."""
    if no_progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _run(args: argparse.Namespace) -> int:
    from eebench.cluster.plan import check_address
    from eebench.errors import ConfigError
    from eebench.suites.runner import RunOptions, run_suite

    if args.force_resume and not args.resume:
        raise ConfigError("--force-resume applies to --resume RUN only; add --resume or drop it")
    options = RunOptions(
        out_root=Path(args.out),
        cache_root=Path(args.cache) if args.cache else None,
        resume=Path(args.resume) if args.resume else None,
        run_id=args.run_id,
        backends=args.backend,
        progress=show_progress_bars(args.no_progress),
        report=not args.no_report,
        force_resume=args.force_resume,
        cluster=check_address(args.cluster) if args.cluster else None,
    )
    run_suite(args.suite, options)
    return 0


def _list_suites(args: argparse.Namespace) -> int:
    import pandas as pd

    from eebench.suites.locate import builtin_suites
    from eebench.suites.schema import load_suite_file

    rows = []
    for name, path in builtin_suites().items():
        spec = load_suite_file(path)
        rows.append(
            {
                "suite": name,
                "dataset": spec.dataset.name,
                "models": len(spec.models),
                "backends": len(spec.backends),
                # whole words only: a description is shortened at a word, marked with "..."
                "description": textwrap.shorten(spec.description, width=80, placeholder=" ..."),
            }
        )
    print(pd.DataFrame(rows).to_string(index=False) if rows else "no built-in suites found")
    return 0

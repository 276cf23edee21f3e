"""The ``eebench`` command.

Each package that offers commands has a ``commands.py`` with
``add_commands(subparsers)``; this module only wires them together and turns
eebench's own errors into a one-line message and a non-zero exit code (no
traceback for bad input; ``EEBENCH_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from eebench import __version__
from eebench.errors import EEBenchError

# one line per package that contributes subcommands
COMMAND_MODULES: tuple[str, ...] = (
    "eebench.models.commands",
    "eebench.backends.commands",
    "eebench.policies.commands",
    "eebench.results.commands",
    "eebench.report.commands",
    "eebench.profiles.commands",
    "eebench.training.commands",
    "eebench.suites.commands",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eebench",
        description="Hardware-aware benchmarking and profiling of early-exit neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"eebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    list_parser = sub.add_parser("list", help="list models, policies, backends, suites or profiles")
    list_sub = list_parser.add_subparsers(dest="what", metavar="WHAT")
    list_sub.required = True
    parser.set_defaults(_list_sub=list_sub)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_commands(sub, list_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (EEBenchError, ValueError, KeyError, FileNotFoundError) as err:
        if os.environ.get("EEBENCH_DEBUG"):
            raise
        print(f"eebench {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("eebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

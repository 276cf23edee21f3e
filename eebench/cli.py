"""The ``eebench`` command.

Each package that offers commands has a ``commands.py`` with
``add_commands(subparsers)``; this module only wires them together and turns
eebench's own errors into a one-line message and a non-zero exit code (no
traceback for bad input; ``EEBENCH_DEBUG=1`` shows it). Operating-system errors (a full or
read-only file system, a file where a folder is expected) get the path, the option it came
from and the fix; Ctrl-C during a run prints the state the run was left in and how to resume.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from eebench import __version__
from eebench.errors import EEBenchError, RunInterrupted

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


EXIT_INTERRUPTED = 130

# the command-line spelling of argument names that hold paths (others: --<dest>)
_PATH_OPTIONS = {"suite": "SUITE", "runs": "RUN", "run_a": "RUN_A", "run_b": "RUN_B"}

# argument names whose values are never paths (sub-command names and the like)
_NOT_PATHS = frozenset({"command", "what", "results_command", "profile_command", "func"})

# how to fix an operating-system error, by errno; {option} names the argument involved
_OS_FIXES = {
    errno.ENOSPC: "the file system is full: free space or choose another {option}; an "
    "interrupted run stays partial and continues with --resume",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another {option}; an "
    "interrupted run stays partial and continues with --resume",
    errno.EROFS: "the file system is read-only: choose a writable folder with {option}",
    errno.EACCES: "permission denied: choose a folder you may write with {option}, or fix its "
    "permissions",
    errno.EPERM: "operation not permitted: choose a folder you may write with {option}",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose a folder with {option}",
    errno.EEXIST: "a file of that name exists already: choose another {option}",
    errno.EISDIR: "this is a folder where a file was expected: check {option}",
    errno.ENOENT: "no such file or folder: check {option}",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter {option}",
}


def _option_for(path: str | None, args: argparse.Namespace) -> str:
    """The argument whose value the failing path is (or lies below)."""
    if not path:
        return "--out or --cache"
    target = os.path.abspath(path)
    best, best_len = "", -1
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, (str, os.PathLike)) or dest.startswith("_") or dest in _NOT_PATHS:
                continue
            root = os.path.abspath(os.fspath(v))
            if (target == root or target.startswith(root.rstrip(os.sep) + os.sep)) and len(
                root
            ) > best_len:
                best, best_len = _PATH_OPTIONS.get(dest, "--" + dest.replace("_", "-")), len(root)
    return f"{best} (now {_value_of(best, args)})" if best else "--out or --cache"


def _value_of(option: str, args: argparse.Namespace) -> str:
    for dest, name in _PATH_OPTIONS.items():
        if name == option:
            return str(getattr(args, dest, ""))
    return str(getattr(args, option.lstrip("-").replace("-", "_"), ""))


def describe_os_error(err: OSError, args: argparse.Namespace) -> str:
    """What failed, where (path and the option it came from) and how to fix it, in one line."""
    path = err.filename if err.filename is not None else None
    option = _option_for(os.fspath(path) if path is not None else None, args)
    what = err.strerror or type(err).__name__
    fix = _OS_FIXES.get(err.errno or -1, "check {option}").format(option=option)
    where = f" at {os.fspath(path)}" if path is not None else ""
    return f"{what}{where}: {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (EEBenchError, ValueError, KeyError, OverflowError) as err:
        if os.environ.get("EEBENCH_DEBUG"):
            raise
        print(f"eebench {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_USAGE)
    except OSError as err:
        if os.environ.get("EEBENCH_DEBUG"):
            raise
        print(f"eebench {args.command}: error: {describe_os_error(err, args)}", file=sys.stderr)
        return EXIT_USAGE
    except RunInterrupted as err:
        print(f"eebench {args.command}: interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        what = (
            "before a run folder was created; nothing was written"
            if args.command == "run"
            else "nothing more was written"
        )
        print(f"eebench {args.command}: interrupted {what}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

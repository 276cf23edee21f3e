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
    "eebench.list_models",
    "eebench.models.commands",
    "eebench.backends.commands",
    "eebench.backends.export_command",
    "eebench.policies.commands",
    "eebench.results.commands",
    "eebench.report.commands",
    "eebench.profiles.commands",
    "eebench.training.commands",
    "eebench.suites.commands",
)

# Which module adds each command, and its one-line help. Importing a command module imports its
# package (the model zoo, torch, pandas: seconds), so the parser imports only the module of the
# command being run and shows the others from this table; a test holds the table to the modules.
COMMANDS: dict[str, tuple[str | None, str]] = {
    "list": (None, "list models, policies, backends, suites or profiles"),
    "check-model": (
        "eebench.models.commands",
        "run the model contract (exits, stages, ONNX parity, costs, executor) on a model",
    ),
    "export": (
        "eebench.backends.export_command",
        "export a model's stages and exit heads to ONNX graphs",
    ),
    "results": ("eebench.results.commands", "inspect results bundles"),
    "report": ("eebench.report.commands", "HTML + Markdown report of one or more runs"),
    "compare": (
        "eebench.report.commands",
        "latency, accuracy and exit-distribution changes between two runs (exit 1 on a regression)",
    ),
    "profile": (
        "eebench.profiles.commands",
        "measure, validate, submit or show hardware profiles",
    ),
    "train": (
        "eebench.training.commands",
        "train one model on a dataset and save its checkpoint and per-exit metrics",
    ),
    "run": (
        "eebench.suites.commands",
        "run a benchmark suite (a YAML file or a built-in name such as 'quick')",
    ),
}
LIST_COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("eebench.list_models", "registered models with exits, parameters and MACs"),
    "backends": (
        "eebench.backends.commands",
        "backends (available or why not), providers and energy meters",
    ),
    "policies": ("eebench.policies.commands", "exit policies, baselines and confidence measures"),
    "profiles": ("eebench.profiles.commands", "hardware profiles (built in and community)"),
    "schemes": ("eebench.training.commands", "training schemes"),
    "datasets": ("eebench.training.commands", "datasets and their options"),
    "suites": ("eebench.suites.commands", "built-in suites"),
}

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a tool killed by a closed pipe returns


def _modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules the command line needs: the one owning its (sub)command, or none."""
    words = [w for w in argv if not w.startswith("-")]
    if not words:
        return ()
    command = words[0]
    if command == "list":
        if len(words) > 1 and words[1] in LIST_COMMANDS:
            return (LIST_COMMANDS[words[1]][0],)
        return ()
    module = COMMANDS.get(command, (None, ""))[0]
    return (module,) if module else ()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``eebench`` parser; with ``argv``, only the modules that command needs are imported.

    Commands whose module is not imported get a placeholder parser with their help line,
    so ``eebench --help`` lists every command without importing any of them.
    """
    parser = argparse.ArgumentParser(
        prog="eebench",
        description="Hardware-aware benchmarking and profiling of early-exit neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"eebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = COMMAND_MODULES if argv is None else _modules_for(argv)
    list_parser = sub.add_parser("list", help=COMMANDS["list"][1])
    list_sub = list_parser.add_subparsers(dest="what", metavar="WHAT")
    list_sub.required = True
    parser.set_defaults(_list_sub=list_sub)
    for name in modules:
        module = importlib.import_module(name)
        module.add_commands(sub, list_sub)
    for name, (_, text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text)
    for name, (_, text) in LIST_COMMANDS.items():
        if name not in list_sub.choices:
            list_sub.add_parser(name, help=text)
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


def _stdout_closed() -> int:
    """A reader that went away (``eebench results list | head -1``) ends the command quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail too
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):  # a placeholder was chosen: build the full parser
            args = build_parser().parse_args(argv)
    except BrokenPipeError:  # --help into a closed pipe
        return _stdout_closed()
    except SystemExit:  # --help, --version or a usage error: argparse printed, then exits
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _stdout_closed()
        raise
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
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

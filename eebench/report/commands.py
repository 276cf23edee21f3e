"""``eebench report RUN...`` and ``eebench compare RUN_A RUN_B``."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="HTML + Markdown report of one or more runs",
        description="Write a self-contained HTML page (figures embedded) and a Markdown summary "
        "(with PNG figures beside it). Several runs are compared side by side.",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders, e.g. results/quick/<run-id>"
    )
    p.add_argument("--out", default=None, help="output folder (default: <first run>/report)")
    p.set_defaults(func=_report)

    c = sub.add_parser(
        "compare",
        help="latency, accuracy and exit-distribution changes between two runs (exit 1 on a regression)",
        description="Compare run B against run A. A latency regression needs the whole "
        "block-bootstrap interval of median(B)/median(A), Bonferroni-adjusted over the parts, above "
        "1 + band. Exit code 0: no regression; 1: a regression; 2: bad input (missing run, "
        "damaged table).",
    )
    c.add_argument("run_a", metavar="RUN_A", help="the reference run")
    c.add_argument("run_b", metavar="RUN_B", help="the run under test")
    c.add_argument(
        "--band",
        type=float,
        default=0.10,
        help="minimum latency effect: a regression needs median(B)/median(A) above 1 + band "
        "with confidence (default 0.10: factor 1.10, asv's default)",
    )
    c.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="family-wise significance level across the compared parts (default 0.05)",
    )
    c.add_argument(
        "--accuracy-band",
        type=float,
        default=0.01,
        help="absolute accuracy band at calibrated points (default 0.01 = 1 point)",
    )
    c.set_defaults(func=_compare)


def _report(args: argparse.Namespace) -> int:
    from eebench.report.build import build_report

    files = build_report(args.runs, args.out)
    print(f"wrote {files.html} ({len(files.figures)} figures embedded)")
    print(f"wrote {files.markdown} (figures as PNG beside it)")
    for name, why in files.missing.items():
        print(f"  not shown: {name}: {why}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from eebench.results.bundle import Run
    from eebench.results.compare import compare_runs, format_comparison, has_regression

    table = compare_runs(
        args.run_a, args.run_b, band=args.band, alpha=args.alpha, accuracy_band=args.accuracy_band
    )
    label_a, label_b = Run.open(args.run_a).label, Run.open(args.run_b).label
    print(format_comparison(table, args.band, args.alpha, label_a, label_b, args.accuracy_band))
    print(
        "\nThe same verdicts with a figure of the changes: "
        f"eebench report {args.run_a} {args.run_b} --out <folder>"
    )
    return 1 if has_regression(table) else 0

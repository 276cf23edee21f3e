"""``eebench profile measure|validate|submit|show|estimate`` and ``eebench list profiles``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MEASURED_SUBDIR = "measured"  # under hardware_profiles/community/: measured, not yet submitted


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure, validate, submit or show hardware profiles")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION")
    psub.required = True

    m = psub.add_parser("measure", help="micro-benchmark this machine and write a profile")
    m.add_argument(
        "--name", default=None, help="profile name (default: from the CPU model and threads)"
    )
    m.add_argument("--backend", default="torch-cpu", choices=["torch-cpu", "torch-cuda"])
    m.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's current)"
    )
    m.add_argument(
        "--out",
        default=None,
        help="output file (default: hardware_profiles/community/measured/<name>.yaml, a draft "
        "that 'eebench profile submit' validates and files as a community profile)",
    )
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    m.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "thread"],
        help="wall: elapsed time (default); thread: CPU time of the calling thread, for --threads 1 "
        "on a machine shared with other work",
    )
    m.add_argument(
        "--statistic",
        default="median",
        choices=["median", "min"],
        help="what each benchmark reports: the median call (default) or the fastest, least "
        "disturbed call (for a machine shared with other work)",
    )
    m.add_argument(
        "--min-time", type=float, default=0.3, help="seconds per micro-benchmark (default 0.3)"
    )
    m.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="passes through the benchmark list, each taking its share of --min-time (default 3)",
    )
    m.set_defaults(func=_measure)

    v = psub.add_parser("validate", help="check profile files (schema, units, provenance, peaks)")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(func=_validate)

    s = psub.add_parser(
        "submit", help="validate a profile and file it under hardware_profiles/community/"
    )
    s.add_argument("file", metavar="FILE")
    s.set_defaults(func=_submit)

    sh = psub.add_parser("show", help="show a profile with the provenance of every number")
    sh.add_argument("name", metavar="NAME", help="profile name or path to a profile file")
    sh.set_defaults(func=_show)

    e = psub.add_parser(
        "estimate", help="estimate per-stage latency and energy of a model on a profile"
    )
    e.add_argument("model", metavar="MODEL")
    e.add_argument("profile", metavar="PROFILE")
    e.add_argument("--batch-size", type=int, default=1)
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    e.add_argument("--engine", default=None, choices=["cpu", "cuda_cores", "tensor_cores", "dla"])
    e.add_argument("--input-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    e.add_argument("--num-classes", type=int, default=10)
    e.set_defaults(func=_estimate)

    lp = list_sub.add_parser("profiles", help="hardware profiles (built in and community)")
    lp.set_defaults(func=_list_profiles)


def _measure(args: argparse.Namespace) -> int:
    import torch

    from eebench.profiles.locate import community_profiles_dir
    from eebench.profiles.measure import default_name, measure_profile, write_profile
    from eebench.suites.commands import show_progress_bars

    threads = args.threads or torch.get_num_threads()
    name = args.name or default_name(threads)
    command = (
        "eebench " + " ".join(sys.argv[1:])
        if sys.argv and Path(sys.argv[0]).name == "eebench"
        else None
    )
    data = measure_profile(
        name,
        backend=args.backend,
        threads=threads,
        command=command,
        min_time_s=args.min_time,
        clock=args.clock,
        statistic=args.statistic,
        rounds=args.rounds,
        progress=show_progress_bars(False),
    )
    # never the current folder by surprise: a draft beside the community profiles, which
    # `profile submit` validates, checksums and files under community/ itself
    out_path = args.out or community_profiles_dir() / MEASURED_SUBDIR / f"{data['name']}.yaml"
    out = write_profile(data, out_path, overwrite=args.overwrite)
    print(
        f"wrote {out} (profile '{data['name']}': {args.backend}, {threads} threads); "
        f"check it with: eebench profile validate {out}; share it with: eebench profile submit {out}"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from eebench.profiles.validate import validate_file

    bad = 0
    for f in args.files:
        issues = validate_file(f)
        for issue in issues:
            print(issue)
        if issues:
            bad += 1
        else:
            print(f"{f}: ok")
    if bad:
        print(f"{bad} of {len(args.files)} profile(s) have problems", file=sys.stderr)
    return 1 if bad else 0


def _submit(args: argparse.Namespace) -> int:
    from eebench.profiles.submit import submit_profile

    print(submit_profile(args.file).pull_request_text())
    return 0


def _show(args: argparse.Namespace) -> int:
    from eebench.profiles.locate import load_profile
    from eebench.profiles.show import profile_text

    print(profile_text(load_profile(args.name)))
    return 0


def _estimate(args: argparse.Namespace) -> int:
    import pandas as pd

    from eebench.models import create_model
    from eebench.profiles.estimator import estimate_model

    shape = tuple(int(s) for s in args.input_shape.split(","))
    model = create_model(args.model, num_classes=args.num_classes, input_shape=shape)
    table = estimate_model(
        model,
        args.profile,
        batch_size=args.batch_size,
        precision=args.precision,
        engine=args.engine,
    )
    cols = [
        "name",
        "layers",
        "macs",
        "compute_bound_ms",
        "memory_bound_ms",
        "overhead_ms",
        "latency_ms",
        "energy_mj",
    ]
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
        print(
            f"{args.model} on {args.profile} ({table['engine'].iat[0]}, {args.precision}, batch "
            f"{args.batch_size}); every number is {table['source'].iat[0]} (MACs analytic; FLOPs = 2 x MACs)"
        )
        print(table[cols].to_string(index=False))
        print(
            "latency_ms = compute_bound_ms (compute-bound operators) + memory_bound_ms "
            "(memory-bound operators) + overhead_ms (per-operator and module-call overhead)"
        )
    if table["assumptions"].iat[0]:
        print(f"assumptions: {table['assumptions'].iat[0]}")
    from eebench.measure.environment import capture_environment
    from eebench.profiles.host import host_mismatch
    from eebench.profiles.locate import load_profile

    found = host_mismatch(load_profile(args.profile), capture_environment())
    if found is not None:
        print(f"WARNING: {found.message()}", file=sys.stderr)
    return 0


def _list_profiles(args: argparse.Namespace) -> int:
    from eebench.profiles.show import profiles_table

    table = profiles_table()
    if table.empty:
        print("no hardware profiles found")
        return 0
    print(
        "Hardware profiles (peaks: 1 MAC = 2 FLOPs; see eebench profile show NAME for provenance)"
    )
    print(table.to_string(index=False))
    return 0

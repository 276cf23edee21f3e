"""``eebench list backends``: each backend with its availability (or why not) and providers,
then the energy meters and whether each can be read here."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction, list_sub: argparse._SubParsersAction) -> None:
    p = list_sub.add_parser(
        "backends", help="backends (available or why not), providers and energy meters"
    )
    p.add_argument("--filter", default=None, help="glob over backend names, e.g. 'torch-*'")
    p.set_defaults(func=_list_backends)


def backends_table(filter: str | None = None) -> list[dict[str, str]]:
    """One row per backend name (families once, with the members they know)."""
    from eebench.backends.base import BACKEND_FAMILIES, BACKENDS, list_backends

    rows = []
    for name in list_backends(filter):
        if name in BACKENDS:
            backend = BACKENDS.get(name)()
            ok, reason = backend.available()
            providers = ", ".join(backend.providers()) or "-"
            rows.append(
                {
                    "backend": name,
                    "status": "available" if ok else f"unavailable: {reason}",
                    "providers": providers,
                }
            )
            continue
        family = BACKEND_FAMILIES.get(name.split(":", 1)[0])
        members = family.members() if family.members is not None else []
        shown = ", ".join(members[:6]) + (
            f", ... ({len(members)} in all)" if len(members) > 6 else ""
        )
        rows.append(
            {
                "backend": name,
                "status": "family: give an argument after ':'",
                "providers": f"known: {shown}" if members else "-",
            }
        )
    return rows


def meters_table() -> list[dict[str, str]]:
    from eebench.measure.energy import ENERGY_METERS

    rows = []
    for name in ENERGY_METERS.names():
        meter = ENERGY_METERS.get(name)()
        ok, reason = meter.available()
        rows.append({"meter": name, "status": "available" if ok else f"unavailable: {reason}"})
    return rows


def _format(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(none)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys[:-1]}
    lines = ["  ".join(k.ljust(widths.get(k, 0)) for k in keys).rstrip()]
    for r in rows:
        lines.append("  ".join(r[k].ljust(widths.get(k, 0)) for k in keys).rstrip())
    return "\n".join(lines)


def _list_backends(args: argparse.Namespace) -> int:
    print("Backends")
    print(_format(backends_table(args.filter)))
    print()
    print("Energy meters")
    print(_format(meters_table()))
    return 0

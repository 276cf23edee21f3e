"""The report's opening answer: per cost source and calibration target, the recommended model and
policy (chosen on val, reported on test), what it costs, and what it saves over the plain network.

The choice is :func:`eebench.suites.summary.pick_per_target` (val rows only). The numbers shown
beside it come from the bundle with their provenance: test accuracy and expected MACs from the
exit record and the analytic counts; for a measured cost source, the true early-exit run of the
same operating point in ``validation`` (mean latency with its 95% interval, speedup over the plain
network with its interval, net energy where a meter saw the device), next to the expected latency
predicted from the measured parts; for an estimated cost source, the profile's estimate, which
has no interval and is never mixed with measurements (a table of its own).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from eebench.report.data import RunData, combined
from eebench.report.derive import policy_label
from eebench.report.tables import fmt_count, fmt_num, fmt_pct
from eebench.suites.summary import ACCURACY_SLACK, pick_per_target

NO_INTERVAL = "no interval in this run"
SLOWER = (
    " It is slower than the plain network: on this device early exit does not pay for this "
    "target; run the plain network."
)


@dataclass
class Headline:
    """One cost source's recommendations: a table (one row per calibration target) and the
    sentence that says it in words."""

    run: str
    source: str
    kind: str  # "measured" or "estimated"
    table: pd.DataFrame
    sentence: str


def _parse_source(source: str) -> dict[str, str]:
    """``measured:torch-cpu,threads=1,batch=1`` -> kind, backend, threads, batch."""
    kind, _, rest = source.partition(":")
    name, *opts = rest.split(",")
    out = {"kind": kind, "name": name}
    for opt in opts:
        key, _, value = opt.partition("=")
        out[key.strip()] = value.strip()
    return out


def _describe(source: str) -> str:
    s = _parse_source(source)
    if s["kind"] == "estimated":
        return f"{s['name']} (estimated from its hardware profile)"
    bits = []
    if s.get("threads"):
        bits.append(f"{s['threads']} thread{'s' if s['threads'] != '1' else ''}")
    if s.get("batch"):
        bits.append(f"batch {s['batch']}")
    return s["name"] + (f", {', '.join(bits)}" if bits else "")


def _interval(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return ""
    text = fmt_num(value, digits)
    if pd.isna(lo) or pd.isna(hi):
        return text
    return f"{text} [{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]"


def _validation_row(val: pd.DataFrame, run: str, pick: pd.Series) -> pd.Series | None:
    """The true early-exit run of the picked point on the source's backend, at batch 1."""
    if val.empty:
        return None
    s = _parse_source(str(pick["cost_source"]))
    want = {
        "run": run,
        "model": pick["model"],
        "backend": s["name"],
        "policy": pick["policy"],
        "confidence": pick["confidence"],
        "calibration": pick["calibration"],
    }
    rows = val
    for col, value in want.items():  # a column a run does not record matches anything
        if col in rows.columns:
            rows = rows[rows[col].astype(str) == str(value)]
    if "batch_size" in rows.columns:
        rows = rows[pd.to_numeric(rows["batch_size"], errors="coerce") == 1]
    if s.get("threads") and "threads" in rows.columns:
        rows = rows[pd.to_numeric(rows["threads"], errors="coerce") == float(s["threads"])]
    return rows.iloc[0] if len(rows) else None


def _get(row: pd.Series | None, col: str) -> float:
    if row is None or col not in row.index:
        return math.nan
    value = pd.to_numeric(row[col], errors="coerce")
    return float(value) if pd.notna(value) else math.nan


def _saving(value: float, plain: float) -> str:
    if pd.isna(value) or pd.isna(plain) or not plain:
        return ""
    return f"{100 * (value / plain - 1):+.0f}%"


def _row(pick: pd.Series, check: pd.Series | None, measured: bool) -> dict[str, str]:
    row = {
        "calibration target (val)": _target_text(pick),
        "recommended model": f"{pick['model']} ({pick['family']})",
        "policy": policy_label(str(pick["policy"]), str(pick["confidence"])),
        "test accuracy [%] (plain network)": _with_plain(
            fmt_pct(pick["accuracy"]), fmt_pct(pick["final_accuracy"])
        ),
        "expected MACs (analytic) vs plain": _with_plain(
            fmt_count(pick["expected_macs"]), _saving(pick["expected_macs"], pick["final_macs"])
        ),
    }
    if measured:
        ms, lo, hi = (
            _get(check, "measured_latency_ms"),
            _get(check, "measured_latency_ci_low_ms"),
            _get(check, "measured_latency_ci_high_ms"),
        )
        row["latency [ms/sample] (true early exit, 95% CI)"] = (
            _interval(ms, lo, hi) if check is not None else "not validated in this run"
        )
        row["expected latency [ms] from measured parts (plain)"] = _with_plain(
            fmt_num(pick["expected_latency_ms"]), fmt_num(pick["final_latency_ms"])
        )
        speed = _get(check, "speedup_vs_backbone")
        row["speedup over plain network [x] (95% CI)"] = (
            _interval(
                speed,
                _get(check, "speedup_vs_backbone_ci_low"),
                _get(check, "speedup_vs_backbone_ci_high"),
            )
            + (
                f" ({NO_INTERVAL})"
                if pd.notna(speed) and pd.isna(_get(check, "speedup_vs_backbone_ci_low"))
                else ""
            )
            if pd.notna(speed)
            else ""
        )
        energy = _get(check, "measured_energy_mj")
        if pd.notna(energy):
            row["energy [mJ/sample] (true early exit, net, 95% CI)"] = (
                _interval(
                    energy,
                    _get(check, "measured_energy_ci_low_mj"),
                    _get(check, "measured_energy_ci_high_mj"),
                )
                + f" ({check['energy_source']})"
            )
        elif pd.notna(pick["expected_energy_mj"]):
            row["energy [mJ/sample] (true early exit, net, 95% CI)"] = (
                f"{fmt_num(pick['expected_energy_mj'])} ({pick['energy_source'] or 'expected'})"
            )
        else:
            row["energy [mJ/sample] (true early exit, net, 95% CI)"] = "no meter readable"
    else:
        row["latency [ms/sample] (estimated, plain)"] = _with_plain(
            fmt_num(pick["expected_latency_ms"]), fmt_num(pick["final_latency_ms"])
        )
        ratio = (
            pick["final_latency_ms"] / pick["expected_latency_ms"]
            if pick["expected_latency_ms"]
            else math.nan
        )
        row["speedup over plain network [x] (estimated, no interval)"] = fmt_num(ratio)
        row["energy [mJ/sample] (estimated, plain)"] = (
            _with_plain(fmt_num(pick["expected_energy_mj"]), fmt_num(pick["final_energy_mj"]))
            if pd.notna(pick["expected_energy_mj"])
            else "profile has no power figures"
        )
    row["val accuracy [%] (chose it)"] = fmt_pct(pick["val_accuracy"])
    return row


_NUMBER = re.compile(r"\d+(?:\.\d+)?e[+-]?\d+")


def _target_text(pick: pd.Series) -> str:
    """``within-1%-of-final``; a per-model budget with its MACs in words (``budget (per model):
    152 k MACs``)."""
    target, name = str(pick["target"]), str(pick["calibration"])
    if target == name:
        return target
    amount = _NUMBER.search(name)
    return f"{target}: {fmt_count(float(amount.group()))} MACs" if amount else f"{target}: {name}"


def _with_plain(value: str, plain: str) -> str:
    """``value (plain)``; the value alone where the run has no final-only row."""
    return f"{value} ({plain})" if plain else value


def _primary(picks: pd.DataFrame) -> pd.Series:
    """The target a device's sentence speaks of: an accuracy target where there is one."""
    acc = picks[picks["target"].astype(str).str.contains("of-final")]
    return (acc if len(acc) else picks).iloc[0]


def _sentence(run_label: str, multi: bool, pick: pd.Series, check: pd.Series | None) -> str:
    s = _parse_source(str(pick["cost_source"]))
    who = f"{pick['model']} with {policy_label(str(pick['policy']), str(pick['confidence']))}"
    target = str(pick["target"])
    where = f"{run_label}: " if multi else ""
    acc = f"{fmt_pct(pick['accuracy'])}% test accuracy" + (
        f" (plain network {fmt_pct(pick['final_accuracy'])}%)"
        if pd.notna(pick["final_accuracy"])
        else ""
    )
    if s["kind"] == "measured" and check is not None:
        ms = _get(check, "measured_latency_ms")
        speed = _get(check, "speedup_vs_backbone")
        lo, hi = (
            _get(check, "speedup_vs_backbone_ci_low"),
            _get(check, "speedup_vs_backbone_ci_high"),
        )
        ci = f" [{fmt_num(lo)}, {fmt_num(hi)}]" if pd.notna(lo) and pd.notna(hi) else ""
        plain = ms * speed if pd.notna(speed) else math.nan
        slower = pd.notna(hi) and hi < 1 or pd.isna(hi) and pd.notna(speed) and speed < 1
        return (
            f"{where}On {_describe(str(pick['cost_source']))} (measured), for target {target}, {who} "
            f"needs {fmt_num(ms)} ms per sample ({_saving(ms, plain)} vs the plain network's "
            f"{fmt_num(plain)} ms; speedup {fmt_num(speed)}x{ci}) at {acc}."
            + (SLOWER if slower else "")
        )
    kind = "estimated, not measured" if s["kind"] == "estimated" else "expected from measured parts"
    plain = (
        f"; {_saving(pick['expected_latency_ms'], pick['final_latency_ms'])} vs the plain "
        f"network's {fmt_num(pick['final_latency_ms'])} ms"
        if pd.notna(pick["final_latency_ms"])
        else ""
    )
    slower = pick["expected_latency_ms"] > pick["final_latency_ms"]
    return (
        f"{where}On {_describe(str(pick['cost_source']))}, for target {target}, {who} needs "
        f"{fmt_num(pick['expected_latency_ms'])} ms per sample ({kind}{plain}) at {acc}."
        + (SLOWER if slower else "")
    )


def headlines(runs: list[RunData]) -> list[Headline]:
    """Per run and cost source (measured first), the recommendation table and its sentence."""
    val = combined(runs, "validation")
    multi = len(runs) > 1
    out: list[Headline] = []
    for run in runs:
        picks = pick_per_target(run.table("operating_points"))
        if picks.empty:
            continue
        picks = picks[picks["cost_source"] != ""]
        order = sorted(
            picks["cost_source"].unique(), key=lambda s: (not s.startswith("measured"), s)
        )
        for source in order:
            sub = picks[picks["cost_source"] == source]
            measured = source.startswith("measured")
            checks = [
                _validation_row(val, run.label, p) if measured else None for _, p in sub.iterrows()
            ]
            table = pd.DataFrame(
                [_row(p, c, measured) for (_, p), c in zip(sub.iterrows(), checks)]
            )
            primary = _primary(sub)
            check = checks[list(sub.index).index(primary.name)]
            out.append(
                Headline(
                    run=run.label,
                    source=source,
                    kind="measured" if measured else "estimated",
                    table=table,
                    sentence=_sentence(run.label, multi, primary, check),
                )
            )
    return out


def headline_intro() -> str:
    return (
        "Per cost source and calibration target, the recommended early-exit model and policy. "
        "Chosen on the val split only (thresholds calibrated on val; among the calibrated points "
        f"within {100 * ACCURACY_SLACK:g} point of the most accurate plain network's val "
        "accuracy, the lowest expected latency on val; the most accurate where none comes that "
        "close), then reported on the test split. Measured rows: the true early-exit run of the "
        "point on this machine (mean over test samples, 95% interval); the plain network is the "
        "backbone without exits. Estimated rows come from a hardware profile, not a measurement."
    )

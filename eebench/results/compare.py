"""Comparing two runs: latency changes per measured part, accuracy and exit-distribution changes.

A latency change counts as a *regression* only when the median is slower by
more than the noise band **and** a significance test on the raw samples
rejects "same distribution" at ``alpha``; improvements likewise. The band
keeps tiny but significant shifts (a busy neighbour on a shared machine) from
failing CI; the test keeps large but noisy differences from doing so.

The test is Mann-Whitney U (scipy, two-sided) when scipy is importable, a
permutation test on the difference of medians otherwise. Accuracy at matching
calibrated operating points (same model, policy, confidence, calibration,
test split) uses a two-proportion z-test when the exit record gives the
number of test samples, with an absolute band (default 1 percentage point).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.errors import ResultsError
from eebench.results.bundle import Run

LATENCY_KEYS = ["model", "part", "index", "backend", "threads", "batch_size"]
POINT_KEYS = ["model", "policy", "confidence", "calibration"]
COLUMNS = [
    "kind",
    "model",
    "item",
    "metric",
    "a",
    "b",
    "change",
    "rel_change",
    "p_value",
    "test",
    "n_a",
    "n_b",
    "verdict",
]
REGRESSION = "regression"
IMPROVEMENT = "improvement"


def permutation_pvalue(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> float:
    """Two-sided permutation test on |median(b) - median(a)| (fallback when scipy is missing)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    observed = abs(np.median(b) - np.median(a))
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_resamples):
        perm = rng.permutation(pooled)
        if abs(np.median(perm[len(a) :]) - np.median(perm[: len(a)])) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (n_resamples + 1)


def significance_test(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """p-value that the samples come from one distribution, and the test's name."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, "too few samples"
    if np.array_equal(np.sort(a), np.sort(b)):
        return 1.0, "identical samples"
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return permutation_pvalue(a, b), "permutation (median)"
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue), "mann-whitney-u"


def _verdict(change: float, p: float, band: float, alpha: float, higher_is_worse: bool) -> str:
    if math.isnan(change):
        return "not comparable"
    if abs(change) <= band:
        return "within band"
    if math.isnan(p):
        return "untested"
    if p >= alpha:
        return "not significant"
    worse = change > 0 if higher_is_worse else change < 0
    return REGRESSION if worse else IMPROVEMENT


def _open(run: Run | Path | str) -> Run:
    if isinstance(run, Run):
        return run
    path = Path(run)
    if not path.exists():
        raise ResultsError(f"{path}: no such run folder; list runs with 'eebench results list'")
    return Run.open(path)


def _item(key: tuple) -> str:
    model, part, index, backend, threads, batch = key
    return f"{part} {int(index)} on {backend} (threads {int(threads)}, batch {int(batch)})"


def _latency_samples(run: Run) -> dict[tuple, np.ndarray]:
    df = run.table("latency_samples").dropna(subset=["ms", *LATENCY_KEYS])
    return {key: grp["ms"].to_numpy(float) for key, grp in df.groupby(LATENCY_KEYS, sort=False)}


def _latency_medians(run: Run) -> dict[tuple, float]:
    """Measured medians from stage_costs (for parts whose raw samples are not in the run)."""
    df = run.table("stage_costs")
    df = df[(df["source_kind"] == "measured") & (df["metric"] == "latency_median_ms")]
    df = df.dropna(subset=["value", *LATENCY_KEYS])
    return {
        tuple(k): float(v) for k, v in zip(df[LATENCY_KEYS].itertuples(index=False), df["value"])
    }


def _norm_key(key: tuple) -> tuple:
    model, part, index, backend, threads, batch = key
    return (str(model), str(part), int(index), str(backend), int(threads), int(batch))


def compare_latency(run_a: Run, run_b: Run, band: float, alpha: float) -> pd.DataFrame:
    sa = {_norm_key(k): v for k, v in _latency_samples(run_a).items()}
    sb = {_norm_key(k): v for k, v in _latency_samples(run_b).items()}
    ma = {_norm_key(k): v for k, v in _latency_medians(run_a).items()}
    mb = {_norm_key(k): v for k, v in _latency_medians(run_b).items()}
    keys = list(dict.fromkeys([*sa, *ma, *sb, *mb]))
    rows = []
    for key in keys:
        in_a, in_b = key in sa or key in ma, key in sb or key in mb
        base = {
            "kind": "latency",
            "model": key[0],
            "item": _item(key),
            "metric": "median latency [ms] (measured)",
        }
        if not (in_a and in_b):
            rows.append(
                {
                    **base,
                    "verdict": "only in A" if in_a else "only in B",
                    "a": ma.get(key, np.median(sa[key]) if key in sa else math.nan),
                    "b": mb.get(key, np.median(sb[key]) if key in sb else math.nan),
                }
            )
            continue
        if key in sa and key in sb:
            a, b = float(np.median(sa[key])), float(np.median(sb[key]))
            p, test = significance_test(sa[key], sb[key])
            n_a, n_b = len(sa[key]), len(sb[key])
        else:
            a, b = ma.get(key, math.nan), mb.get(key, math.nan)
            p, test, n_a, n_b = math.nan, "no raw samples", math.nan, math.nan
        rel = (b - a) / a if a > 0 else math.nan
        rows.append(
            {
                **base,
                "a": a,
                "b": b,
                "change": b - a,
                "rel_change": rel,
                "p_value": p,
                "test": test,
                "n_a": n_a,
                "n_b": n_b,
                "verdict": _verdict(rel, p, band, alpha, higher_is_worse=True),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _test_size(run: Run) -> dict[str, int]:
    ex = run.table("exits")
    ex = ex[ex["split"] == "test"]
    return {str(m): int(g["sample_id"].nunique()) for m, g in ex.groupby("model")}


def two_proportion_pvalue(p_a: float, n_a: int, p_b: float, n_b: int) -> float:
    """Two-sided pooled z-test for a difference in accuracy."""
    pooled = (p_a * n_a + p_b * n_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0 if p_a == p_b else 0.0
    z = abs(p_b - p_a) / se
    return math.erfc(z / math.sqrt(2))


def _points(run: Run) -> pd.DataFrame:
    ops = run.table("operating_points")
    for col in POINT_KEYS + ["split"]:
        ops[col] = ops[col].where(ops[col].notna(), "").astype(str)
    ops = ops[
        (ops["split"] == "test") & (ops["calibration"] != "sweep") & (ops["calibration"] != "")
    ]
    return ops.drop_duplicates(subset=POINT_KEYS).set_index(POINT_KEYS)


def compare_points(run_a: Run, run_b: Run, alpha: float, accuracy_band: float) -> pd.DataFrame:
    pa, pb = _points(run_a), _points(run_b)
    na, nb = _test_size(run_a), _test_size(run_b)
    frac = sorted(
        {c for c in [*pa.columns, *pb.columns] if c.startswith("exit_frac_") and c[10:].isdigit()},
        key=lambda c: int(c[10:]),
    )
    rows = []
    for key in dict.fromkeys([*pa.index, *pb.index]):
        model, policy, confidence, calibration = key
        item = (
            f"{policy}"
            + (f" ({confidence})" if confidence and confidence not in policy else "")
            + f" · {calibration}"
        )
        base = {"model": model, "item": item}
        if key not in pa.index or key not in pb.index:
            rows.append(
                {
                    **base,
                    "kind": "accuracy",
                    "metric": "test accuracy",
                    "verdict": "only in A" if key in pa.index else "only in B",
                }
            )
            continue
        a, b = float(pa.loc[key, "accuracy"]), float(pb.loc[key, "accuracy"])
        n_a, n_b = na.get(model), nb.get(model)
        p = two_proportion_pvalue(a, n_a, b, n_b) if n_a and n_b else math.nan
        rows.append(
            {
                **base,
                "kind": "accuracy",
                "metric": "test accuracy",
                "a": a,
                "b": b,
                "change": b - a,
                "rel_change": (b - a) / a if a else math.nan,
                "p_value": p,
                "test": "two-proportion z" if n_a and n_b else "no sample count",
                "n_a": n_a,
                "n_b": n_b,
                "verdict": _verdict(b - a, p, accuracy_band, alpha, higher_is_worse=False),
            }
        )
        for col in frac:
            fa = pa.loc[key, col] if col in pa.columns else math.nan
            fb = pb.loc[key, col] if col in pb.columns else math.nan
            if pd.isna(fa) and pd.isna(fb):
                continue
            fa, fb = float(0 if pd.isna(fa) else fa), float(0 if pd.isna(fb) else fb)
            rows.append(
                {
                    **base,
                    "kind": "exit_fraction",
                    "metric": f"exit {col[10:]} fraction",
                    "a": fa,
                    "b": fb,
                    "change": fb - fa,
                    "verdict": "changed" if abs(fb - fa) > accuracy_band else "same",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def compare_runs(
    run_a: Run | Path | str,
    run_b: Run | Path | str,
    band: float = 0.10,
    alpha: float = 0.05,
    accuracy_band: float = 0.01,
) -> pd.DataFrame:
    """One row per compared quantity; ``verdict == 'regression'`` rows should fail CI.

    ``kind`` is ``latency`` (per model, part, index, backend, threads, batch
    size; ``a``/``b`` are medians in ms, ``rel_change`` relative to A),
    ``accuracy`` (calibrated test points; absolute change) or
    ``exit_fraction`` (informative only). Raises ResultsError for a missing
    run, a damaged table (the message names the file) or runs with nothing
    in common.
    """
    if not 0 <= band < 10:
        raise ResultsError(f"--band {band}: expected a relative noise band such as 0.10 (= ±10%)")
    if not 0 < alpha < 1:
        raise ResultsError(f"--alpha {alpha}: expected a significance level in (0, 1), e.g. 0.05")
    ra, rb = _open(run_a), _open(run_b)
    latency = compare_latency(ra, rb, band, alpha)
    points = compare_points(ra, rb, alpha, accuracy_band)
    out = (
        pd.concat([f for f in (latency, points) if not f.empty], ignore_index=True)
        if not (latency.empty and points.empty)
        else pd.DataFrame(columns=COLUMNS)
    )
    matched = out[~out["verdict"].isin(["only in A", "only in B"])]
    if matched.empty:
        raise ResultsError(
            f"{ra.path} and {rb.path}: nothing to compare (no measured part and no calibrated test "
            "operating point in common); compare runs of the same suite, and check that both "
            "finished (eebench results list)"
        )
    return out


def has_regression(table: pd.DataFrame) -> bool:
    return bool((table["verdict"] == REGRESSION).any())


def format_comparison(
    table: pd.DataFrame,
    band: float,
    alpha: float,
    label_a: str = "A",
    label_b: str = "B",
    accuracy_band: float = 0.01,
) -> str:
    """The comparison as text: latency rows, accuracy rows, changed exit fractions, a verdict line."""
    lines = [
        f"A = {label_a}",
        f"B = {label_b}",
        f"regression = worse beyond the band (latency ±{band:.0%}, accuracy ±{100 * accuracy_band:g} "
        f"points) and significant (p < {alpha})",
        "",
    ]
    lat = table[table["kind"] == "latency"]
    if not lat.empty:
        view = pd.DataFrame(
            {
                "model": lat["model"],
                "part": lat["item"],
                "A median [ms]": lat["a"].map(lambda v: f"{v:.4g}"),
                "B median [ms]": lat["b"].map(lambda v: f"{v:.4g}"),
                "change": lat["rel_change"].map(lambda v: "" if pd.isna(v) else f"{v:+.1%}"),
                "p": lat["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
                "verdict": lat["verdict"],
            }
        )
        lines += ["Latency (measured; median of raw samples):", view.to_string(index=False), ""]
    acc = table[table["kind"] == "accuracy"]
    if not acc.empty:
        view = pd.DataFrame(
            {
                "model": acc["model"],
                "operating point": acc["item"],
                "A [%]": acc["a"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}"),
                "B [%]": acc["b"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}"),
                "change [pp]": acc["change"].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.2f}"),
                "p": acc["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}"),
                "verdict": acc["verdict"],
            }
        )
        lines += [
            "Accuracy at calibrated operating points (test split):",
            view.to_string(index=False),
            "",
        ]
    fr = table[(table["kind"] == "exit_fraction") & (table["verdict"] == "changed")]
    n_same = int(((table["kind"] == "exit_fraction") & (table["verdict"] == "same")).sum())
    if not fr.empty:
        view = pd.DataFrame(
            {
                "model": fr["model"],
                "operating point": fr["item"],
                "exit": fr["metric"],
                "A [%]": fr["a"].map(lambda v: f"{100 * v:.1f}"),
                "B [%]": fr["b"].map(lambda v: f"{100 * v:.1f}"),
            }
        )
        lines += ["Exit distribution changes (test split):", view.to_string(index=False)]
    if n_same:
        lines.append(f"({n_same} exit fractions unchanged)")
    n_reg = int((table["verdict"] == REGRESSION).sum())
    n_imp = int((table["verdict"] == IMPROVEMENT).sum())
    lines += ["", f"{n_reg} regression(s), {n_imp} improvement(s)."]
    return "\n".join(lines)

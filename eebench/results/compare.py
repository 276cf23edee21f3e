"""Comparing two runs: latency changes per measured part, accuracy and exit-distribution changes.

Latency. Consecutive timing samples are autocorrelated (caches, frequency
scaling, other tenants), so tens of thousands of them are far from tens of
thousands of independent observations: a rank test on them calls any drift
"significant". The verdict here is built for such series:

* the effect is the **ratio of medians** ``median(B) / median(A)`` per part;
* its interval comes from a **circular block bootstrap** of each run's raw
  samples (blocks of consecutive samples, block length chosen from each
  series' autocorrelation: :func:`eebench.measure.stats.optimal_block_length`),
  as a normal interval on the log ratio with the bootstrap standard error;
* the interval's level is **Bonferroni-adjusted** over the ``m`` parts compared,
  ``1 - alpha / m``, so the chance of *any* false verdict among them stays at
  ``alpha`` (family-wise);
* a **minimum effect**: a regression needs the whole interval above the factor
  ``1 + band`` (default 1.10, asv's default ``regressions_thresholds`` factor),
  an improvement the whole interval below ``1 / (1 + band)``.

Within-run dependence widens the interval; a change of the machine between the
two runs (another tenant, a frequency change) does not show in either run's
samples. Two things absorb it: the minimum effect, and a **between-run term**:
the log ratios of all parts compared spread more than their bootstrap errors
explain when the machine moved between the runs, so that excess spread
(a robust estimate: the squared scaled MAD of the log ratios around their
median, minus the median squared bootstrap error; needs ``MIN_PARTS_BETWEEN``
parts, else 0) is added to every part's variance. It is estimated around the
median log ratio, so a change of *every* part alike (a slower code path
everywhere) stays visible as a regression of each; a few parts that changed
are outliers and barely move the robust estimate. Runs measured with the
speed probe (a fixed matrix product run through the parts' backend and timed in
the same rounds as the parts: :mod:`eebench.measure.probe`) have each part's
ratio divided by the probe's ratio of the same model and backend, so a machine
that was busier while one run measured a model does not pass for a regression
of that model; the probe's own change is shown, never judged. The division
needs the same probe in both runs: the probe rows of ``stage_costs`` name what
they ran in ``note`` (runs without it timed ``torch.mm`` on the host, whatever
their backend); when the two runs' probes differ, the probe row says so
(verdict ``different probes``) and the parts are compared undivided. Parts
with fewer than ``MIN_SAMPLES`` raw samples on either side are not tested.

Accuracy at matching calibrated operating points (same model, policy,
confidence, calibration, test split) uses a two-proportion z-test when the
exit record gives the number of test samples, with an absolute band (default
1 percentage point).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.errors import ResultsError
from eebench.measure.probe import HOST_TORCH_KIND
from eebench.measure.stats import RatioInterval, median_ratio_ci
from eebench.measure.timing import PROBE_PART
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
    "ratio",
    "ci_low",
    "ci_high",
    "ci_level",
    "block_a",
    "block_b",
    "between_run_sd",
    "raw_ratio",
    "machine_ratio",
    "probe_a",
    "probe_b",
]
REGRESSION = "regression"
IMPROVEMENT = "improvement"
MIN_SAMPLES = 10
"""Fewest raw samples per side for a latency verdict (a block bootstrap of fewer is meaningless)."""
BOOTSTRAP_RESAMPLES = 500
MIN_PARTS_BETWEEN = 5
"""Fewest tested parts from which the between-run spread is estimated (below: taken as 0)."""
LATENCY_TEST = "block-bootstrap ratio of medians"
DIFFERENT_PROBES = "different probes"
"""Verdict of a probe row whose two runs timed different speed probes (not divided out)."""


def permutation_pvalue(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> float:
    """Two-sided permutation test on |median(b) - median(a)| for independent samples.

    Kept for small independent samples (not timing series, whose dependence it ignores)."""
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


def latency_verdict(
    a: np.ndarray, b: np.ndarray, factor: float = 1.1, confidence: float = 0.95, seed: int = 0
) -> dict[str, float | str]:
    """The verdict on one part's two timing series, with the numbers behind it.

    ``confidence`` is the (already multiplicity-adjusted) level of the ratio's
    interval; see :func:`judge_ratio` for the verdict.
    """
    r = median_ratio_ci(a, b, confidence, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return judge_ratio(r, factor, confidence)


def judge_ratio(
    r: RatioInterval, factor: float = 1.1, confidence: float | None = None
) -> dict[str, float | str]:
    """Verdict on a median ratio and its interval (at ``confidence``, default ``r``'s own).

    Returns ``ratio``, ``ci_low``, ``ci_high``, ``ci_level``, ``p_value`` (one-sided,
    normal approximation: the chance of an estimate this far beyond the factor if
    the true ratio were at it; not adjusted for multiplicity), ``block_a``/``block_b``
    and ``verdict``: ``regression`` (whole interval above ``factor``),
    ``improvement`` (whole interval below ``1/factor``), ``within band`` (the ratio
    is inside ``[1/factor, factor]``) or ``not significant`` (outside it, but the
    interval reaches back inside).
    """
    level = r.confidence if confidence is None else confidence
    lo, hi = r.at(level)
    if lo > factor:
        verdict = REGRESSION
    elif hi < 1 / factor:
        verdict = IMPROVEMENT
    elif 1 / factor <= r.ratio <= factor:
        verdict = "within band"
    else:
        verdict = "not significant"
    beyond = abs(math.log(r.ratio)) - math.log(factor)
    if r.se_log > 0:
        p = float(0.5 * math.erfc(beyond / r.se_log / math.sqrt(2)))
    else:
        p = 0.0 if beyond > 0 else 1.0
    return {
        "ratio": r.ratio,
        "ci_low": lo,
        "ci_high": hi,
        "ci_level": level,
        "p_value": p,
        "block_a": r.block_a,
        "block_b": r.block_b,
        "verdict": verdict,
    }


def _group(key: tuple) -> tuple:
    """(model, backend, threads, batch size): the parts one speed probe was timed with."""
    return (key[0], key[3], key[4], key[5])


def _relative_to_machine(r: RatioInterval, probe: RatioInterval | None) -> RatioInterval:
    """The part's ratio divided by the speed probe's (errors added in quadrature on the log
    scale); unchanged without a probe."""
    if probe is None:
        return r
    return replace(r, ratio=r.ratio / probe.ratio, se_log=math.sqrt(r.se_log**2 + probe.se_log**2))


def _probe_row(
    key: tuple,
    sa: dict[tuple, np.ndarray],
    sb: dict[tuple, np.ndarray],
    r: RatioInterval | None,
    kinds: tuple[str, str],
) -> dict:
    model, _, _, backend, threads, batch = key
    a = float(np.median(sa[key])) if key in sa else math.nan
    b = float(np.median(sb[key])) if key in sb else math.nan
    same = kinds[0] == kinds[1]
    if r is not None:
        verdict = "reference"
    elif key in sa and key in sb and not same:
        verdict = DIFFERENT_PROBES
    else:
        verdict = "only in one run" if not (key in sa and key in sb) else "too few samples"
    test = (
        f"speed probe ({kinds[0]}): the machine's change, divided out of every part's"
        if same
        else f"different speed probes (A: {kinds[0]}; B: {kinds[1]}): not divided out"
    )
    row = {
        "kind": "machine",
        "model": model,
        "item": f"speed probe on {backend} (threads {int(threads)}, batch {int(batch)})",
        "metric": "median probe time [ms] (measured)",
        "a": a,
        "b": b,
        "change": b - a,
        "rel_change": (b - a) / a if a > 0 else math.nan,
        "test": test,
        "verdict": verdict,
        "probe_a": kinds[0],
        "probe_b": kinds[1],
    }
    if r is not None:
        row.update(ratio=r.ratio, ci_low=r.lo, ci_high=r.hi, ci_level=r.confidence, n_a=r.n_a)
        row.update(n_b=r.n_b, block_a=r.block_a, block_b=r.block_b)
    return row


def between_run_sd(intervals: list[RatioInterval]) -> float:
    """Spread of log ratios between runs beyond what each part's bootstrap error explains.

    ``sqrt(max(0, (1.4826 * MAD(log r))^2 - median(se^2)))`` over the parts; 0 with fewer
    than :data:`MIN_PARTS_BETWEEN` parts.
    """
    if len(intervals) < MIN_PARTS_BETWEEN:
        return 0.0
    logs = np.log([r.ratio for r in intervals])
    mad = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
    within = float(np.median([r.se_log**2 for r in intervals]))
    return math.sqrt(max(0.0, mad**2 - within))


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


def _probe_kinds(run: Run) -> dict[tuple, str]:
    """What the run's speed probe ran, per (model, backend, threads, batch size): the
    ``note`` of its measured median row; :data:`HOST_TORCH_KIND` where there is none (every
    run from before the probe followed the backend)."""
    df = run.table("stage_costs")
    if not {"part", "metric", *LATENCY_KEYS} <= set(df.columns):
        return {}
    df = df[(df["part"] == PROBE_PART) & (df["metric"] == "latency_median_ms")]
    df = df.dropna(subset=LATENCY_KEYS)
    notes = df["note"] if "note" in df.columns else pd.Series("", index=df.index)
    return {
        _group(_norm_key(tuple(k))): note if isinstance(note, str) and note else HOST_TORCH_KIND
        for k, note in zip(df[LATENCY_KEYS].itertuples(index=False), notes)
    }


def _norm_key(key: tuple) -> tuple:
    model, part, index, backend, threads, batch = key
    return (str(model), str(part), int(index), str(backend), int(threads), int(batch))


def compare_latency(run_a: Run, run_b: Run, band: float, alpha: float) -> pd.DataFrame:
    """One row per measured part; verdicts as in the module docstring (factor ``1 + band``,
    family-wise ``alpha`` over the parts with enough raw samples on both sides)."""
    sa = {_norm_key(k): v for k, v in _latency_samples(run_a).items()}
    sb = {_norm_key(k): v for k, v in _latency_samples(run_b).items()}
    ma = {_norm_key(k): v for k, v in _latency_medians(run_a).items()}
    mb = {_norm_key(k): v for k, v in _latency_medians(run_b).items()}
    keys = list(dict.fromkeys([*sa, *ma, *sb, *mb]))
    probes = [k for k in keys if k[1] == PROBE_PART]
    keys = [k for k in keys if k[1] != PROBE_PART]
    tested = [k for k in keys if k in sa and k in sb and min(len(sa[k]), len(sb[k])) >= MIN_SAMPLES]
    level = 1 - alpha / max(1, len(tested))
    factor = 1 + band
    kinds_a, kinds_b = _probe_kinds(run_a), _probe_kinds(run_b)
    kinds = {
        k: (kinds_a.get(_group(k), HOST_TORCH_KIND), kinds_b.get(_group(k), HOST_TORCH_KIND))
        for k in probes
    }
    machine = {
        _group(k): median_ratio_ci(sa[k], sb[k], level, n_resamples=BOOTSTRAP_RESAMPLES)
        for k in probes
        if k in sa
        and k in sb
        and min(len(sa[k]), len(sb[k])) >= MIN_SAMPLES
        and kinds[k][0] == kinds[k][1]
    }
    raw = {
        k: median_ratio_ci(sa[k], sb[k], level, n_resamples=BOOTSTRAP_RESAMPLES, seed=i)
        for i, k in enumerate(tested)
    }
    intervals = {k: _relative_to_machine(r, machine.get(_group(k))) for k, r in raw.items()}
    sd_between = between_run_sd(list(intervals.values()))
    rows = [_probe_row(k, sa, sb, machine.get(_group(k)), kinds[k]) for k in probes]
    differ = {_group(k) for k in probes if k in sa and k in sb and kinds[k][0] != kinds[k][1]}
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
        row = dict(base)
        if key in sa and key in sb:
            a, b = float(np.median(sa[key])), float(np.median(sb[key]))
            row.update(n_a=len(sa[key]), n_b=len(sb[key]))
            if key in intervals:
                r = intervals[key]
                r = replace(r, se_log=math.sqrt(r.se_log**2 + sd_between**2))
                v = judge_ratio(r, factor, level)
                v["p_value"] = min(1.0, float(v["p_value"]) * len(tested))  # Bonferroni
                probe = machine.get(_group(key))
                how = " / speed probe" if probe is not None else ""
                if _group(key) in differ:
                    how = " (speed probes differ: not divided)"
                row.update(
                    v,
                    between_run_sd=sd_between,
                    raw_ratio=raw[key].ratio,
                    machine_ratio=probe.ratio if probe is not None else math.nan,
                    test=f"{LATENCY_TEST}{how} (Bonferroni over {len(tested)} parts)",
                )
            else:
                row.update(test=f"fewer than {MIN_SAMPLES} samples", verdict="too few samples")
        else:
            a, b = ma.get(key, math.nan), mb.get(key, math.nan)
            row.update(test="no raw samples", verdict="untested")
        rel = (b - a) / a if a > 0 else math.nan
        row.update(a=a, b=b, change=b - a, rel_change=rel)
        if row["verdict"] == "untested" and not math.isnan(rel) and abs(rel) <= band:
            row["verdict"] = "within band"
        rows.append(row)
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


def _sd_text(lat: pd.DataFrame) -> str:
    sd = lat["between_run_sd"].dropna()
    return f"{float(sd.iloc[0]):.3f} in log ratio" if len(sd) else "not estimated"


def _probe_kind_text(a: object, b: object) -> str:
    """What the probe ran: once when both runs agree, else both."""
    a = a if isinstance(a, str) and a else "?"
    b = b if isinstance(b, str) and b else "?"
    return a if a == b else f"A: {a} | B: {b}"


def format_comparison(
    table: pd.DataFrame,
    band: float,
    alpha: float,
    label_a: str = "A",
    label_b: str = "B",
    accuracy_band: float = 0.01,
) -> str:
    """The comparison as text: latency rows, accuracy rows, changed exit fractions, a verdict line."""
    lat = table[table["kind"] == "latency"]
    levels = lat["ci_level"].dropna()
    level = f"{levels.iloc[0]:.3%}" if len(levels) else f"1 - {alpha}/m"
    n_tested = int(lat["ci_level"].notna().sum())
    lines = [
        f"A = {label_a}",
        f"B = {label_b}",
        f"latency regression = the whole {level} interval of median(B)/median(A) above "
        f"{1 + band:.3g} (circular block bootstrap of each run's raw samples; Bonferroni over "
        f"{n_tested} parts, family-wise alpha {alpha}; between-run spread of the parts "
        f"{_sd_text(lat)} added); improvement: below {1 / (1 + band):.3g}",
        f"accuracy regression = worse beyond ±{100 * accuracy_band:g} points and significant "
        f"(p < {alpha})",
        "",
    ]
    if not lat.empty:

        def interval(row: pd.Series) -> str:
            if pd.isna(row["ci_low"]):
                return ""
            return f"{row['ratio']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"

        view = pd.DataFrame(
            {
                "model": lat["model"],
                "part": lat["item"],
                "A median [ms]": lat["a"].map(lambda v: f"{v:.4g}"),
                "B median [ms]": lat["b"].map(lambda v: f"{v:.4g}"),
                "change": lat["rel_change"].map(lambda v: "" if pd.isna(v) else f"{v:+.1%}"),
                "B/A [interval]": lat.apply(interval, axis=1),
                "n A/B": [
                    "" if pd.isna(x) else f"{int(x)}/{int(y)}"
                    for x, y in zip(lat["n_a"], lat["n_b"])
                ],
                "verdict": lat["verdict"],
            }
        )
        lines += ["Latency (measured; median of raw samples):", view.to_string(index=False), ""]
    probe = table[table["kind"] == "machine"]
    if not probe.empty:
        view = pd.DataFrame(
            {
                "model": probe["model"],
                "probe": probe["item"],
                "timed": [
                    _probe_kind_text(a, b) for a, b in zip(probe["probe_a"], probe["probe_b"])
                ],
                "A [ms]": probe["a"].map(lambda v: f"{v:.4g}"),
                "B [ms]": probe["b"].map(lambda v: f"{v:.4g}"),
                "B/A [interval]": probe.apply(
                    lambda r: (
                        ""
                        if pd.isna(r["ci_low"])
                        else f"{r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                    ),
                    axis=1,
                ),
            }
        )
        lines += [
            "Machine speed (a fixed 128x128 matrix product run through the parts' backend, timed "
            "in the same rounds as each model's parts; every part's B/A above is divided by its "
            "model's probe B/A when both runs timed the same probe):",
            view.to_string(index=False),
        ]
        for r in probe[probe["verdict"] == DIFFERENT_PROBES].itertuples():
            lines.append(
                f"Note: {r.model}, {r.item}: A and B timed different speed probes (see "
                f"'timed'), so this model's B/A above are raw, NOT divided by the machine's "
                f"change. Runs made before the probe followed the backend timed "
                f"{HOST_TORCH_KIND} on every backend: re-measure the older run to divide it out."
            )
        lines.append("")
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

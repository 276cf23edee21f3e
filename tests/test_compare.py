"""`eebench compare`: a latency regression needs the whole (Bonferroni-adjusted) block-bootstrap
interval of the median ratio above the factor; seeded autocorrelated timings neither cry wolf at equal
medians nor miss a 1.3x slowdown; bad input exits 2."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from scipy.stats import binom
from synthetic_run import make_run, tamper

from eebench.cli import main
from eebench.errors import ResultsError
from eebench.measure.probe import HOST_TORCH_KIND
from eebench.measure.stats import RatioInterval, median_ratio_ci
from eebench.results.compare import (
    BOOTSTRAP_RESAMPLES,
    LATENCY_KEYS,
    between_run_sd,
    compare_latency,
    compare_runs,
    format_comparison,
    has_regression,
    judge_ratio,
    latency_verdict,
    permutation_pvalue,
    two_proportion_pvalue,
)

SLOW_STAGE = ("sdn-s", "stage", 1, "torch-cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def base_run(root):
    return make_run(root, "base")


def test_identical_runs_exit_0(root, base_run, capsys):
    same = make_run(root, "same")  # same seeds: the same numbers, another run
    table = compare_runs(base_run, same)
    lat = table[table["kind"] == "latency"]
    assert len(lat) == 2 * 2 * 6  # models x backends x (3 stages + 3 exits)
    assert (lat["verdict"] == "within band").all() and (lat["rel_change"] == 0).all()
    acc = table[table["kind"] == "accuracy"]
    assert len(acc) == 2 * 2 * 3 and (acc["change"] == 0).all()
    assert main(["compare", str(base_run), str(same)]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s)" in out and "quick/base" in out


def test_one_stage_30_percent_slower_is_a_regression_exit_1(root, base_run, capsys):
    slow = make_run(root, "slow", latency_scale={SLOW_STAGE: 1.3})
    table = compare_runs(base_run, slow)
    reg = table[table["verdict"] == "regression"]
    assert len(reg) == 1
    row = reg.iloc[0]
    assert row["model"] == "sdn-s" and row["item"].startswith("stage 1 on torch-cpu")
    assert row["rel_change"] == pytest.approx(0.3, abs=0.03) and row["ci_low"] > 1.1
    assert row["ci_low"] < row["ratio"] < row["ci_high"]
    # 24 parts with raw samples: the interval is simultaneous at 1 - 0.05 / 24
    assert row["ci_level"] == pytest.approx(1 - 0.05 / 24)
    assert row["test"].startswith("block-bootstrap ratio of medians (Bonferroni over 24 parts")
    assert row["n_a"] == row["n_b"] == 30
    assert main(["compare", str(base_run), str(slow)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "+30" in out
    # the other way round it is an improvement, and CI passes
    assert main(["compare", str(slow), str(base_run)]) == 0
    assert "1 improvement(s)" in capsys.readouterr().out


def test_noise_and_a_small_slowdown_inside_the_band_exit_0(root, base_run):
    noisy = make_run(root, "noisy", latency_seed=11, latency_scale={SLOW_STAGE: 1.04})
    table = compare_runs(base_run, noisy)
    lat = table[table["kind"] == "latency"]
    assert (lat["rel_change"].abs() < 0.10).all()
    assert not (lat["rel_change"] == 0).all()  # the noise really differs
    assert (lat["verdict"] == "within band").all()
    assert main(["compare", str(base_run), str(noisy)]) == 0


def test_band_option_widens_what_counts_as_noise(root, base_run):
    slow = make_run(root, "slow-wide", latency_scale={SLOW_STAGE: 1.3})
    assert not has_regression(compare_runs(base_run, slow, band=0.5))
    assert main(["compare", str(base_run), str(slow), "--band", "0.5"]) == 0


def test_too_few_samples_are_not_tested(tmp_path):
    a = make_run(tmp_path, "few-a", samples_per_part=3)
    b = make_run(
        tmp_path, "few-b", samples_per_part=3, latency_seed=4, latency_scale={SLOW_STAGE: 1.25}
    )
    table = compare_runs(a, b)
    row = table[
        (table["model"] == "sdn-s") & table["item"].str.startswith("stage 1 on torch-cpu")
    ].iloc[0]
    assert row["rel_change"] > 0.15 and row["verdict"] == "too few samples"
    assert math.isnan(row["ci_low"])
    assert main(["compare", str(a), str(b)]) == 0


def test_accuracy_drop_at_calibrated_points_is_a_regression(root, base_run):
    worse = make_run(root, "worse", exit_accuracy=(0.3, 0.4, 0.5))
    table = compare_runs(base_run, worse)
    acc = table[table["kind"] == "accuracy"]
    assert (acc["change"] < 0).all()
    assert (acc["verdict"] == "regression").any()
    assert (acc["test"] == "two-proportion z").all() and (acc["n_a"] == 50).all()
    fractions = table[table["kind"] == "exit_fraction"]
    assert len(fractions) and (fractions["verdict"] == "changed").any()
    assert main(["compare", str(base_run), str(worse)]) == 1


def test_tampered_table_exits_2_naming_the_file(tmp_path, base_run, capsys):
    other = make_run(tmp_path, "tampered")
    bad = tamper(other, "latency_samples")
    with pytest.raises(ResultsError, match="checksum mismatch"):
        compare_runs(base_run, other)
    assert main(["compare", str(base_run), str(other)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "checksum mismatch" in err and "Traceback" not in err


def test_missing_run_and_bad_options_exit_2(tmp_path, base_run, capsys):
    assert main(["compare", str(base_run), str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["compare", str(base_run), str(base_run), "--alpha", "2"]) == 2
    assert "--alpha" in capsys.readouterr().err


def test_runs_with_nothing_in_common_exit_2(tmp_path, base_run, capsys):
    empty = make_run(tmp_path, "killed", partial_after=0)
    assert main(["compare", str(base_run), str(empty)]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def ar1_timings(rng, n, phi=0.9, cv=0.05, drift=0.0, median=1.0):
    """Latencies whose log follows AR(1) (stationary sd ``cv``) plus a linear drift over the run:
    consecutive samples are strongly dependent, as real timing samples are."""
    e = rng.normal(0.0, cv * math.sqrt(1 - phi**2), n)
    e[0] = rng.normal(0.0, cv)  # start in the stationary distribution
    x = lfilter([1.0], [1.0, -phi], e)  # x[i] = phi * x[i-1] + e[i]
    return median * np.exp(x + drift * np.linspace(-0.5, 0.5, n))


def test_equal_medians_of_autocorrelated_timings_rarely_raise_a_false_alarm():
    # 120 seeded pairs of AR(1) series drifting in opposite directions, equal true medians
    rng = np.random.default_rng(2026)
    pairs = 120
    strict = gated = 0
    for i in range(pairs):
        a = ar1_timings(rng, 1500, drift=0.04)
        b = ar1_timings(rng, 1500, drift=-0.04)
        r = median_ratio_ci(a, b, n_resamples=BOOTSTRAP_RESAMPLES, seed=i)
        # one part at the unadjusted 95% level and no minimum effect: the block bootstrap alone
        strict += judge_ratio(r, factor=1.0, confidence=0.95)["verdict"] in (
            "regression",
            "improvement",
        )
        # as compare runs it: factor 1.1, Bonferroni-adjusted over 24 parts
        gated += judge_ratio(r, factor=1.1, confidence=1 - 0.05 / 24)["verdict"] in (
            "regression",
            "improvement",
        )
    # a correct 95% interval alarms in ~5% of pairs: allow the binomial spread around 5%
    assert strict <= binom.ppf(0.99, pairs, 0.05), f"{strict} false alarms in {pairs} pairs"
    assert gated <= 0.05 * pairs and gated == 0


def test_an_iid_rank_test_would_cry_wolf_on_the_same_series():
    # why the block bootstrap: Mann-Whitney treats the 1500 dependent samples as independent
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(7)
    false = 0
    for _ in range(40):
        a, b = ar1_timings(rng, 1500, drift=0.04), ar1_timings(rng, 1500, drift=-0.04)
        false += mannwhitneyu(a, b).pvalue < 0.05
    assert false > 0.3 * 40


def test_a_1_3x_slowdown_of_autocorrelated_timings_is_detected():
    rng = np.random.default_rng(13)
    level = 1 - 0.05 / 24  # Bonferroni over the parts of a typical run
    detected = 0
    for i in range(50):
        a = ar1_timings(rng, 1500, drift=0.04)
        b = ar1_timings(rng, 1500, drift=0.04, median=1.3)
        v = latency_verdict(a, b, factor=1.1, confidence=level, seed=i)
        detected += v["verdict"] == "regression"
        assert v["ci_low"] < v["ratio"] < v["ci_high"]
    assert detected >= 48
    # the other way round it is an improvement
    v = latency_verdict(b, a, factor=1.1, confidence=level)
    assert v["verdict"] == "improvement" and v["ci_high"] < 1 / 1.1


def test_permutation_pvalue_is_large_for_one_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 40), rng.normal(10, 1, 40)
    assert permutation_pvalue(a, b, n_resamples=500) > 0.05
    assert permutation_pvalue(a, b + 3, n_resamples=500) < 0.01


def test_two_proportion_test():
    assert two_proportion_pvalue(0.9, 50, 0.9, 50) == pytest.approx(1.0)
    assert two_proportion_pvalue(0.9, 500, 0.5, 500) < 1e-6
    assert 0.05 < two_proportion_pvalue(0.90, 50, 0.88, 50) < 1


def _every_part():
    from synthetic_run import BACKENDS, MODELS, _parts

    return [(m, p, i, b) for m in MODELS for p, i, _ in _parts(m) for b in BACKENDS]


def test_between_run_spread_absorbs_a_machine_that_moved_part_by_part(root, base_run):
    # every part 3-15% off in B (a busy neighbour during parts of the run): within-run
    # intervals are tight (30 samples, 4% noise) and alone would flag the large shifts
    rng = np.random.default_rng(3)
    moved = {k: float(np.exp(rng.normal(0, 0.07))) for k in _every_part()}
    shifted = make_run(root, "moved", latency_seed=5, latency_scale=moved)
    lat = compare_runs(base_run, shifted)
    lat = lat[lat["kind"] == "latency"]
    assert lat["rel_change"].abs().max() > 0.10  # some parts moved beyond the factor
    assert lat["between_run_sd"].iloc[0] > 0.03
    assert not (lat["verdict"] == "regression").any()


def test_every_part_slower_alike_is_still_a_regression_of_each(root, base_run):
    slower = make_run(
        root, "all-slower", latency_seed=6, latency_scale=dict.fromkeys(_every_part(), 1.3)
    )
    lat = compare_runs(base_run, slower)
    lat = lat[lat["kind"] == "latency"]
    assert (lat["verdict"] == "regression").all() and len(lat) == 24
    assert lat["between_run_sd"].iloc[0] < 0.02  # the common shift is not spread


def test_between_run_sd_by_hand():
    def interval(ratio, se):
        return RatioInterval(ratio, math.nan, math.nan, 0.95, se, 1, 1, 100, 100)

    logs = [0.0, 0.1, -0.1, 0.2, -0.2]
    rs = [interval(math.exp(v), 0.05) for v in logs]
    # MAD of the logs around 0 is 0.1; (1.4826 * 0.1)^2 - 0.05^2
    assert between_run_sd(rs) == pytest.approx(math.sqrt((0.14826) ** 2 - 0.0025))
    assert between_run_sd(rs[:4]) == 0.0  # too few parts to estimate it
    assert between_run_sd([interval(1.0, 0.5)] * 6) == 0.0  # bootstrap error explains all


class TableRun:
    """A run reduced to the two tables compare_latency reads."""

    def __init__(self, samples: pd.DataFrame, costs: pd.DataFrame | None = None) -> None:
        self.samples = samples
        self.costs = costs

    def table(self, name: str) -> pd.DataFrame:
        if name == "latency_samples":
            return self.samples
        if self.costs is not None:
            return self.costs
        return pd.DataFrame(columns=["source_kind", "metric", "value", *LATENCY_KEYS])


def probe_run(
    seed: int,
    model_scale: float,
    probe_scale: float,
    stage1: float = 1.0,
    probe_kind: str | None = None,
):
    """One model's 6 parts and its speed probe, 400 samples each (AR(1) noise); with
    ``probe_kind``, stage_costs names what the probe ran (as a run since the probe follows
    the backend does), else it says nothing (as an older run)."""
    rng = np.random.default_rng(seed)
    frames = []
    parts = [("stage", i) for i in range(3)] + [("exit", i) for i in range(3)] + [("probe", 0)]
    for part, index in parts:
        scale = probe_scale if part == "probe" else model_scale
        scale *= stage1 if (part, index) == ("stage", 1) else 1.0
        ms = ar1_timings(rng, 400, phi=0.5, cv=0.03, median=0.1 * (index + 1) * scale)
        frames.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "part": part,
                    "index": index,
                    "backend": "torch-cpu",
                    "device": "cpu",
                    "threads": 1,
                    "batch_size": 1,
                    "sample": range(400),
                    "ms": ms,
                }
            )
        )
    costs = None
    if probe_kind is not None:
        costs = pd.DataFrame(
            {
                "model": ["m"],
                "part": ["probe"],
                "index": [0],
                "metric": ["latency_median_ms"],
                "value": [0.1 * probe_scale],
                "source_kind": ["measured"],
                "backend": ["torch-cpu"],
                "threads": [1],
                "batch_size": [1],
                "note": [probe_kind],
            }
        )
    return TableRun(pd.concat(frames, ignore_index=True), costs)


def test_speed_probe_divides_out_a_machine_that_was_busier_for_a_whole_model():
    # run B measured the whole model on a machine 1.8x slower: the probe saw it too
    a, b = probe_run(1, 1.0, 1.0), probe_run(2, 1.8, 1.8)
    lat = compare_latency(a, b, band=0.10, alpha=0.05)
    parts, probe = lat[lat["kind"] == "latency"], lat[lat["kind"] == "machine"]
    assert len(parts) == 6 and len(probe) == 1 and probe["verdict"].iloc[0] == "reference"
    assert probe["ratio"].iloc[0] == pytest.approx(1.8, rel=0.03)
    assert (parts["raw_ratio"] > 1.7).all() and (parts["verdict"] != "regression").all()
    assert parts["ratio"].to_numpy() == pytest.approx(1.0, abs=0.03)
    # the same busy machine with one stage 1.3x slower: that stage, and only it, regressed
    b = probe_run(2, 1.8, 1.8, stage1=1.3)
    lat = compare_latency(a, b, band=0.10, alpha=0.05)
    reg = lat[lat["verdict"] == "regression"]
    assert reg["item"].str.startswith("stage 1 on").tolist() == [True]
    # without a probe slowdown (the code got slower everywhere) every part regressed
    lat = compare_latency(a, probe_run(2, 1.3, 1.0), band=0.10, alpha=0.05)
    assert (lat[lat["kind"] == "latency"]["verdict"] == "regression").all()
    text = format_comparison(lat, 0.10, 0.05)
    assert "Machine speed" in text and "6 regression(s)" in text


def test_speed_probes_of_different_kinds_are_reported_and_not_divided_out():
    # A: an older run (its probe rows name nothing: it timed torch.mm on the host);
    # B: the probe ran through onnxruntime and saw a machine 1.8x slower, as did the parts
    ort = "onnxruntime MatMul 128x128 float32 on CPUExecutionProvider"
    a, b = probe_run(1, 1.0, 1.0), probe_run(2, 1.8, 1.8, probe_kind=ort)
    lat = compare_latency(a, b, band=0.10, alpha=0.05)
    parts, probe = lat[lat["kind"] == "latency"], lat[lat["kind"] == "machine"]
    row = probe.iloc[0]
    assert row["verdict"] == "different probes" and math.isnan(row["ratio"])
    assert (row["probe_a"], row["probe_b"]) == ("torch.mm 128x128 float32 on cpu", ort)
    assert "not divided" in row["test"] and row["item"].startswith("speed probe on torch-cpu")
    # the parts are compared as measured: their 1.8x stays, nothing is divided by the probe
    assert (parts["ratio"] == parts["raw_ratio"]).all() and parts["machine_ratio"].isna().all()
    assert (parts["ratio"] > 1.7).all() and (parts["verdict"] == "regression").all()
    assert parts["test"].str.contains("speed probes differ: not divided").all()
    text = format_comparison(lat, 0.10, 0.05)
    assert "different speed probes" in text and "NOT divided" in text
    assert f"A: torch.mm 128x128 float32 on cpu | B: {ort}" in text


def test_speed_probes_of_the_same_recorded_kind_are_divided_out():
    ort = "onnxruntime MatMul 128x128 float32 on CPUExecutionProvider"
    a = probe_run(1, 1.0, 1.0, probe_kind=ort)
    b = probe_run(2, 1.8, 1.8, probe_kind=ort)
    lat = compare_latency(a, b, band=0.10, alpha=0.05)
    row = lat[lat["kind"] == "machine"].iloc[0]
    assert row["verdict"] == "reference" and ort in row["test"]
    parts = lat[lat["kind"] == "latency"]
    assert parts["ratio"].to_numpy() == pytest.approx(1.0, abs=0.03)
    # an older torch run (no kind recorded) and a new torch-cpu run timed the same probe
    old, new = probe_run(1, 1.0, 1.0), probe_run(2, 1.8, 1.8, probe_kind=HOST_TORCH_KIND)
    lat = compare_latency(old, new, band=0.10, alpha=0.05)
    assert lat[lat["kind"] == "machine"]["verdict"].tolist() == ["reference"]

"""`eebench compare`: regressions need to be beyond the band AND significant; bad input exits 2."""

import sys

import numpy as np
import pytest
from synthetic_run import make_run, tamper

from eebench.cli import main
from eebench.errors import ResultsError
from eebench.results.compare import (
    compare_runs,
    has_regression,
    permutation_pvalue,
    significance_test,
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
    assert row["rel_change"] == pytest.approx(0.3, abs=0.03) and row["p_value"] < 1e-6
    assert row["test"] == "mann-whitney-u" and row["n_a"] == row["n_b"] == 30
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


def test_large_change_on_too_few_samples_is_not_significant(tmp_path):
    # Mann-Whitney on 3 vs 3 samples can never reach p < 0.05: a 25% change is not proof
    a = make_run(tmp_path, "few-a", samples_per_part=3)
    b = make_run(
        tmp_path, "few-b", samples_per_part=3, latency_seed=4, latency_scale={SLOW_STAGE: 1.25}
    )
    table = compare_runs(a, b)
    row = table[
        (table["model"] == "sdn-s") & table["item"].str.startswith("stage 1 on torch-cpu")
    ].iloc[0]
    assert row["rel_change"] > 0.15 and row["p_value"] >= 0.05
    assert row["verdict"] == "not significant"
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


def test_significance_falls_back_to_a_permutation_test_without_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.lognormal(0, 0.05, 30)
    b = 1.3 * rng.lognormal(0, 0.05, 30)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import fails
    p, test = significance_test(a, b)
    assert test == "permutation (median)" and p < 0.01
    p_same, _ = significance_test(a, rng.lognormal(0, 0.05, 30))
    assert p_same > 0.05


def test_permutation_pvalue_is_large_for_one_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 40), rng.normal(10, 1, 40)
    assert permutation_pvalue(a, b, n_resamples=500) > 0.05
    assert permutation_pvalue(a, b + 3, n_resamples=500) < 0.01


def test_two_proportion_test():
    assert two_proportion_pvalue(0.9, 50, 0.9, 50) == pytest.approx(1.0)
    assert two_proportion_pvalue(0.9, 500, 0.5, 500) < 1e-6
    assert 0.05 < two_proportion_pvalue(0.90, 50, 0.88, 50) < 1

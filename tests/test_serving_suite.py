"""A suite's ``serving:`` section: bad configs are refused with field paths, and a tiny suite run
writes the ``serving`` table (every column documented) with LoadGen's logs in the bundle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from eebench.errors import ConfigError
from eebench.serving import STRATEGIES
from eebench.suites.schema import SERVING_STRATEGIES, load_suite_file, parse_suite

BASE = {"name": "s", "models": [{"name": "msdnet"}]}
README = Path(__file__).resolve().parents[1] / "results" / "README.md"


def _serving(**section):
    return parse_suite({**BASE, "serving": section}, "suite.yaml")


def test_schema_strategies_are_the_serving_strategies():
    assert tuple(SERVING_STRATEGIES) == tuple(STRATEGIES)


@pytest.mark.parametrize(
    ("section", "pattern"),
    [
        (
            {
                "strategies": ["batch-shrinking", "regrup"],
                "target_qps": [10],
                "latency_bound_ms": 5,
            },
            r"suite\.yaml: serving\.strategies\[1\]: unknown serving strategy 'regrup'; "
            r"did you mean 'regroup'",
        ),
        (
            {"target_qps": [10, -5], "latency_bound_ms": 5},
            r"suite\.yaml: serving\.target_qps\[1\]: Input should be greater than 0",
        ),
        (
            {"target_qps": [0], "latency_bound_ms": 5},
            r"serving\.target_qps\[0\]: Input should be greater than 0",
        ),
        (
            {"search": {"lo_qps": 10, "hi_qps": 100}},
            r"suite\.yaml: serving: .*latency_bound_ms is missing: the search scenario",
        ),
        (
            {"search": {"lo_qps": 0, "hi_qps": 100}, "latency_bound_ms": 5},
            r"serving\.search\.lo_qps: Input should be greater than 0",
        ),
        (
            {"search": {"lo_qps": 100, "hi_qps": 10}, "latency_bound_ms": 5},
            r"serving\.search: .*lo_qps \(100\.0\) is above hi_qps \(10\.0\)",
        ),
        ({"scenarios": ["Server"]}, r"serving: .*scenario 'Server' needs its load"),
        (
            {"scenarios": ["Offline"], "modes": ["per-stage", "fusd"]},
            r"serving\.modes\[1\]: unknown serving deployment mode 'fusd'; did you mean 'fused'",
        ),
        (
            {"scenarios": ["Offline"], "modes": ["per-stage", "compild"]},
            r"serving\.modes\[1\]: unknown serving deployment mode 'compild'; did you mean 'compiled'",
        ),
        (
            {"scenarios": ["Offlne"]},
            r"serving\.scenarios\[0\]: unknown serving scenario 'Offlne'; did you mean 'Offline'",
        ),
        ({"scenarios": []}, r"serving\.scenarios: give at least one of SingleStream, Server"),
        ({"scenarios": ["Offline"], "sampels": 3}, r"serving\.sampels: unknown key; did you mean"),
    ],
)
def test_bad_serving_sections_name_the_field(section, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _serving(**section)


def test_compiled_mode_is_accepted_and_opt_in():
    spec = _serving(scenarios=["Offline"], modes=["per-stage", "compiled"])
    assert spec.serving.modes == ["per-stage", "compiled"]
    assert _serving(scenarios=["Offline"]).serving.modes == ["per-stage"]
    builtin = load_suite_file(Path(__file__).resolve().parents[1] / "suites" / "serving.yaml")
    assert "compiled" not in builtin.serving.modes  # its compile time is not in the 5 minutes


# a suite whose serving section is refused before any training: one model, the default policy
CLI_SUITE = {
    "name": "serve-bad",
    "models": [{"name": "big-little", "config": {"width": 4}}],
    "policies": [{"name": "threshold", "confidence": ["max_softmax", "entropy"]}],
    "backends": ["torch-cpu"],
    "serving": {
        "scenarios": ["Offline"],
        "strategies": ["per-sample"],
        "modes": ["per-stage"],
        "backends": ["torch-cpu", "onnxruntime"],
    },
}


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        (
            "backends",
            ["torch-cpu", "onnxruntim"],
            "serving.backends[1]",
            "did you mean 'onnxruntime'",
        ),
        (
            "backends",
            ["simulated:jetson-orin-nano-8gb-15w"],
            "serving.backends[0]",
            "cannot serve requests",
        ),
        ("strategies", ["per-sample", "regrup"], "serving.strategies[1]", "did you mean 'regroup'"),
        ("scenarios", ["Ofline"], "serving.scenarios[0]", "did you mean 'Offline'"),
        ("modes", ["fusd"], "serving.modes[0]", "did you mean 'fused'"),
        ("policy", "thresold", "serving.policy", "did you mean 'threshold'"),
        ("policy", "patience", "serving.policy", "not among the suite's policies (threshold)"),
        ("confidence", "max_softmx", "serving.confidence", "did you mean 'max_softmax'"),
        ("confidence", "score_margin", "serving.confidence", "add it to policies[0].confidence"),
        ("modes", ["per-stage", "fused"], None, None),  # fused on max softmax: accepted
        ("backends", ["onnxruntime@rpi5"], None, None),  # a cluster device, as in 'backends'
        ("backends", ["onnxruntime@"], "serving.backends[0]", "onnxruntime@"),
    ],
)
def test_cli_refuses_bad_serving_names_before_running(
    tmp_path, capsys, monkeypatch, key, value, field, expected
):
    from eebench import cli
    from eebench.suites import runner

    data = {**CLI_SUITE, "serving": {**CLI_SUITE["serving"], key: value}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    if field is None:  # a valid section reaches the runner: stop it there
        monkeypatch.setattr(runner.SuiteRunner, "run", lambda self: tmp_path / "accepted")
    code = cli.main(["run", str(path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    if field is None:
        assert code == 0, err
        return
    assert code == 2, err
    assert f"{path}: {field}: " in err and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists(), "a refused suite must not create a run folder"


def test_fused_mode_needs_a_policy_the_graph_can_decide(tmp_path, capsys):
    from eebench import cli

    data = {
        **CLI_SUITE,
        "serving": {
            **CLI_SUITE["serving"],
            "modes": ["per-stage", "fused"],
            "confidence": "entropy",
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "serving.modes[1]: the fused graph computes max_softmax in-graph, not 'entropy'" in err
    assert not (tmp_path / "r").exists()


def test_builtin_serving_suite_validates():
    path = Path(__file__).resolve().parents[1] / "suites" / "serving.yaml"
    spec = load_suite_file(path)
    assert spec.serving is not None and spec.serving.search is not None
    assert set(spec.serving.strategies) == set(STRATEGIES)
    assert spec.serving.latency_bound_ms and spec.serving.percentile == 0.99


def _documented(table: str) -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"### {table}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| ([a-z0-9_<>]+) \|", section, re.M)} - {"column"}


@pytest.mark.slow
def test_suite_run_writes_the_serving_table(tmp_path):
    pytest.importorskip("mlperf_loadgen")
    from eebench.results import Run
    from eebench.suites.runner import RunOptions, run_suite

    suite = {
        "name": "serve-tiny",
        "dataset": {"name": "digits", "seed": 0, "options": {"limit": 240}},
        "models": [
            {
                "name": "big-little",
                "id": "bl",
                "config": {"width": 4},
                "training": {"scheme": "cascade", "epochs": 2, "lr": 0.02, "batch_size": 32},
            }
        ],
        "policies": [
            {"name": "threshold", "confidence": ["max_softmax"], "thresholds": {"num": 11}}
        ],
        "baselines": ["final-only"],
        "calibration": {"accuracy_within": [0.5], "budget_fractions": []},
        "backends": ["torch-cpu"],
        "measurement": {"warmup": 1, "min_repeats": 3, "max_time_s": 0.2, "energy": False},
        "validation": {"enabled": False},
        "serving": {
            "scenarios": ["Offline", "Server"],
            "strategies": ["per-sample", "batch-shrinking", "plain"],
            "modes": ["per-stage", "static", "fused"],
            "target_qps": [100],
            "search": {"lo_qps": 50, "hi_qps": 150, "steps": 1},
            "latency_bound_ms": 2000,  # generous: a loaded machine still holds it
            "percentile": 0.9,
            "min_duration_s": 0.2,
            "max_duration_s": 5,
            "min_query_count": 64,
            "batch_size": 4,
        },
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = run_suite(
        str(path),
        RunOptions(
            out_root=tmp_path / "out", cache_root=tmp_path / "cache", progress=False, report=False
        ),
    )
    df = Run.open(out).table("serving")
    # per strategy and mode: Offline, Server at 100 QPS, and the search's probes at 50 and 150
    # (both hold); per stage every strategy, the static graph per sample only, no fused on torch
    assert len(df) == 4 * 4
    assert set(zip(df["strategy"], df["mode"])) == {
        ("per-sample", "per-stage"),
        ("batch-shrinking", "per-stage"),
        ("plain", "per-stage"),
        ("per-sample", "static"),
    }
    floors = df.groupby("mode")["mode_floor_us"].nunique()
    assert (floors == 1).all() and (df["mode_floor_us"] > 0).all()  # one floor per mode
    skipped = Run.open(out).table("skipped")
    reasons = dict(zip(skipped["target"], skipped["reason"]))
    assert "cannot drop rows" in reasons["torch-cpu:batch-shrinking/static"]
    assert "runs per stage" in reasons["torch-cpu:plain/static"]
    assert "serve it on onnxruntime" in reasons["torch-cpu:fused"]
    assert df["answers_equal_record"].all()
    assert (df["exit_agreement"] == 1.0).all() and (df["answer_agreement"] == 1.0).all()
    server = df[df["scenario"] == "Server"]
    assert server["loadgen_valid"].all()
    probes = df[df["search"]]
    assert sorted(probes["target_qps"].unique()) == [50.0, 150.0]
    assert (probes["max_qps_within_bound"] == 150.0).all() and probes["max_qps_at_upper_end"].all()
    assert (server["query_count"] >= 64).all()
    offline = df[df["scenario"] == "Offline"].set_index("strategy")
    assert (offline["served_samples"] == 50).all()  # Offline asks for every sample of the QSL
    # the plain network's served accuracy is the final exit's accuracy on test (final-only)
    ops = Run.open(out).table("operating_points")
    final = ops[(ops["policy"] == "final-only") & (ops["split"] == "test")]["accuracy"].iloc[0]
    assert offline.loc["plain", "accuracy"] == pytest.approx(final)
    for log_dir in df["log_dir"]:
        summary = out / log_dir / "mlperf_log_summary.txt"
        assert "MLPerf Results Summary" in summary.read_text()
        assert (out / log_dir / "mlperf_log_detail.txt").exists()
    missing = set(df.columns) - _documented("serving")
    assert not missing, f"serving columns not in results/README.md: {sorted(missing)}"
    # the report: p99-vs-QPS curves per strategy and mode, and max QPS against the plain network
    from eebench.report.data import load_runs
    from eebench.report.figures import Palette
    from eebench.report.serving import max_qps_display, max_qps_table, serving_curves

    runs = load_runs([out])
    fig = serving_curves(runs, Palette.for_runs(runs))
    ax = fig.figure.axes[0]
    assert {line.get_label() for line in ax.get_lines()} >= {
        "batch-shrinking · per-stage",
        "plain · per-stage",
    }
    table = max_qps_table(runs).set_index(["strategy", "mode"])
    assert table.loc[("batch-shrinking", "per-stage"), "max_qps"] == 150.0
    assert table.loc[("per-sample", "static"), "vs_plain"] == pytest.approx(150.0 / 150.0)
    assert table.loc[("plain", "per-stage"), "probes"] == 2
    shown = max_qps_display(runs).set_index(["strategy", "mode"])
    assert shown.loc[("batch-shrinking", "per-stage"), "vs plain"] == "1"
    assert shown.loc[("plain", "per-stage"), "bound"] == "p90 <= 2000 ms"

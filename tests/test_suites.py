"""Suites and the runner: schema errors as users see them, a real tiny run, resume, no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eebench import cli
from eebench.errors import ConfigError, ResultsError
from eebench.results import Run
from eebench.suites import builtin_suites, load_suite_file, parse_suite
from eebench.suites.names import check_names
from eebench.suites.runner import RunOptions, run_suite

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 300}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 4, "lr": 0.02, "batch_size": 32},
        },
    ],
    "policies": [
        {
            "name": "threshold",
            "confidence": ["max_softmax"],
            "thresholds": {"start": 0, "stop": 1, "num": 11},
        },
        {"name": "patience", "confidence": ["max_softmax"], "thresholds": [1]},
    ],
    "baselines": ["oracle", "final-only", "aggregation"],
    "calibration": {"accuracy_within": [0.05], "budget_fractions": [0.9]},
    "backends": ["torch-cpu", "torch-cuda", "simulated:jetson-orin-nano-8gb-15w"],
    "measurement": {
        "warmup": 1,
        "min_repeats": 3,
        "min_time_s": 0.0,
        "max_time_s": 0.5,
        "energy": False,
    },
    "validation": {"samples": 10, "repeats": 1},
}


def _write(tmp_path: Path, data: dict, name: str = "suite.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


# ---------------------------------------------------------------------- schema errors
def test_every_builtin_suite_validates_with_registered_names():
    suites = builtin_suites()
    assert {"quick", "families", "overthinking", "backends", "jetson"} <= set(suites)
    for name, path in suites.items():
        spec = load_suite_file(path)
        assert spec.name == name
        check_names(spec, str(path))


def test_unknown_key_names_file_path_and_nearest(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["models"][0]["confg"] = {}
    path = _write(tmp_path, bad)
    code, err = _cli(capsys, "run", str(path), "--out", str(tmp_path / "r"))
    assert code == 2
    assert str(path) in err and "models[0].confg" in err and "did you mean 'config'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists(), "a refused suite must not create a run"


def test_wrong_type_names_field(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["measurement"]["min_repeats"] = "many"
    code, err = _cli(capsys, "run", str(_write(tmp_path, bad)), "--out", str(tmp_path / "r"))
    assert code == 2 and "measurement.min_repeats" in err and "integer" in err


@pytest.mark.parametrize(
    ("path", "value", "field", "suggestion"),
    [
        (("models", 0, "name"), "big-litle", "models[0].name", "big-little"),
        (("backends", 0), "torch-cpuu", "backends[0]", "torch-cpu"),
        (
            ("backends", 2),
            "simulated:jetson-orin-nan-8gb-15w",
            "backends[2]",
            "jetson-orin-nano-8gb-15w",
        ),
        (("policies", 0, "name"), "treshold", "policies[0].name", "threshold"),
        (
            ("policies", 0, "confidence", 0),
            "max_softmx",
            "policies[0].confidence[0]",
            "max_softmax",
        ),
        (("dataset", "name"), "digit", "dataset.name", "digits"),
    ],
)
def test_unknown_registered_names_get_nearest(tmp_path, capsys, path, value, field, suggestion):
    bad = json.loads(json.dumps(TINY))
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    code, err = _cli(capsys, "run", str(_write(tmp_path, bad)), "--out", str(tmp_path / "r"))
    assert code == 2
    assert field in err and f"did you mean '{suggestion}'" in err
    assert "Traceback" not in err


def test_bad_training_config_is_refused_before_running(tmp_path):
    bad = json.loads(json.dumps(TINY))
    bad["models"][0]["training"]["epoch"] = 3
    spec = parse_suite(bad, "s.yaml")
    with pytest.raises(ConfigError, match=r"models\[0\]\.training.*epoch"):
        check_names(spec, "s.yaml")


def test_env_reference_must_be_set_or_defaulted(tmp_path, monkeypatch):
    data = json.loads(json.dumps(TINY))
    data["dataset"]["options"] = {"size": "${EEBENCH_TEST_SIZE}"}
    path = _write(tmp_path, data)
    monkeypatch.delenv("EEBENCH_TEST_SIZE", raising=False)
    with pytest.raises(ConfigError, match="EEBENCH_TEST_SIZE is not set"):
        load_suite_file(path)
    monkeypatch.setenv("EEBENCH_TEST_SIZE", "16")
    assert load_suite_file(path).dataset.options == {"size": 16}


# ---------------------------------------------------------------------- a real tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    path = _write(root, TINY)
    out = run_suite(
        str(path),
        RunOptions(
            out_root=root / "results", cache_root=root / "cache", run_id="first", progress=False
        ),
    )
    return root, path, out


def test_tiny_run_writes_complete_bundle(tiny_run):
    _, _, out = tiny_run
    run = Run.open(out)
    assert run.status == "complete"
    assert run.verify() == []
    costs = run.table("stage_costs")
    assert set(costs["source_kind"]) == {"analytic", "measured", "estimated"}
    assert set(costs.loc[costs.source_kind == "estimated", "source"]) == {
        "estimated:jetson-orin-nano-8gb-15w"
    }
    measured = costs[costs.source_kind == "measured"]
    assert (measured["backend"] == "torch-cpu").all() and (measured["threads"] == 1).all()
    ops = run.table("operating_points")
    assert {"val", "test"} <= set(ops["split"])
    assert {"sweep", "baseline"} < set(ops["calibration"]), "calibrated points must be present"
    assert ops["cost_source"].str.startswith("measured:torch-cpu").any()
    val = run.table("validation")
    assert len(val) > 0 and (val["agreement"] == 1.0).all()
    exits = run.table("exits")
    assert set(exits["split"]) == {"val", "test"}
    assert (run.path / "report" / "report.html").exists()
    env = run.manifest["environment"]
    assert env["cpu_model"] and env["packages"]["torch"]


def test_unavailable_backend_is_skipped_with_reason(tiny_run):
    _, _, out = tiny_run
    skipped = Run.open(out).table("skipped")
    row = skipped[skipped["target"] == "torch-cuda"]
    assert len(row) == 1 and "CUDA" in row["reason"].iloc[0]


def test_existing_run_is_never_overwritten(tiny_run):
    root, path, out = tiny_run
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ResultsError, match="never overwritten"):
        run_suite(
            str(path),
            RunOptions(
                out_root=root / "results",
                cache_root=root / "cache",
                run_id="first",
                progress=False,
                report=False,
            ),
        )
    assert (out / "manifest.json").read_bytes() == before


def test_resume_after_kill_redoes_only_missing_steps(tiny_run, monkeypatch):
    root, path, _ = tiny_run
    from eebench.suites import runner as runner_mod

    def killed(self, ctx, backend):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod.SuiteRunner, "_validate", killed)
    opts = dict(out_root=root / "results", cache_root=root / "cache", progress=False, report=False)
    with pytest.raises(KeyboardInterrupt):
        run_suite(str(path), RunOptions(run_id="killed", **opts))
    partial = root / "results" / "tiny" / "killed"
    manifest = json.loads((partial / "manifest.json").read_text())
    assert manifest["status"] == "partial" and "resume" in manifest["reason"]
    done_before = {k: v["finished"] for k, v in manifest["steps"].items()}
    assert any(k.startswith("policies:") for k in done_before)

    monkeypatch.undo()
    calls = []
    real = runner_mod.SuiteRunner._step

    def counting(self, key, fn):
        if not self.writer.has_step(key):
            calls.append(key)
        return real(self, key, fn)

    monkeypatch.setattr(runner_mod.SuiteRunner, "_step", counting)
    run_suite(str(path), RunOptions(resume=partial, **opts))
    assert calls and all(k.startswith("validate:") for k in calls), calls
    after = json.loads((partial / "manifest.json").read_text())
    assert after["status"] == "complete"
    for key, finished in done_before.items():
        assert after["steps"][key]["finished"] == finished, f"step {key} was recomputed"
    assert len(Run.open(partial).table("validation")) > 0


def test_results_list_shows_runs(tiny_run, capsys):
    root, _, _ = tiny_run
    code = cli.main(["results", "list", "--root", str(root / "results")])
    out = capsys.readouterr().out
    assert code == 0 and "first" in out and "complete" in out
    assert isinstance(
        pd.read_csv(Path(Run.open(root / "results" / "tiny" / "first").path) / "exits.csv"),
        pd.DataFrame,
    )


# ---------------------------------------------------------------------- values the schema refuses
def _yaml_with(tmp_path: Path, replacements: dict[str, str]) -> Path:
    """TINY as YAML text with raw YAML snippets substituted (so .inf/.nan stay YAML literals)."""
    text = yaml.safe_dump(TINY)
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("lr: 0.02", "lr: .inf", "models[0].training.lr = inf"),
        ("min_time_s: 0.0", "min_time_s: .inf", "measurement.min_time_s = inf"),
        ("max_time_s: 0.5", "max_time_s: .nan", "measurement.max_time_s = nan"),
        ("- 0.9", "- -.inf", "calibration.budget_fractions[0] = -inf"),
        ("- 1\n", "- .nan\n  - .inf\n", "policies[1].thresholds[0] = nan"),
    ],
)
def test_non_finite_numbers_are_refused_with_field_paths(tmp_path, capsys, old, new, field):
    path = _yaml_with(tmp_path, {old: new})
    code, err = _cli(capsys, "run", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and "Traceback" not in err
    assert field in err and "must be finite" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("thresholds", [[0], [-1], [1, 0.5], {"start": 0, "stop": 2, "num": 3}])
def test_patience_thresholds_must_be_counts_of_at_least_one(thresholds):
    bad = json.loads(json.dumps(TINY))
    bad["policies"][1]["thresholds"] = thresholds
    with pytest.raises(ConfigError, match=r"policies\[1\].*whole numbers >= 1"):
        parse_suite(bad, "s.yaml")


def test_patience_counts_of_one_and_more_are_accepted():
    good = json.loads(json.dumps(TINY))
    good["policies"][1]["thresholds"] = [1, 2, 3]
    assert parse_suite(good, "s.yaml").policies[1].threshold_values() == [1, 2, 3]


def test_min_time_above_max_time_is_refused():
    bad = json.loads(json.dumps(TINY))
    bad["measurement"].update(min_time_s=2.0, max_time_s=1.0)
    with pytest.raises(ConfigError, match=r"measurement.*min_time_s \(2.0\) is above max_time_s"):
        parse_suite(bad, "s.yaml")


def test_env_references_in_comments_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("EEBENCH_UNSET_VAR", raising=False)
    monkeypatch.setenv("EEBENCH_TEST_LIMIT", "120")
    text = yaml.safe_dump(TINY).replace(
        "limit: 300", "limit: ${EEBENCH_TEST_LIMIT}  # was ${EEBENCH_UNSET_VAR}"
    )
    path = tmp_path / "suite.yaml"
    path.write_text("# data lives in ${EEBENCH_UNSET_VAR}/digits\n" + text)
    spec = load_suite_file(path)
    assert spec.dataset.options == {"limit": 120}


def test_env_reference_in_a_flow_list_and_a_quoted_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("EEBENCH_TEST_BS", "4")
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: envs\n"
        "description: 'see # ${EEBENCH_TEST_BS}'  # ${EEBENCH_UNSET_VAR}\n"
        "models: [{name: big-little}]\n"
        "measurement: {batch_sizes: [1, ${EEBENCH_TEST_BS}]}\n"
    )
    spec = load_suite_file(path)
    assert spec.measurement.batch_sizes == [1, 4]
    assert spec.description == "see # 4"

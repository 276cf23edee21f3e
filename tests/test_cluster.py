"""Suites on a Ray cluster: a local Ray instance with two fake devices stands in for a lab.

What a user relies on: the cluster run writes one bundle whose deterministic tables (exit
records, analytic costs, the accuracy, exit mix and MACs of every operating point) are those
of a run on one machine; a backend on a device no node holds is skipped with the reason; a
unit whose worker dies is retried; a unit that fails is reported, the rest finishes, and
``--resume`` completes the run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eebench.backends import get_backend
from eebench.backends.placement import holding, parse_placement
from eebench.cluster.plan import Unit, check_address, plan_units, prerequisites
from eebench.errors import ConfigError
from eebench.results import Run, read_manifest
from eebench.suites.runner import RunOptions, run_suite
from eebench.suites.schema import parse_suite
from tests.test_suites import TINY

SUITE = copy.deepcopy(TINY)
SUITE["backends"] = ["torch-cpu", "torch-cpu@fake-a", "torch-cpu@absent"]
SUITE["measurement"] = {"max_time_s": 0.05, "min_repeats": 3, "min_time_s": 0.0, "warmup": 1}
SUITE["validation"] = {"samples": 10, "repeats": 1}


def _write(tmp_path: Path, suite: dict, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(tmp_path: Path, suite_path: Path, run_id: str, **options) -> Path:
    return run_suite(
        str(suite_path),
        RunOptions(
            out_root=tmp_path / "results",
            cache_root=tmp_path / f"cache-{run_id}",
            run_id=run_id,
            progress=False,
            report=False,
            **options,
        ),
    )


def _deterministic(run: Run, cost_sources: set[str] | None = None) -> dict[str, pd.DataFrame]:
    """The tables that do not depend on a clock: they must not depend on where steps ran.

    Operating points: the threshold sweeps and the baselines (a calibration that meets a
    latency budget depends on the measured latency, so it is left out), for the cost sources
    given (those both runs have)."""
    costs = run.table("stage_costs")
    ops = run.table("operating_points")
    ops = ops[ops["calibration"].isin(["sweep", "baseline"])]
    if cost_sources is not None:
        ops = ops[ops["cost_source"].isin(cost_sources)]
    cols = ["model", "split", "policy", "confidence", "threshold", "cost_source"]
    cols += ["accuracy", "expected_macs", "macs_source"]
    cols += sorted(c for c in ops.columns if c.startswith("exit_frac_"))
    tables = {
        "exits": run.table("exits"),
        "analytic costs": costs[costs["source_kind"] == "analytic"].reset_index(drop=True),
        "operating points": ops[cols].reset_index(drop=True),
    }
    assert all(len(t) for t in tables.values()), {k: len(t) for k, t in tables.items()}
    return tables


def _same_tables(a: Run, b: Run) -> None:
    common = set(a.table("operating_points")["cost_source"]) & set(
        b.table("operating_points")["cost_source"]
    )
    assert any(c.startswith("measured:") for c in common), common
    left, right = _deterministic(a, common), _deterministic(b, common)
    for name, table in left.items():
        pd.testing.assert_frame_equal(table, right[name], obj=name)


# ---------------------------------------------------------------------- without Ray
def test_units_follow_the_order_of_a_run_on_one_machine_and_wait_for_what_they_read():
    spec = parse_suite(
        {**SUITE, "backends": ["torch-cpu", "simulated:jetson-orin-nano-8gb-15w", "onnxruntime@b"]}
    )
    ids = [u.id for u in plan_units(spec)]
    assert ids == [
        "host:bl",
        "measure:bl:torch-cpu",
        "estimate:bl:simulated:jetson-orin-nano-8gb-15w",
        "measure:bl:onnxruntime@b",
        "policies:bl",
        "validate:bl:torch-cpu",
        "validate:bl:onnxruntime@b",
    ]
    validate = Unit("validate", "bl", "onnxruntime@b")
    assert [u.id for u in prerequisites(validate, spec)] == [
        "host:bl",
        "measure:bl:torch-cpu",
        "estimate:bl:simulated:jetson-orin-nano-8gb-15w",
        "measure:bl:onnxruntime@b",
        "policies:bl",
    ]
    assert prerequisites(Unit("measure", "bl", "torch-cpu"), spec) == [Unit("host", "bl")]
    # devices: a placed backend's device, the driver's machine for a plain one, none for the rest
    assert validate.device == "b"
    assert Unit("measure", "bl", "torch-cpu").device == "@driver"
    assert Unit("policies", "bl").device is None and Unit("host", "bl").device is None


def test_placed_backend_names_and_cluster_addresses_are_checked():
    assert parse_placement("torch-cuda@jetson-orin-nano-8gb").device == "jetson-orin-nano-8gb"
    assert parse_placement("onnxruntime").device is None
    with pytest.raises(ValueError, match="letters, digits"):
        parse_placement("torch-cpu@two words")
    for address in ("local", "auto", "ray://head:10001"):
        assert check_address(address) == address
    with pytest.raises(ConfigError, match="ray://HOST:PORT"):
        check_address("head:6379")


def test_a_suite_with_a_misspelt_placed_backend_names_the_field(tmp_path):
    bad = {**SUITE, "backends": ["torch-cpu", "torch-cpux@fake-a"]}
    with pytest.raises(ConfigError) as err:
        run_suite(str(_write(tmp_path, bad)), RunOptions(out_root=tmp_path / "r", report=False))
    assert "backends[1]" in str(err.value) and "did you mean 'torch-cpu'" in str(err.value)
    simulated = {**SUITE, "backends": ["simulated:jetson-orin-nano-8gb-15w@x"]}
    with pytest.raises(ConfigError, match="runs nowhere"):
        run_suite(
            str(_write(tmp_path, simulated)), RunOptions(out_root=tmp_path / "r", report=False)
        )
    assert not (tmp_path / "r").exists()


def test_a_placed_backend_runs_only_where_its_device_is_held():
    backend = get_backend("torch-cpu@rpi5")
    ok, reason = backend.available()
    assert not ok and "device:rpi5" in reason and "--cluster" in reason
    with holding({"rpi5"}):
        assert backend.available() == (True, "")
    assert backend.name == "torch-cpu@rpi5"


# ---------------------------------------------------------------------- with a local Ray
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A one-node Ray instance holding two fake devices; faults are injected through a file."""
    ray = pytest.importorskip("ray", reason="the cluster tests need the 'cluster' extra (ray)")
    faults = tmp_path_factory.mktemp("faults") / "faults.json"
    faults.write_text("{}")
    mp = pytest.MonkeyPatch()
    mp.setenv("EEBENCH_CLUSTER_FAULTS", str(faults))  # workers inherit it from the raylet
    ray.init(
        num_cpus=2,
        resources={"device:fake-a": 1, "device:fake-b": 1},
        include_dashboard=False,
        log_to_driver=False,
    )
    yield faults
    ray.shutdown()
    mp.undo()


def test_a_cluster_run_writes_the_tables_of_a_run_on_one_machine(tmp_path, lab):
    lab.write_text("{}")
    suite = _write(tmp_path, SUITE)
    local = Run.open(_run(tmp_path, suite, "local"))
    cluster_path = _run(tmp_path, suite, "cluster", cluster="local")
    cluster = Run.open(cluster_path)
    assert cluster.status == "complete" and local.status == "complete"
    _same_tables(local, cluster)

    # the device-bound steps of the placed backend ran on the node holding fake-a ...
    costs = cluster.table("stage_costs")
    assert {"torch-cpu", "torch-cpu@fake-a"} <= set(costs["backend"].dropna())
    assert set(local.table("stage_costs")["backend"].dropna()) == {"torch-cpu"}
    manifest = read_manifest(cluster_path)
    state = manifest["cluster"]
    node = state["units"]["measure:bl:torch-cpu@fake-a"]["node"]
    assert "fake-a" in state["nodes"][node]["devices"]
    # ... and the manifest has that node's environment next to the steps measured on it
    assert state["node_environments"][node]["cpu_model"]
    assert manifest["steps"]["measure:bl:torch-cpu@fake-a:b1:t1"]["info"]["node"] == node
    # a device no node holds: skipped with the reason, in both runs
    skipped = cluster.table("skipped")
    row = skipped[skipped["target"] == "torch-cpu@absent"]
    assert len(row) == 1 and "device:absent" in row["reason"].iloc[0]
    local_skip = local.table("skipped")
    assert "--cluster" in local_skip[local_skip["target"] == "torch-cpu@absent"]["reason"].iloc[0]
    # the report's node table says where the placed backend was measured; none without a cluster
    from eebench.report.data import load_runs
    from eebench.report.tables import cluster_nodes_table

    nodes = cluster_nodes_table(load_runs([cluster_path]))
    assert len(nodes) == 1 and nodes["devices"].iloc[0] == "fake-a, fake-b"
    assert "measure:bl:torch-cpu@fake-a" in nodes["device-bound units"].iloc[0]
    assert cluster_nodes_table(load_runs([local.path])).empty
    # the steps are in the order a run on one machine writes them
    local_steps = list(read_manifest(local.path)["steps"])
    shared = [k for k in manifest["steps"] if k in set(local_steps)]
    assert shared == [k for k in local_steps if k in set(shared)]


def test_a_unit_whose_worker_dies_is_retried(tmp_path, lab):
    lab.write_text(json.dumps({"measure:bl:torch-cpu@fake-a": "crash-once"}))
    path = _run(tmp_path, _write(tmp_path, SUITE), "crash", cluster="local")
    lab.write_text("{}")
    assert Path(f"{lab}.measure_bl_torch-cpu_fake-a.crashed").exists()  # it did die once
    run = Run.open(path)
    assert run.status == "complete"
    assert "torch-cpu@fake-a" in set(run.table("stage_costs")["backend"].dropna())


def test_a_failed_unit_is_reported_the_rest_finishes_and_resume_completes(tmp_path, lab):
    from eebench.cluster.driver import ClusterError

    suite = _write(tmp_path, SUITE)
    lab.write_text(json.dumps({"measure:bl:torch-cpu@fake-a": "error"}))
    with pytest.raises(ClusterError, match="measure:bl:torch-cpu@fake-a") as err:
        _run(tmp_path, suite, "fails", cluster="local")
    lab.write_text("{}")
    assert "fault injected" in str(err.value)
    run_path = tmp_path / "results" / "tiny" / "fails"
    manifest = read_manifest(run_path)
    assert manifest["status"] == "failed" and "--resume" in manifest["reason"]
    units = manifest["cluster"]["units"]
    assert units["measure:bl:torch-cpu@fake-a"]["status"] == "failed"
    assert units["measure:bl:torch-cpu"]["status"] == "done"  # independent work finished
    assert "policies:bl" not in units  # it needs the failed measurement
    done_before = {k for k, v in units.items() if v["status"] == "done"}

    resumed = run_suite(
        str(suite),
        RunOptions(
            resume=run_path,
            cache_root=tmp_path / "cache-fails",
            progress=False,
            report=False,
            cluster="local",
        ),
    )
    after = read_manifest(resumed)
    assert after["status"] == "complete"
    # nothing finished was redone
    for unit in done_before:
        assert after["cluster"]["units"][unit] == units[unit]
    _same_tables(Run.open(_run(tmp_path, suite, "clean", cluster="local")), Run.open(resumed))


def test_nodes_with_other_eebench_code_are_refused():
    from eebench.cluster.driver import version_problems

    mine = {"eebench_version": "0.4.0", "git_commit": "abc"}
    same = {"n1": {"hostname": "a", "eebench_version": "0.4.0", "git_commit": "abc"}}
    assert version_problems(mine, same) is None
    # a node installed from a wheel knows no commit: only the version is compared
    wheel = {"n1": {"hostname": "a", "eebench_version": "0.4.0", "git_commit": None}}
    assert version_problems(mine, wheel) is None
    old = {"n2": {"hostname": "jetson", "address": "10.0.0.7", "eebench_version": "0.3.1"}}
    problem = version_problems(mine, old)
    assert problem and "jetson (10.0.0.7): eebench_version 0.3.1, the driver 0.4.0" in problem
    other = {"n3": {"hostname": "b", "eebench_version": "0.4.0", "git_commit": "def"}}
    assert "git_commit def, the driver abc" in (version_problems(mine, other) or "")

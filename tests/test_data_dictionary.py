"""The data dictionary in results/README.md describes every column of every bundle table.

A real tiny run (a two-member cascade on digits, measured on torch-cpu and estimated for a
Jetson profile, with every calibration target) writes a bundle; every column of every table in
it must have a row in the dictionary, and the test names the table and column that does not.
The same bundle shows the no-early-exit baseline at the plain network's cost end to end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from eebench.results import Run
from eebench.results.schema import TABLES
from eebench.suites.runner import RunOptions, run_suite

README = Path(__file__).resolve().parents[1] / "results" / "README.md"
KINDS = {"identity", "analytic", "measured", "estimated", "record"}
HEADER = ["column", "meaning", "unit", "kind"]

SUITE = {
    "name": "dictionary",
    "dataset": {"name": "digits", "seed": 0, "options": {"limit": 240}},
    "models": [
        {
            "name": "big-little",
            "id": "bl",
            "config": {"width": 4},
            "training": {"scheme": "cascade", "epochs": 2, "lr": 0.02, "batch_size": 32},
        },
    ],
    "policies": [
        {
            "name": "threshold",
            "confidence": ["max_softmax"],
            "thresholds": {"start": 0, "stop": 1, "num": 11},
        },
    ],
    "baselines": ["oracle", "final-only", "aggregation"],
    "calibration": {
        "accuracy_within": [0.5],
        "budget_fractions": [1.0],
        "exit_distributions": [[0.5, 0.5]],
    },
    "backends": ["torch-cpu", "torch-cuda", "simulated:jetson-orin-nano-8gb-15w"],
    "measurement": {
        "warmup": 1,
        "min_repeats": 3,
        "min_time_s": 0.0,
        "max_time_s": 0.3,
        "energy": False,
    },
    "validation": {"samples": 8, "repeats": 1},
}


@dataclass(frozen=True)
class Entry:
    column: str
    meaning: str
    unit: str
    kind: str

    def matches(self, name: str) -> bool:
        """``exit_frac_<i>`` matches ``exit_frac_0``, ``exit_frac_12``, ...; others match exactly."""
        parts = re.split(r"(<[^>]+>)", self.column)
        pattern = "".join(r"\d+" if p == "<i>" else re.escape(p) for p in parts)
        return re.fullmatch(pattern, name) is not None


def parse_dictionary(text: str) -> dict[str, list[Entry]]:
    """``### <table>`` headings under ``## Data dictionary``, each followed by a markdown table
    ``column | meaning | unit | kind``."""
    section = text.split("## Data dictionary", 1)
    if len(section) != 2:
        raise AssertionError(f"{README}: no '## Data dictionary' section")
    body = re.split(r"^## ", section[1], flags=re.M)[0]  # up to the next level-2 heading
    tables: dict[str, list[Entry]] = {}
    current: str | None = None
    for lineno, line in enumerate(body.splitlines(), 1):
        heading = re.match(r"^### +`?([A-Za-z0-9_]+)`?\s*$", line)
        if heading:
            current = heading.group(1)
            tables[current] = []
            continue
        if current is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == HEADER or set("".join(cells)) <= set("-: "):
            continue
        if len(cells) != 4 or not all(cells):
            raise AssertionError(
                f"{README}: table '{current}', line {lineno} of the dictionary needs four "
                f"non-empty cells (column | meaning | unit | kind), got {cells}"
            )
        tables[current].append(Entry(*cells))
    return tables


def undocumented(frames: dict[str, pd.DataFrame], dictionary: dict[str, list[Entry]]) -> list[str]:
    """'table <t>: column <c>' for every column no dictionary row describes."""
    missing = []
    for table, frame in frames.items():
        entries = dictionary.get(table, [])
        for column in frame.columns:
            if not any(e.matches(str(column)) for e in entries):
                missing.append(f"table '{table}': column '{column}'")
    return missing


@pytest.fixture(scope="module")
def dictionary() -> dict[str, list[Entry]]:
    return parse_dictionary(README.read_text())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("dictionary")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    out = run_suite(
        str(path),
        RunOptions(
            out_root=root / "results", cache_root=root / "cache", run_id="one", progress=False
        ),
    )
    run = Run.open(out)
    assert run.status == "complete"
    return run


def test_dictionary_is_well_formed(dictionary):
    for table in TABLES:
        assert dictionary.get(table), f"{README}: no dictionary table for bundle table '{table}'"
    for table, entries in dictionary.items():
        names = [e.column for e in entries]
        assert len(names) == len(set(names)), f"table '{table}': a column is described twice"
        for e in entries:
            kinds = {k.strip() for k in e.kind.split("/")}
            assert kinds <= KINDS, f"table '{table}', column '{e.column}': unknown kind {e.kind!r}"


def test_every_required_column_is_documented(dictionary):
    frames = {name: pd.DataFrame(columns=list(spec.required)) for name, spec in TABLES.items()}
    assert undocumented(frames, dictionary) == []


def test_every_column_of_a_real_bundle_is_documented(bundle, dictionary):
    frames = {name: bundle.table(name) for name in TABLES}
    written = {name for name, frame in frames.items() if len(frame.columns)}
    assert {"exits", "stage_costs", "operating_points", "validation", "skipped"} <= written
    files = {p.name.split(".", 1)[0] for p in bundle.path.glob("*.csv")}
    assert files <= set(TABLES), f"tables the schema does not know: {files - set(TABLES)}"
    missing = undocumented(frames, dictionary)
    assert not missing, "undocumented in results/README.md:\n" + "\n".join(missing)


def test_a_new_column_is_caught_by_name(dictionary):
    frames = {"validation": pd.DataFrame(columns=["model", "exit_frac_3", "brand_new"])}
    assert undocumented(frames, dictionary) == ["table 'validation': column 'brand_new'"]
    assert undocumented({"no_such_table": pd.DataFrame(columns=["model"])}, dictionary) == [
        "table 'no_such_table': column 'model'"
    ]


def test_bundle_charges_final_only_the_plain_network(bundle):
    """big-little is a cascade: its plain network is the big member alone (stage 1 + head 1)."""
    costs = bundle.table("stage_costs")
    macs = costs[(costs["metric"] == "macs") & (costs["source_kind"] == "analytic")]
    part = {(r.part, int(r.index)): float(r.value) for r in macs.itertuples()}
    plain = part[("stage", 1)] + part[("exit", 1)]
    everything = sum(part.values())
    assert plain < everything
    ops = bundle.table("operating_points")
    final = ops[ops["policy"] == "final-only"]
    aggregation = ops[ops["policy"] == "aggregation"]
    assert len(final) and len(aggregation)
    np.testing.assert_allclose(final["expected_macs"].to_numpy(float), plain, rtol=1e-12)
    np.testing.assert_allclose(aggregation["expected_macs"].to_numpy(float), everything, rtol=1e-12)
    # latency: the big member's measured stage + head (batch 1) for the measured cost source
    lat = costs[(costs["metric"] == "latency_median_ms") & (costs["source_kind"] == "measured")]
    lat = lat[lat["batch_size"] == 1]
    lat_part = {(r.part, int(r.index)): float(r.value) for r in lat.itertuples()}
    measured = final[final["cost_source"].str.startswith("measured:torch-cpu")]
    np.testing.assert_allclose(
        measured["expected_latency_ms"].to_numpy(float),
        lat_part[("stage", 1)] + lat_part[("exit", 1)],
        rtol=1e-9,
    )
    # budgets are fractions of the plain network's MACs: budget 1.0 = exactly its MACs
    budget = ops["target_budget"].dropna() if "target_budget" in ops.columns else pd.Series()
    assert len(budget) and np.allclose(budget.to_numpy(float), plain)


def test_report_shows_lost_by_exiting_early_beside_wasted_computation(bundle):
    from eebench.report.data import load_runs
    from eebench.report.tables import fmt_pct, operating_points_table

    table = operating_points_table(load_runs([bundle.path]))
    lost, wasted = (
        "test lost by exiting early [%]",
        "test wasted computation [% of MACs] (analytic)",
    )
    assert {lost, wasted} <= set(table.columns)
    ops = bundle.table("operating_points")
    test = ops[(ops["split"] == "test") & ~ops["calibration"].isin(["sweep", "baseline"])]
    first = table[table["calibration"] == test["calibration"].iloc[0]].iloc[0]
    row = test[test["calibration"] == first["calibration"]].iloc[0]
    assert first[lost] == fmt_pct(row["lost_by_exiting_early"])
    assert first[wasted] == fmt_pct(row["wasted_frac_macs"])

"""Suites: the schema of suite files, locating built-in suites, and the runner."""

from eebench.suites.locate import builtin_suites, resolve_suite
from eebench.suites.schema import (
    CalibrationSpec,
    DatasetSpec,
    MeasurementSpec,
    ModelSpec,
    PolicySpec,
    SuiteSpec,
    ValidationSpec,
    load_suite_file,
    parse_suite,
)

__all__ = [
    "CalibrationSpec",
    "DatasetSpec",
    "MeasurementSpec",
    "ModelSpec",
    "PolicySpec",
    "SuiteSpec",
    "ValidationSpec",
    "builtin_suites",
    "load_suite_file",
    "parse_suite",
    "resolve_suite",
]

"""Hardware profiles: schema, loading and validation, measuring a device, submission, estimates.

A hardware profile describes one device in one power mode with numbers that
each carry a unit and a provenance (datasheet, measured or derived). The
estimator turns a profile and a model into per-stage latency and energy
labelled ``estimated:<profile>``.
"""

from eebench.profiles import simulated as _simulated  # noqa: F401  (registers simulated:<profile>)
from eebench.profiles.estimator import (
    DEFAULT_BANDWIDTH_EFFICIENCY,
    DEFAULT_EFFICIENCY,
    DEFAULT_OVERHEAD_S,
    Estimator,
    estimate_layers,
    estimate_model,
)
from eebench.profiles.host import HostMismatch, host_mismatch
from eebench.profiles.jetson import detect_jetson, is_jetson
from eebench.profiles.locate import (
    builtin_profiles_dir,
    community_profiles_dir,
    find_profile,
    list_profiles,
    load_profile,
)
from eebench.profiles.operators import Operator, model_operators
from eebench.profiles.schema import ENGINES, PRECISIONS, HardwareProfile, Provenance, Quantity
from eebench.profiles.simulated import SimulatedBackend, SimulatedPrepared
from eebench.profiles.submit import Submission, slugify, submit_profile
from eebench.profiles.validate import (
    ProfileError,
    ProfileIssue,
    check_profile,
    load_profile_file,
    validate_file,
)

__all__ = [
    "DEFAULT_BANDWIDTH_EFFICIENCY",
    "DEFAULT_EFFICIENCY",
    "DEFAULT_OVERHEAD_S",
    "ENGINES",
    "PRECISIONS",
    "Estimator",
    "HardwareProfile",
    "HostMismatch",
    "Operator",
    "ProfileError",
    "ProfileIssue",
    "Provenance",
    "Quantity",
    "SimulatedBackend",
    "SimulatedPrepared",
    "Submission",
    "builtin_profiles_dir",
    "check_profile",
    "community_profiles_dir",
    "detect_jetson",
    "estimate_layers",
    "estimate_model",
    "find_profile",
    "is_jetson",
    "list_profiles",
    "load_profile",
    "load_profile_file",
    "host_mismatch",
    "model_operators",
    "slugify",
    "submit_profile",
    "validate_file",
]

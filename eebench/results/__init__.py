"""Results bundles: write (atomic, step by step), read (checksummed), list."""

from eebench.results.bundle import (
    ChecksumError,
    Run,
    RunWriter,
    atomic_write_bytes,
    iter_runs,
    list_runs,
    read_manifest,
    sha256_file,
)
from eebench.results.schema import SCHEMA_VERSION, TABLES, TableSpec

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "ChecksumError",
    "Run",
    "RunWriter",
    "TableSpec",
    "atomic_write_bytes",
    "iter_runs",
    "list_runs",
    "read_manifest",
    "sha256_file",
]

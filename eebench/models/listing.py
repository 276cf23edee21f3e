"""The model table shown by ``eebench list models``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from eebench.models.base import InputShapeError
from eebench.models.registry import create_model, list_models

CUM_MACS_COLUMN = "cum MACs per exit (M)"
FINAL_MACS_COLUMN = "plain network MACs (M)"

TABLE_NOTE = (
    "MACs are analytic (fvcore; 1 MAC = 1 multiply-add of conv/linear/matmul, FLOPs = 2 x MACs), "
    "per sample. cum MACs per exit = all stages and heads up to that exit; "
    "plain network MACs = what the network without its early exits runs (the final-only "
    "baseline's cost): all stages + the final head only; for a cascade, its last member alone."
)


def _millions(value: float) -> str:
    """MACs in millions with three significant digits (``0.12``, ``2.3``, ``61``)."""
    return f"{value / 1e6:.3g}"


def models_table(
    input_shape: Sequence[int], num_classes: int = 10, filter: str | None = None
) -> pd.DataFrame:
    """One row per registered model: family, exits, parameters and analytic MACs per exit.

    A model that cannot run on the input shape gets a row saying why instead
    of disappearing.
    """
    import fnmatch

    from eebench.costs import analyze_costs
    from eebench.models.entry_points import FAILED
    from eebench.models.registry import MODELS

    def unusable(name: str, note: str) -> dict[str, str]:
        return {
            "model": name,
            "family": "-",
            "exits": "-",
            "params": "-",
            CUM_MACS_COLUMN: "-",
            FINAL_MACS_COLUMN: "-",
            "note": note,
        }

    rows = []
    for name in list_models(filter):
        try:
            model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        except InputShapeError as err:
            rows.append(unusable(name, f"not runnable: {err}"))
            continue
        except Exception as err:  # an installed package's model: say why instead of failing
            if str(getattr(MODELS.get(name), "__module__", "")).startswith("eebench."):
                raise
            rows.append(unusable(name, f"cannot be built: {str(err).splitlines()[0]}"))
            continue
        costs = analyze_costs(model)
        final_only = costs.plain_macs
        rows.append(
            {
                "model": name,
                "family": model.family,
                "exits": model.num_exits,
                "params": f"{sum(p.numel() for p in model.parameters()):,}",
                CUM_MACS_COLUMN: " / ".join(_millions(v) for v in costs.cumulative_macs),
                FINAL_MACS_COLUMN: _millions(final_only),
                "note": "",
            }
        )
    for name, err in sorted(FAILED.items()):  # entry points that did not load
        if not filter or fnmatch.fnmatch(name, filter):
            rows.append(unusable(name, f"not loaded: {err.message}"))
    table = pd.DataFrame(rows)
    table.attrs["note"] = TABLE_NOTE
    return table

"""The model table shown by ``eebench list models``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from eebench.models.base import InputShapeError
from eebench.models.registry import create_model, list_models


def models_table(input_shape: Sequence[int], num_classes: int = 10, filter: str | None = None) -> pd.DataFrame:
    """One row per registered model: family, exits, parameters; a model that cannot run on
    the input shape gets a row saying why instead of disappearing."""
    rows = []
    for name in list_models(filter):
        try:
            model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        except InputShapeError as err:
            rows.append({"model": name, "family": "-", "exits": "-", "params": "-",
                         "note": f"not runnable: {err}"})
            continue
        rows.append({
            "model": name,
            "family": model.family,
            "exits": model.num_exits,
            "params": f"{sum(p.numel() for p in model.parameters()):,}",
            "note": "",
        })
    return pd.DataFrame(rows)

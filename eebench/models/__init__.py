"""The multi-exit model zoo: the API, the registry and one module per family.

Importing this package registers every family's entry points.
"""

from eebench.models import branchy as _branchy  # noqa: F401  (registers entry points)
from eebench.models import cascade as _cascade  # noqa: F401  (registers entry points)
from eebench.models import msdnet as _msdnet  # noqa: F401  (registers entry points)
from eebench.models import ranet as _ranet  # noqa: F401  (registers entry points)
from eebench.models import sdn as _sdn  # noqa: F401  (registers entry points)
from eebench.models.base import (
    ExitInfo,
    InputShapeError,
    ModelConfigError,
    ModelMetadata,
    MultiExitModel,
    State,
    as_tuple,
    from_tuple,
)
from eebench.models.registry import (
    MODELS,
    UnknownNameError,
    create_model,
    list_models,
    register_model,
    resolve_model_spec,
)

__all__ = [
    "MODELS",
    "ExitInfo",
    "InputShapeError",
    "ModelConfigError",
    "ModelMetadata",
    "MultiExitModel",
    "State",
    "UnknownNameError",
    "as_tuple",
    "create_model",
    "from_tuple",
    "list_models",
    "register_model",
    "resolve_model_spec",
]

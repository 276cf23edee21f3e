"""A suite's model entry -> a built model (with its weights): the one place the runner's checks
before a run and its training step resolve ``models[i]``.

A name is a registry name or a factory spec whose relative file is taken from
the suite file's folder. Every failure is a :class:`~eebench.errors.ConfigError`
naming the suite file and the field path (``models[i].name``,
``models[i].config``, ``models[i].checkpoint``). A user's model (a factory
spec, or a model an installed package registers) is also held to the cheap
clauses of the model contract before anything runs, so a model whose exits
disagree with a real forward is refused up front, not halfway through a run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from eebench.data import DatasetSplits
from eebench.errors import CheckpointError, ConfigError, EEBenchError
from eebench.models import MultiExitModel
from eebench.suites.schema import ModelSpec

# the contract clauses that cost a forward or two: run on every user model before a run
PRE_RUN_CLAUSES = (
    "forward_all gives every exit's logits",
    "declared exits == a real forward",
    "stage by stage == forward_all",
    "no parameter shared between stages",
)


def is_user_model(name: str) -> bool:
    """A factory spec, or a registered model that eebench itself does not define."""
    from eebench.models.registry import MODELS
    from eebench.models.user import is_factory_spec

    if is_factory_spec(name):
        return True
    factory = MODELS.get(name) if name in MODELS else None
    return factory is not None and not str(getattr(factory, "__module__", "")).startswith(
        "eebench."
    )


def build_suite_model(
    m: ModelSpec, index: int, source: Path, splits: DatasetSplits, seed: int | None = None
) -> MultiExitModel:
    """Build ``models[index]`` for the dataset (initial weights fixed by ``seed`` when given)."""
    from eebench.models import resolve_model_spec
    from eebench.models.contract import CLAUSES, ContractViolation
    from eebench.models.user import ModelSpecError
    from eebench.training import seeded

    where = str(source)
    try:
        with seeded(seed) if seed is not None else contextlib.nullcontext():
            model = resolve_model_spec(
                m.name, m.config, splits.num_classes, splits.input_shape, base_dir=source.parent
            )
    except ModelSpecError as err:
        field = (
            f"models[{index}].config" if "config key" in err.message else f"models[{index}].name"
        )
        raise err.located(where, field) from None
    except (EEBenchError, TypeError, ValueError) as err:
        raise ConfigError(
            f"model '{m.name}' cannot be built with config {dict(m.config)} for input "
            f"{tuple(splits.input_shape)} and {splits.num_classes} classes: {err}",
            source=where,
            field=f"models[{index}].config",
        ) from None
    if is_user_model(m.name):
        was_training = model.training
        model.eval()  # no BatchNorm statistics move while checking
        for clause in PRE_RUN_CLAUSES:
            try:
                CLAUSES[clause](model)
            except ContractViolation as v:
                raise ConfigError(
                    f"model '{m.name}' breaks the model contract ({clause}): {v.what}; fix: {v.fix} "
                    f"(eebench check-model {m.name} runs every clause)",
                    source=where,
                    field=f"models[{index}].name",
                ) from None
        model.train(was_training)
    return model


def checkpoint_file(raw: str, source: Path) -> Path:
    """A checkpoint path: as given when it exists from the current folder, else from the suite
    file's folder (so a suite next to its weights runs from anywhere)."""
    path = Path(raw).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside = source.parent / path
    return beside if beside.exists() else path


def load_suite_weights(
    m: ModelSpec, index: int, source: Path, splits: DatasetSplits, seed: int = 0
) -> tuple[MultiExitModel, Any]:
    """The model of an entry with a ``checkpoint``, its weights loaded, and what was loaded: an
    eebench checkpoint (checked against the entry, as before) or a user's plain state_dict."""
    from eebench.models.registry import canonical_model_name
    from eebench.training import load_checkpoint
    from eebench.training.user_weights import is_eebench_checkpoint, load_user_weights

    assert m.checkpoint is not None
    field = f"models[{index}].checkpoint"
    raw, part = (
        (m.checkpoint, "model")
        if isinstance(m.checkpoint, str)
        else (m.checkpoint.path, m.checkpoint.part)
    )
    path = checkpoint_file(raw, source)
    try:
        if part == "model" and is_eebench_checkpoint(path):
            return load_checkpoint(
                path,
                model_name=canonical_model_name(m.name, source.parent),
                model_config=dict(m.config),
                num_classes=splits.num_classes,
                input_shape=splits.input_shape,
                dataset_fingerprint=splits.fingerprint,
            )
        model = build_suite_model(m, index, source, splits, seed=seed)
        info = load_user_weights(model, path, part)  # type: ignore[arg-type]
    except (CheckpointError, OSError) as err:
        raise ConfigError(str(err), source=str(source), field=field) from None
    return model, info

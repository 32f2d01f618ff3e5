"""Model registry: builders found by name (the CLI and checkpoints name models)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from foldcnn.errors import UnknownNameError, UsageError, UsageTypeError
from foldcnn.fold import check_fold
from foldcnn.models.base import FoldedCNN, ModelConfig
from foldcnn.models.imported import is_import_path


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., FoldedCNN]
    family: str
    description: str
    num_classes: int
    input_shape: tuple[int, int, int]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, description: str, num_classes: int, input_shape: tuple[int, int, int]
) -> Callable[[Callable[..., FoldedCNN]], Callable[..., FoldedCNN]]:
    """Decorator: register a builder ``builder(*, fold, width_mult, channel_multiple, **kw)``."""

    def wrap(builder: Callable[..., FoldedCNN]) -> Callable[..., FoldedCNN]:
        if name in _REGISTRY:
            raise UsageError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, family, description, num_classes, tuple(input_shape))
        return builder

    return wrap


def _imported_entry(name: str) -> ModelEntry:
    from foldcnn.models.imported import create_imported_model, import_builder

    builder = import_builder(name)  # a path that does not import fails here, before any work
    doc = (getattr(builder, "__doc__", None) or "").strip().splitlines()
    return ModelEntry(name, create_imported_model, "imported", doc[0] if doc else name, 0, (0, 0, 0))


def _lookup(name: str) -> ModelEntry:
    if is_import_path(name):
        return _imported_entry(name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}, "
            "or your own as package.module:Name"
        )
    return _REGISTRY[name]


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models, sorted; optionally only one family (game, noscope, ...)."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of a zoo name; for ``package.module:Name`` an entry whose
    ``num_classes`` and ``input_shape`` are 0 (they depend on the builder's keyword arguments)."""
    return _lookup(name)


def create_model(
    name: str,
    fold: int = 1,
    width_mult: float | None = None,
    channel_multiple: int | None = None,
    **kwargs,
) -> FoldedCNN:
    """Build a zoo model by name, or a user's CNN by import path ``package.module:Name``.

    ``fold`` images are classified together; hidden widths scale by ``width_mult`` (default
    sqrt(fold)), rounded up to a multiple of ``channel_multiple`` (1 = the paper's exact widths).
    Extra keyword arguments go to the builder (game CNNs: ``num_classes``, ``input_size``; an
    import path: the user's keywords plus ``input_shape=(C, H, W)``, see foldcnn.models.imported).
    """
    entry = _lookup(name)
    fold = check_fold(fold)
    if entry.family == "imported":
        return entry.builder(name, fold, width_mult, channel_multiple, **kwargs)
    try:
        model = entry.builder(fold=fold, width_mult=width_mult, channel_multiple=channel_multiple, **kwargs)
    except TypeError as e:
        raise UsageTypeError(f"model {name!r} does not accept these options: {e}") from None
    model.config = ModelConfig(name, fold, width_mult, channel_multiple, dict(kwargs))
    return model


def model_from_config(config: ModelConfig | dict) -> FoldedCNN:
    """Rebuild a model (fresh weights) from the config saved with it."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return create_model(
        config.name, config.fold, config.width_mult, config.channel_multiple, **config.kwargs
    )


def is_folded_cnn(m: nn.Module) -> bool:
    return isinstance(m, FoldedCNN)

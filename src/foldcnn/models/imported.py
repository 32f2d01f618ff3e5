"""Models named by import path: ``package.module:Name``, a user's own CNN folded by ``fold_model``.

``Name`` is an ``nn.Module`` class or a function returning one (the ecosystem's convention:
uvicorn's ``app:main``, Lightning's ``class_path``); it builds the model for ONE image, i.e.
the original (fold=1) CNN mapping (N, C, H, W) -> (N, K). The current directory is importable,
as with ``python -m``. :func:`create_imported_model` builds it with the user's keyword
arguments and folds it; ``create_model`` calls it for any name that contains ``:``.

Every failure a user can cause (a module or name that does not import, a builder that raises
or returns something else than a module) is a one-sentence :class:`ImportedModelError`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Callable

from torch import nn

from foldcnn.errors import FoldcnnError, UsageError

__all__ = ["ImportedModelError", "build_original", "create_imported_model", "import_builder", "import_root",
           "is_import_path", "parse_input_shape", "search_path"]

# The keyword that tells foldcnn one image's (C, H, W); also passed to builders that take it.
INPUT_SHAPE_KEY = "input_shape"


class ImportedModelError(FoldcnnError, ValueError):
    """A model import path that does not resolve, or a builder that fails or returns no module."""


def is_import_path(name: str) -> bool:
    """True for ``package.module:Name`` (a zoo name never contains ':')."""
    return isinstance(name, str) and ":" in name


def _split(path: str) -> tuple[str, str]:
    module, _, attr = path.partition(":")
    if not module or not attr or ":" in attr:
        raise ImportedModelError(f"model import path {path!r} must look like package.module:Name "
                                 "(a module, a colon, an nn.Module class or a function returning one)")
    return module, attr


def import_builder(path: str) -> Callable[..., nn.Module]:
    """The class or function ``path`` names; the current directory is importable."""
    module_name, attr = _split(path)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ImportedModelError(f"cannot import module {module_name!r} of model {path!r} ({e}); run from the "
                                 "folder that holds it or add that folder to PYTHONPATH") from None
    except Exception as e:
        raise ImportedModelError(f"importing module {module_name!r} of model {path!r} failed: "
                                 f"{type(e).__name__}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
            raise ImportedModelError(f"module {module_name!r} has no {attr!r} (model {path!r}); it defines "
                                     f"{', '.join(names) or 'nothing public'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImportedModelError(f"{path!r} is a {type(obj).__name__}, not an nn.Module class or a function "
                                 "returning one")
    return obj


def import_root(path: str) -> str | None:
    """The folder on ``sys.path`` that ``path``'s module was imported from (None: not a plain file)."""
    module = sys.modules.get(_split(path)[0]) or importlib.import_module(_split(path)[0])
    file = getattr(module, "__file__", None)
    if not file:
        return None
    root = os.path.dirname(os.path.abspath(file))
    for _ in range(_split(path)[0].count(".") + (os.path.basename(file) == "__init__.py")):
        root = os.path.dirname(root)
    return root


def search_path(root: str | None) -> None:
    """Let imports also look in ``root`` (appended: the user's own sys.path wins), if it exists."""
    if root and os.path.isdir(root) and root not in sys.path:
        sys.path.append(root)


def _accepts(builder: Callable, name: str) -> bool:
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def accepts_keyword(path: str, name: str) -> bool:
    """Whether the builder at ``path`` takes the keyword ``name`` (e.g. num_classes)."""
    return _accepts(import_builder(path), name)


def build_original(path: str, kwargs: dict | None = None) -> nn.Module:
    """The user's unfolded model: ``Name(**kwargs)``, checked to be an ``nn.Module``."""
    builder = import_builder(path)
    kwargs = dict(kwargs or {})
    try:
        model = builder(**kwargs)
    except Exception as e:
        given = ", ".join(sorted(kwargs)) or "no keyword arguments"
        raise ImportedModelError(f"building model {path!r} with {given} raised {type(e).__name__}: {e} "
                                 "(--model-kwargs passes JSON keyword arguments)") from None
    if not isinstance(model, nn.Module):
        raise ImportedModelError(f"{path!r} returned a {type(model).__name__}, not an nn.Module; name an "
                                 "nn.Module class or a function that returns one")
    return model


def parse_input_shape(value, path: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"input_shape of model {path!r} must be one image's (C, H, W), e.g. [3, 32, 32]; "
                         f"got {value!r}")
    return shape


def create_imported_model(path: str, fold: int = 1, width_mult: float | None = None,
                          channel_multiple: int | None = None, **kwargs):
    """Build ``path`` with ``kwargs`` and fold it (``foldcnn.fold_model``); fresh weights at every fold.

    ``input_shape=(C, H, W)`` among ``kwargs`` is one image's shape (also passed to the builder
    when it takes that keyword); without it the model's own ``input_shape`` attribute is used.
    The result carries ``config`` (a ModelConfig whose name is ``path``) so checkpoints rebuild it.
    """
    from foldcnn.models.base import ModelConfig
    from foldcnn.models.transform import fold_model

    shape = kwargs.pop(INPUT_SHAPE_KEY, None)
    if shape is not None:
        shape = parse_input_shape(shape, path)
    builder_kwargs = dict(kwargs)
    if shape is not None and _accepts(import_builder(path), INPUT_SHAPE_KEY):
        builder_kwargs[INPUT_SHAPE_KEY] = shape
    original = build_original(path, builder_kwargs)
    if shape is None:
        shape = getattr(original, "input_shape", None)
        if shape is None:
            raise UsageError(f"foldcnn needs one image's (C, H, W) for model {path!r}: give input_shape in "
                             "--model-kwargs (e.g. '{\"input_shape\": [3, 32, 32]}'), give --data, or set "
                             "an input_shape attribute on the model")
        shape = parse_input_shape(shape, path)
    model = fold_model(original, fold, shape, width_mult=width_mult, channel_multiple=channel_multiple)
    model.config = ModelConfig(path, model.fold, width_mult, channel_multiple,
                               {**kwargs, INPUT_SHAPE_KEY: tuple(shape)})
    return model

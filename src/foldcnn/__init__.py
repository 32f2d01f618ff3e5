"""foldcnn: fold f images into one input of a sqrt(f)-wider CNN (FoldedCNNs, ICML 2021).

``import foldcnn`` imports neither torch nor anything optional: the folding functions are plain
reshapes (torch tensors or numpy arrays), and the torch-based API (the model zoo, ``fold_model``)
is imported on first use of its name (PEP 562), so a torch-free install runs exported graphs
(see foldcnn.infer) and pays no torch import.
"""

from __future__ import annotations

import importlib

from foldcnn.fold import fold_images, pad_to_fold, padded_count, unfold_logits

__version__ = "0.2.0"

# name -> module that defines it; imported on first access (these need torch)
_LAZY = {
    "FoldedCNN": "foldcnn.models",
    "ModelConfig": "foldcnn.models",
    "count_params": "foldcnn.models",
    "create_model": "foldcnn.models",
    "list_models": "foldcnn.models",
    "model_from_config": "foldcnn.models",
    "fold_model": "foldcnn.models.transform",
    "FoldError": "foldcnn.models.transform",
}

__all__ = [
    "__version__", "fold_images", "unfold_logits", "pad_to_fold", "padded_count",
    "FoldedCNN", "ModelConfig", "count_params", "create_model", "list_models", "model_from_config",
    "fold_model", "FoldError",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'foldcnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

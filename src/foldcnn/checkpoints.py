"""Checkpoints: a directory with ``model.safetensors`` + ``config.json`` that rebuilds the model
with no other file. Nothing is unpickled; training-resume state lives in ``train_state.pt`` and is
loaded with ``weights_only=True`` (see foldcnn.train.resume).

A lower layer: models and safetensors only, so that inference, serving and export read
checkpoints without importing training. torch and the model zoo are imported by the functions
that build or save a model, not by this module: ``read_config`` and the file names serve the
torch-free inference path (foldcnn.backends.graphs)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from foldcnn.errors import FoldcnnError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from foldcnn.models import FoldedCNN

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# A few of the model's own training images (uint8, N x C x H x W) for int8 calibration.
CALIBRATION_FILE = "calibration.safetensors"
CALIBRATION_IMAGES = 256
FORMAT = "foldcnn-checkpoint"
# 1: zoo models only. 2: adds "model_source" ("zoo" or "import"); an imported model's "model"
# names its import path, builder keyword arguments and input_shape. Version 1 files load unchanged.
FORMAT_VERSION = 2

__all__ = [
    "CALIBRATION_FILE", "CALIBRATION_IMAGES", "CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE",
    "Checkpoint", "CheckpointError", "atomic_write", "load_calibration", "load_checkpoint", "load_state_into",
    "read_config", "read_state_dict", "save_checkpoint",
]


class CheckpointError(FoldcnnError, ValueError):
    """A checkpoint is missing, damaged, or does not fit the model asked for."""


@dataclass
class Checkpoint:
    model: FoldedCNN
    class_names: list[str]
    path: Path
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def fold(self) -> int:
        return self.model.fold


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it there: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _config_body(model, config, class_names, metrics, extra) -> dict:
    """config.json: everything that rebuilds the model and reads its outputs, nothing pickled."""
    from foldcnn.models.imported import import_root, is_import_path

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_source": "import" if ":" in config.name else "zoo",
        "model": config.to_dict(),
        # where the user's module was found: loading elsewhere (predict, serve, Ray workers) looks there too
        **({"import_root": import_root(config.name)} if is_import_path(config.name) else {}),
        "fold": model.fold,
        "num_classes": model.num_classes,
        "input_shape": list(model.input_shape),
        "class_names": list(class_names),
        "normalization": {"scale": 1 / 255, "range": [0.0, 1.0]},
        "metrics": metrics or {},
        "extra": extra or {},
    }


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: FoldedCNN,
    class_names: list[str],
    *,
    metrics: dict | None = None,
    extra: dict | None = None,
    calibration_images: torch.Tensor | None = None,
) -> Path:
    """Write ``model`` (built by create_model: a zoo name or an import path) to ``out_dir``; returns the path.

    A user's CNN is recorded by its import path and builder keyword arguments (never pickled):
    loading re-imports the builder and re-folds it.

    ``calibration_images`` (uint8 (N, C, H, W), a sample of the training images) are stored
    beside the weights for int8 calibration at inference time (see load_calibration).
    """
    import torch
    from safetensors.torch import save

    from foldcnn.models import ModelConfig

    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise CheckpointError(
            "only models built by foldcnn.create_model can be checkpointed (they carry the config "
            "that rebuilds them); for your own CNN use create_model('package.module:Name', fold, "
            "input_shape=(C, H, W), **builder_kwargs) instead of fold_model"
        )
    if len(class_names) != model.num_classes:
        raise CheckpointError(
            f"{len(class_names)} class names for a model with {model.num_classes} classes"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    body = _config_body(model, config, class_names, metrics, extra)
    # Weights first, config last: a config.json only exists next to complete weights.
    atomic_write(out / WEIGHTS_FILE, save(state, metadata={"format": FORMAT}))
    if calibration_images is not None:
        cal = torch.as_tensor(calibration_images)
        if cal.dtype != torch.uint8 or tuple(cal.shape[1:]) != tuple(model.input_shape):
            raise CheckpointError(
                f"calibration images must be uint8 (N, {', '.join(map(str, model.input_shape))}), "
                f"got {cal.dtype} {tuple(cal.shape)}"
            )
        atomic_write(out / CALIBRATION_FILE, save({"images": cal.contiguous()}, metadata={"format": FORMAT}))
    atomic_write(out / CONFIG_FILE, json.dumps(body, indent=2).encode())
    return out


def load_calibration(path: str | os.PathLike) -> torch.Tensor | None:
    """The uint8 calibration images (N, C, H, W) stored with a checkpoint, or None if it has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / CALIBRATION_FILE
    if not file.exists():
        return None
    try:
        return load_file(str(file))["images"]
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{file} is damaged ({e}); re-save the checkpoint") from None


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir() or not cfg_path.exists():
        raise CheckpointError(
            f"{path} is not a foldcnn checkpoint directory (expected {CONFIG_FILE} and {WEIGHTS_FILE} in it)"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is damaged (not valid JSON: {e})") from None
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} was not written by foldcnn (no 'format': '{FORMAT}')")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer foldcnn; upgrade foldcnn to read it")
    return cfg


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into ``model``, with a readable error when they do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append("shape mismatch " + "; ".join(wrong[:3]))
        raise CheckpointError(
            f"the weights in {where} do not fit this architecture ({'; '.join(parts)}). "
            "Was the checkpoint written for another model, fold or width?"
        )
    model.load_state_dict(state)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A user's trained weights: a ``.safetensors`` file, or a ``.pt``/``.pth`` state_dict read with
    ``torch.load(weights_only=True)`` (never unpickled otherwise). A pickled whole module is refused
    with a sentence saying how to save a state_dict; ``{"state_dict": {...}}`` wrappers are unwrapped."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from foldcnn.errors import MissingInputError

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise CheckpointError(f"weights file {path} must be .safetensors or a .pt/.pth state_dict")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        raise CheckpointError(
            f"{path} is not a plain state_dict (torch.load(weights_only=True) refused it: "
            f"{str(e).splitlines()[0][:120]}); a pickled whole model is never loaded: save its weights "
            "with torch.save(model.state_dict(), 'weights.pt')") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors; save the "
                              "weights with torch.save(model.state_dict(), 'weights.pt')")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model from ``config.json`` and load ``model.safetensors``.

    A model recorded by import path (format version 2) is re-imported and re-folded; a builder
    that no longer imports, or weights that no longer fit, raise a one-sentence CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from foldcnn.models import ModelConfig, model_from_config
    from foldcnn.models.imported import search_path

    path = Path(path)
    cfg = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"checkpoint {path} has no {WEIGHTS_FILE}")
    search_path(cfg.get("import_root"))
    try:
        model = model_from_config(ModelConfig.from_dict(cfg["model"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE} does not describe a model foldcnn can build: "
                              f"{str(e).rstrip('.')}") from None
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is damaged or truncated ({e}); re-save or re-train it") from None
    load_state_into(model, state, str(weights))
    model.eval()
    return Checkpoint(
        model=model,
        class_names=list(cfg.get("class_names") or [str(i) for i in range(model.num_classes)]),
        path=path,
        metrics=dict(cfg.get("metrics") or {}),
        extra=dict(cfg.get("extra") or {}),
    )

"""The ONNX graphs of a checkpoint, exported (fp32) and quantized (int8) once and cached.

Exporting costs about a second (torch.onnx imports onnx) and static int8 quantization about two
more, on every run of ``foldcnn predict`` otherwise. A graph is stored as
``<checkpoint>/onnx-cache/<key>.onnx``, the key a SHA-256 of what the graph depends on, read from
the checkpoint's files so that it is computed without torch (the torch-free path,
foldcnn.backends.graphs, finds the graph a torch run cached): the weights file
(``model.safetensors``), the model fields of ``config.json`` (model, fold, input shape, class
count), the precision, and for int8 the calibration images and quantization settings. Changing any
of them makes a new key, so a graph of other weights is never used. The torch and onnxruntime
versions that made a graph are not in the key (a graph is the same function of the same weights
whichever version wrote it); delete ``onnx-cache/`` to export again after an upgrade. Where the
checkpoint folder is read-only the graph goes to the user's cache folder
(``$XDG_CACHE_HOME/foldcnn/onnx``, else ``~/.cache/foldcnn/onnx``; ``FOLDCNN_CACHE_DIR`` overrides
it), and where that fails too it is rebuilt each run; the returned note says which.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from foldcnn.backends.graphs import GraphModel, checkpoint_calibration

__all__ = ["CACHE_FOLDER", "INT8_SETTINGS", "cached_checkpoint_graph", "cached_graph", "find_cached", "graph_key", "model_graph",
           "user_cache_dir"]

CACHE_FOLDER = "onnx-cache"
_FORMAT = 2  # bump when the export or quantization recipe (or the key) changes
INT8_SETTINGS = {"per_channel": True}  # how foldcnn.backends.onnx_export.quantize_int8 is called
_MODEL_FIELDS = ("model", "fold", "input_shape", "num_classes")  # the fields of config.json the graph depends on


def user_cache_dir() -> Path:
    """Where graphs of read-only checkpoints go."""
    if os.environ.get("FOLDCNN_CACHE_DIR"):
        return Path(os.environ["FOLDCNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foldcnn" / "onnx"


def graph_key(checkpoint_dir: str | os.PathLike, precision: str, calibration=None,
              settings: dict | None = None) -> str:
    """SHA-256 (hex) of everything the checkpoint's exported graph depends on (see the module
    docstring). ``calibration``: the uint8 images (N, C, H, W) int8 is calibrated on (numpy, or a
    torch tensor), None for fp32."""
    from foldcnn.checkpoints import WEIGHTS_FILE, read_config

    folder = Path(checkpoint_dir)
    cfg = read_config(folder)
    h = hashlib.sha256()
    head = {"precision": precision, "settings": settings or {}, "format": _FORMAT,
            **{k: cfg.get(k) for k in _MODEL_FIELDS}}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    with open(folder / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if calibration is not None:
        c = np.ascontiguousarray(calibration)
        h.update(f"calibration:{c.dtype}:{c.shape}".encode())
        h.update(c.tobytes())
    return h.hexdigest()


def _places(checkpoint_dir) -> list[Path]:
    places = [Path(checkpoint_dir) / CACHE_FOLDER] if checkpoint_dir is not None else []
    places.append(user_cache_dir())
    return places


def _name(key: str) -> str:
    return f"{key[:32]}.onnx"


def find_cached(key: str, checkpoint_dir: str | os.PathLike | None) -> tuple[bytes, dict] | None:
    """``(graph bytes, info)`` of the cached graph for ``key`` (beside the checkpoint, then in the
    user cache folder), or None."""
    for folder in _places(checkpoint_dir):
        path = folder / _name(key)
        if path.is_file():
            try:
                return path.read_bytes(), {"hit": True, "path": str(path), "note": f"cached graph {path}"}
            except OSError:
                continue
    return None


def model_graph(model, precision: str, calibration) -> tuple[bytes, dict | None]:
    """The (int8-quantized) ONNX graph of a torch model; cached beside its checkpoint when it came
    from one (``model.checkpoint_dir``, set by Predictor.from_checkpoint). ``calibration``: uint8
    images (N, C, H, W) for int8."""
    from foldcnn.backends import onnx_export

    def build() -> bytes:
        data = onnx_export.onnx_bytes(model)
        if precision != "int8":
            return data
        folded = onnx_export.fold_calibration(calibration, model.fold, model.input_shape)
        return onnx_export.quantize_int8(data, folded, **INT8_SETTINGS)

    checkpoint_dir = getattr(model, "checkpoint_dir", None)
    if checkpoint_dir is None:
        return build(), None
    key = graph_key(checkpoint_dir, precision, calibration if precision == "int8" else None,
                    INT8_SETTINGS if precision == "int8" else None)
    return cached_graph(key, build, checkpoint_dir)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # a reader never sees half a file
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cached_graph(key: str, build: Callable[[], bytes], checkpoint_dir: str | os.PathLike | None) -> tuple[bytes, dict]:
    """``(graph bytes, info)``: the cached graph for ``key``, or ``build()`` stored for next time.

    Looks beside the checkpoint, then in the user cache folder; stores beside the checkpoint,
    else in the user cache folder, else nowhere. ``info``: ``{"hit": bool, "path": str | None,
    "note": str}`` (the note says where, or why nothing was cached).
    """
    found = find_cached(key, checkpoint_dir)
    if found is not None:
        return found
    places = _places(checkpoint_dir)
    name = _name(key)
    data = build()
    errors = []
    for folder in places:
        path = folder / name
        try:
            _write(path, data)
        except OSError as e:
            errors.append(f"{folder}: {e.strerror or e}")
            continue
        note = f"graph built and cached in {path}"
        if errors:
            note += f" (not beside the checkpoint: {errors[0]})"
        return data, {"hit": False, "path": str(path), "note": note}
    return data, {"hit": False, "path": None,
                  "note": "graph built but not cached (" + "; ".join(errors) + "); it is rebuilt on every run"}


def cached_checkpoint_graph(checkpoint_dir: str | os.PathLike, precision: str,
                            calibration: np.ndarray | None = None) -> GraphModel | None:
    """The checkpoint's graph at ``precision`` from its cache (``onnx-cache/`` beside it, or the user
    cache), or None when it is not cached. int8 uses the stored calibration images unless given."""
    from foldcnn.checkpoints import read_config

    cfg = read_config(checkpoint_dir)
    if precision == "int8" and calibration is None:
        calibration = checkpoint_calibration(checkpoint_dir)
        if calibration is None:
            return None
    if precision not in ("fp32", "int8"):
        return None
    key = graph_key(checkpoint_dir, precision, calibration if precision == "int8" else None,
                    INT8_SETTINGS if precision == "int8" else None)
    found = find_cached(key, checkpoint_dir)
    if found is None:
        return None
    data, info = found
    shape = tuple(int(v) for v in cfg["input_shape"])
    k = int(cfg["num_classes"])
    names = [str(c) for c in cfg.get("class_names") or range(k)]
    return GraphModel(data, int(cfg["fold"]), k, shape, precision, names, info["path"], info)

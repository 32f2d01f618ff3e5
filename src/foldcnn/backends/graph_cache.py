"""The ONNX graphs of a checkpoint, exported (fp32) and quantized (int8) once and cached.

Exporting costs about a second (torch.onnx imports onnx) and static int8 quantization about two
more, on every run of ``foldcnn predict`` otherwise. A graph is stored as
``<checkpoint>/onnx-cache/<key>.onnx``, the key a SHA-256 of what the graph depends on: the
weights and model config, the fold and input shape, the precision, the calibration images and
quantization settings (int8), and the torch and onnxruntime versions. Changing any of them makes
a new key, so a stale graph is never used. Where the checkpoint folder is read-only the graph
goes to the user's cache folder (``$XDG_CACHE_HOME/foldcnn/onnx``, else ``~/.cache/foldcnn/onnx``;
``FOLDCNN_CACHE_DIR`` overrides it), and where that fails too it is rebuilt each run; the
returned note says which.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["CACHE_FOLDER", "cached_graph", "graph_key", "user_cache_dir"]

CACHE_FOLDER = "onnx-cache"
_FORMAT = 1  # bump when the export or quantization recipe changes


def user_cache_dir() -> Path:
    """Where graphs of read-only checkpoints go."""
    if os.environ.get("FOLDCNN_CACHE_DIR"):
        return Path(os.environ["FOLDCNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foldcnn" / "onnx"


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "format": str(_FORMAT)}


def graph_key(model: torch.nn.Module, precision: str, calibration: np.ndarray | None = None,
              settings: dict | None = None) -> str:
    """SHA-256 (hex) of everything the exported graph depends on (see the module docstring)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    head = {"precision": precision, "fold": int(model.fold), "input_shape": list(model.input_shape),
            "num_classes": int(model.num_classes), "class": type(model).__name__,
            "config": config.to_dict() if hasattr(config, "to_dict") else repr(config),
            "settings": settings or {}, **_versions()}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if calibration is not None:
        c = np.ascontiguousarray(calibration)
        h.update(f"calibration:{c.dtype}:{c.shape}".encode())
        h.update(c.tobytes())
    return h.hexdigest()


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
    places = [Path(checkpoint_dir) / CACHE_FOLDER] if checkpoint_dir is not None else []
    places.append(user_cache_dir())
    name = f"{key[:32]}.onnx"
    for folder in places:
        path = folder / name
        if path.is_file():
            try:
                return path.read_bytes(), {"hit": True, "path": str(path), "note": f"cached graph {path}"}
            except OSError:
                continue
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

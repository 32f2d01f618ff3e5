"""Exported graphs run without torch: an ``.onnx`` file with its sidecar, or a checkpoint's cached graph.

A :class:`GraphModel` holds the graph's bytes and what folding needs (fold, input shape, class
count and names, precision); the ort and openvino backends run it with numpy alone, and the
Predictor takes one wherever it takes a model. Nothing here imports torch:

    g = load_onnx("model.onnx")                       # reads model.onnx.json beside it
    g = cached_checkpoint_graph("runs/x/checkpoint", "int8")   # foldcnn.backends.graph_cache; None: not cached

A checkpoint's graph is cached by the first run with torch (``Predictor.from_checkpoint(...,
backend="ort")``, ``foldcnn predict CKPT --backend ort``) or exported with ``foldcnn export``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foldcnn.errors import FoldcnnError, MissingExtraError, UsageError

__all__ = ["GRAPH_BACKENDS", "INPUT_NAME", "OUTPUT_NAME", "GraphError", "GraphModel", "NeedsTorchError",
           "checkpoint_calibration", "check_graph_shapes", "fold_calibration", "is_onnx_path", "load_onnx",
           "torch_available"]

GRAPH_BACKENDS = ("ort", "openvino")  # the engines that run a graph without torch
SIDECAR_FORMAT = "foldcnn-onnx"
INPUT_NAME = "images"  # the exported graph's input: folded images (B, f*C, H, W) float32 in [0, 1]
OUTPUT_NAME = "logits"  # its output: folded logits (B, f*K)
SIDECAR_SUFFIX = ".json"


class GraphError(UsageError):
    """An exported graph that cannot be used: no sidecar, a sidecar of another graph, ..."""


class NeedsTorchError(MissingExtraError):
    """The request needs torch (a checkpoint whose graph is not cached, an eager engine) and torch is absent."""


def torch_available() -> bool:
    """Whether torch can be imported here (without importing it)."""
    import importlib.util
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"] is not None  # None: blocked (as tests do to stand for a slim install)
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def is_onnx_path(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".onnx")


@dataclass
class GraphModel:
    """An exported folded graph: ``images`` (B, f*C, H, W) float32 in [0, 1] -> ``logits`` (B, f*K)."""

    data: bytes
    fold: int
    num_classes: int
    input_shape: tuple[int, int, int]
    precision: str
    class_names: list[str]
    source: str  # the .onnx file, or the cached graph's path
    graph_cache: dict | None = None  # for a checkpoint's cached graph: {"hit", "path", "note"}
    sidecar: dict = field(default_factory=dict)

    @property
    def folded_input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.input_shape
        return (self.fold * c, h, w)


def graph_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fold_calibration(images, fold: int, input_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images (N, C, H, W) (numpy or torch) -> folded float32 inputs (ceil(N/f), f*C, H, W) in [0, 1].

    A last partial fold is filled with the first images again (not zeros, which would shift the
    activation ranges), so every calibration image is used.
    """
    from foldcnn.backends.base import BackendError
    from foldcnn.fold import fold_images
    from foldcnn.tensors import is_tensor, tensor_to_numpy

    a = tensor_to_numpy(images) if is_tensor(images) else np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4 or tuple(a.shape[1:]) != tuple(input_shape):
        raise BackendError(
            f"calibration images must be uint8 (N, {', '.join(map(str, input_shape))}) like the training "
            f"images, got {a.dtype} {tuple(a.shape)}; convert floats in [0, 1] with "
            "(x * 255).round().astype(np.uint8)")
    n = a.shape[0]
    if n == 0:
        raise BackendError("calibration needs at least one image; pass a few hundred training images")
    short = -n % fold
    if short:
        a = np.concatenate([a, a[np.arange(short) % n]])
    x = a.astype(np.float32)
    np.divide(x, np.float32(255), out=x)  # IEEE division: bit-identical to torch's x.float() / 255
    return np.ascontiguousarray(fold_images(x, fold))


def load_onnx(path: str | os.PathLike) -> GraphModel:
    """An ``.onnx`` written by ``foldcnn export`` and its sidecar ``<path>.json``."""
    path = Path(path)
    side = path.with_name(path.name + SIDECAR_SUFFIX)
    if not path.is_file():
        raise GraphError(f"no such ONNX file: {path}")
    if not side.is_file():
        raise GraphError(f"{path} has no sidecar {side.name} beside it (foldcnn export writes both); it tells how "
                         "to fold the inputs and name the classes: export the checkpoint again with foldcnn export")
    try:
        body = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GraphError(f"{side} is not valid JSON ({e}); export the checkpoint again with foldcnn export") from None
    if not isinstance(body, dict) or body.get("format") != SIDECAR_FORMAT:
        raise GraphError(f"{side} is not a foldcnn sidecar (no 'format': '{SIDECAR_FORMAT}')")
    data = path.read_bytes()
    want = body.get("graph_sha256")
    if want is not None and want != graph_sha256(data):
        raise GraphError(f"{side} describes another graph than {path.name} (its graph_sha256 differs); "
                         "export again with foldcnn export so that both come from one run")
    try:
        fold, k = int(body["fold"]), int(body["num_classes"])
        shape = tuple(int(v) for v in body["input_shape"])
        names = [str(c) for c in body.get("class_names") or range(k)]
        precision = str(body.get("precision", "fp32"))
    except (KeyError, TypeError, ValueError) as e:
        raise GraphError(f"{side} lacks or garbles a field ({e}); export again with foldcnn export") from None
    if len(shape) != 3 or fold < 1 or k < 1 or len(names) != k:
        raise GraphError(f"{side} is inconsistent (fold {fold}, {k} classes, {len(names)} class names, input shape "
                         f"{list(shape)}); export again with foldcnn export")
    return GraphModel(data, fold, k, shape, precision, names, str(path), None, body)


def check_graph_shapes(graph: GraphModel, input_dims, output_dims) -> None:
    """Compare a loaded graph's input / output dims (ints, or names / -1 / None for the dynamic batch)
    with what its sidecar says; a GraphError naming both when they differ (a sidecar of another graph)."""
    def fixed(dims):
        return [int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else None for d in dims][1:]

    want_in, want_out = list(graph.folded_input_shape), [graph.fold * graph.num_classes]
    got_in, got_out = fixed(input_dims), fixed(output_dims)
    ok = len(got_in) == 3 and len(got_out) == 1 and all(g in (None, w) for g, w in zip(got_in + got_out,
                                                                                       want_in + want_out))
    if not ok:
        raise GraphError(f"the sidecar of {graph.source} describes another graph: it says (B, "
                         f"{', '.join(map(str, want_in))}) -> (B, {want_out[0]}) but the graph takes "
                         f"{list(input_dims)} -> {list(output_dims)}; export again with foldcnn export")


def _read_safetensors_array(path: Path, name: str) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))[name]
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise FoldcnnError(f"{path} is damaged ({e}); re-save the checkpoint") from None


def checkpoint_calibration(checkpoint_dir: str | os.PathLike) -> np.ndarray | None:
    """The checkpoint's stored uint8 calibration images (N, C, H, W) as numpy, or None."""
    from foldcnn.checkpoints import CALIBRATION_FILE

    file = Path(checkpoint_dir) / CALIBRATION_FILE
    return _read_safetensors_array(file, "images") if file.exists() else None

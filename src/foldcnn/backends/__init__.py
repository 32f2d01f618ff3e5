"""Inference backends for folded models: one interface over torch eager, torch.compile,
ONNX Runtime (fp32/int8), OpenVINO (CPU: fp32/bf16/int8) and CUDA graphs.

    b = create_backend(model, "ort", precision="int8", calibration=images_uint8)
    logits = b.run(folded)   # (B, f*C, H, W) float32 in [0, 1] -> (B, f*K) float32 numpy

onnxruntime, onnx, openvino and nncf are imported only when a backend or export uses them; torch
only by the names that need it (export, select_backend, the torch engines), on first use: the ort
and openvino backends run an exported graph (foldcnn.backends.graphs) without it.
"""

import importlib

from foldcnn.backends.base import DEVICES, PRECISIONS, Backend, BackendError, BackendSpec, prediction_agreement
from foldcnn.backends.graphs import GraphModel, load_onnx
from foldcnn.backends.registry import available_backends, create_backend, list_backends, register_backend

_LAZY = {"check_onnx_parity": "foldcnn.backends.onnx_export", "export_onnx": "foldcnn.backends.onnx_export",
         "select_backend": "foldcnn.backends.select"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'foldcnn.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Backend",
    "BackendError",
    "BackendSpec",
    "GraphModel",
    "available_backends",
    "check_onnx_parity",
    "create_backend",
    "export_onnx",
    "list_backends",
    "load_onnx",
    "prediction_agreement",
    "register_backend",
    "select_backend",
]

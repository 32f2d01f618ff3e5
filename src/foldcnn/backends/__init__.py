"""Inference backends for folded models: one interface over torch eager, torch.compile,
ONNX Runtime (fp32/int8), OpenVINO (CPU: fp32/bf16/int8) and CUDA graphs.

    b = create_backend(model, "ort", precision="int8", calibration=images_uint8)
    logits = b.run(folded)   # (B, f*C, H, W) float32 in [0, 1] -> (B, f*K) float32 numpy

onnxruntime, onnx, openvino and nncf are imported only when a backend or export uses them.
"""

from foldcnn.backends.base import DEVICES, PRECISIONS, Backend, BackendError, BackendSpec, prediction_agreement
from foldcnn.backends.onnx_export import check_onnx_parity, export_onnx
from foldcnn.backends.registry import available_backends, create_backend, list_backends, register_backend
from foldcnn.backends.select import select_backend

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Backend",
    "BackendError",
    "BackendSpec",
    "available_backends",
    "check_onnx_parity",
    "create_backend",
    "export_onnx",
    "list_backends",
    "prediction_agreement",
    "register_backend",
    "select_backend",
]

"""ONNX Runtime backend: fp32 (CPU, or CUDA provider when present) and int8 static QDQ (CPU).

It runs a torch FoldedCNN (exported, and cached for a checkpoint's model, by
foldcnn.backends.graph_cache) or an exported graph (foldcnn.backends.graphs.GraphModel); the
latter with numpy alone: this module does not import torch.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from foldcnn.backends.base import (
    Backend,
    BackendError,
    BackendSpec,
    default_threads,
    shares_cores,
)
from foldcnn.backends.graphs import INPUT_NAME, OUTPUT_NAME, GraphModel, check_graph_shapes
from foldcnn.tensors import is_tensor

if TYPE_CHECKING:
    import torch

    from foldcnn.models import FoldedCNN

_NO_BF16 = ("ONNX Runtime's CPU provider has no bf16 convolution kernels (the session rejects the graph); "
            "bf16 is available on the eager, compile and openvino backends")
_NO_FP16 = "fp16 runs on the eager, compile and cuda-graphs backends with device='cuda'"


def ort_support(device: str) -> dict[str, str | None]:
    """{precision: None if usable, else why not} for the ort backend on ``device``."""
    if importlib.util.find_spec("onnxruntime") is None:
        missing = "onnxruntime is not installed; pip install 'foldcnn[export]'"
        return {p: missing for p in ("fp32", "int8", "bf16", "fp16")}
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            none = "this onnxruntime has no CUDAExecutionProvider; pip install onnxruntime-gpu"
            return {"fp32": none, "int8": none, "bf16": _NO_BF16, "fp16": _NO_FP16}
        return {"fp32": None, "bf16": _NO_BF16, "fp16": _NO_FP16,
                "int8": "ONNX Runtime's CUDA provider runs QDQ int8 graphs in float; use int8 with device='cpu'"}
    return {"fp32": None, "int8": None, "bf16": _NO_BF16, "fp16": _NO_FP16}


NO_CALIBRATION = (
    "int8 needs calibration images: pass calibration= a few hundred uint8 training images (N, C, H, W); "
    "checkpoints written by 'foldcnn train' carry 256 of them, read with "
    "foldcnn.checkpoints.load_calibration(checkpoint_dir)"
)


class OrtBackend(Backend):
    """An onnxruntime InferenceSession over the exported folded graph (dynamic batch axis)."""

    def __init__(self, model: FoldedCNN | GraphModel, *, precision: str, threads: int | None, device: str,
                 max_batch: int, calibration: torch.Tensor | None = None) -> None:
        super().__init__(model, "ort", precision, device, max_batch)
        import onnxruntime as ort

        if isinstance(model, GraphModel):
            data, self.graph_cache = model.data, model.graph_cache
        else:
            if precision == "int8" and calibration is None:
                raise BackendError(NO_CALIBRATION)
            from foldcnn.backends.graph_cache import model_graph

            data, self.graph_cache = model_graph(model, precision, calibration)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = default_threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle threads spin by default; beside decoding processes that burns the cores the
        # decoders need (they burned about as much CPU as they waited), so they sleep instead.
        self.spinning = not shares_cores()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as e:
            raise BackendError(f"onnxruntime could not load the exported model ({e}); "
                               "try another backend (eager) or another onnxruntime version") from e
        self.threads = opts.intra_op_num_threads
        self.providers = self.session.get_providers()
        if isinstance(model, GraphModel):
            check_graph_shapes(model, self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape)

    def _run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if is_tensor(x):
            x = x.detach().to("cpu").contiguous().numpy()
        # A fresh output per call: it is B x f*K floats, tiny beside the input, and a caller may
        # keep it; a reused buffer would be overwritten by the next call.
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def close(self) -> None:
        self.session = None
        super().close()


def _build_ort(model, *, precision, threads, device, max_batch, calibration=None) -> Backend:
    return OrtBackend(model, precision=precision, threads=threads, device=device, max_batch=max_batch,
                      calibration=calibration)


BACKENDS = (
    BackendSpec("ort", _build_ort, ort_support, "ONNX Runtime (fp32; int8 static QDQ on CPU)"),
)

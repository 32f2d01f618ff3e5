"""TensorRT through torch-tensorrt (GPU only, used when ``torch_tensorrt`` is importable).

The backends package has no TensorRT engine, so the benchmark compiles one here; it follows
the backend interface (``run(x) -> numpy logits``, ``close()``) and is never used for serving.
"""

from __future__ import annotations

import numpy as np
import torch

from foldcnn.errors import MissingExtraError, UsageError
from foldcnn.models import FoldedCNN
from foldcnn.precision import torch_dtype

__all__ = ["TensorRTRunner"]

_PRECISIONS = ("fp32", "fp16")


class TensorRTRunner:
    """A folded model compiled by torch-tensorrt for inputs (1..max_batch, f*C, H, W) on CUDA."""

    def __init__(self, model: FoldedCNN, *, precision: str = "fp16", max_batch: int = 1024) -> None:
        try:
            import torch_tensorrt
        except ImportError:
            raise MissingExtraError("the tensorrt backend needs torch-tensorrt: pip install torch-tensorrt") from None
        if precision not in _PRECISIONS:
            raise UsageError(f"the tensorrt benchmark runs fp32 or fp16, got {precision!r}")
        if not torch.cuda.is_available():
            raise UsageError("skipped: no CUDA device")
        self.name, self.precision, self.fold = "tensorrt", precision, model.fold
        self.num_classes, self.input_shape = model.num_classes, tuple(model.input_shape)
        dtype = torch_dtype(precision)
        module = model.eval().to("cuda", dtype)
        shape = tuple(model.folded_input_shape)
        spec = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(max_batch, *shape),
                                    max_shape=(max_batch, *shape), dtype=dtype)
        self._dtype = dtype
        self._engine = torch_tensorrt.compile(module, inputs=[spec], enabled_precisions={dtype})

    def run(self, x) -> np.ndarray:
        """Folded logits (B, f*K) float32 numpy for folded inputs (B, f*C, H, W)."""
        t = torch.as_tensor(x).to("cuda", self._dtype, non_blocking=True)
        with torch.inference_mode():
            return self._engine(t).float().cpu().numpy()

    def close(self) -> None:
        self._engine = None

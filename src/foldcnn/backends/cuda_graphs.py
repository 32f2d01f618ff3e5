"""CUDA graphs backend (GPU only): one captured graph per static batch bucket.

Buckets are the powers of two up to ``max_batch`` (plus ``max_batch`` itself). A call of B folded
inputs runs in the smallest bucket >= B: the inputs are copied into the bucket's static buffer,
the graph is replayed and the first B rows of its output are returned; the rows past B hold stale
inputs whose outputs are discarded (rows of a batch are independent in eval mode). Calls larger
than ``max_batch`` run in chunks of ``max_batch``.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from foldcnn.backends.base import Backend, BackendSpec
from foldcnn.backends.torch_backends import prepare_module, torch_support
from foldcnn.errors import UsageError
from foldcnn.models import FoldedCNN
from foldcnn.precision import cast_dtype

WARMUP_RUNS = 3  # on a side stream before capture, as torch's CUDA graph notes ask


def batch_buckets(max_batch: int) -> list[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: [1, 2, 4, ..., max_batch]."""
    if max_batch < 1:
        raise UsageError(f"max_batch must be >= 1, got {max_batch}")
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


def bucket_for(batch: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``batch`` rows (``batch`` <= buckets[-1])."""
    for b in buckets:
        if b >= batch:
            return b
    raise UsageError(f"a batch of {batch} is larger than the largest bucket {buckets[-1]}; split it first")


def cuda_graph_support(device: str) -> dict[str, str | None]:
    if device != "cuda":
        gpu = "cuda-graphs needs device='cuda' (a CUDA GPU)"
        return {p: gpu for p in ("fp32", "bf16", "fp16", "int8")}
    return torch_support("cuda")


class CudaGraphBackend(Backend):
    """Static-shape CUDA graphs of the eager module, one per batch bucket, sharing one memory pool."""

    def __init__(self, model: FoldedCNN, *, precision: str, max_batch: int) -> None:
        super().__init__(model, "cuda-graphs", precision, "cuda", max_batch)
        self.module = prepare_module(model, "cuda")
        self.buckets = batch_buckets(self.max_batch)
        self._dtype = cast_dtype(precision)
        self._lock = threading.Lock()  # static buffers: one replay at a time
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        # Largest first, so the pool is sized by the biggest graph and the others fit in it.
        for b in reversed(self.buckets):
            self._graphs[b] = self._capture(b)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dtype is None:
            return self.module(x)
        # No autocast weight cache: cached casts would live outside the graph's lifetime.
        with torch.autocast("cuda", dtype=self._dtype, cache_enabled=False):
            return self.module(x)

    def _capture(self, batch: int):
        static_in = torch.zeros(batch, *self.folded_input_shape, device="cuda").contiguous(
            memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            static_out = self._forward(static_in)
        torch.cuda.synchronize()
        return graph, static_in, static_out

    def _run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        parts = []
        with self._lock, torch.inference_mode():
            for start in range(0, t.shape[0], self.max_batch):
                chunk = t[start:start + self.max_batch]
                n = chunk.shape[0]
                graph, static_in, static_out = self._graphs[bucket_for(n, self.buckets)]
                static_in[:n].copy_(chunk, non_blocking=False)
                graph.replay()
                # .cpu() waits for the replay and copies out before the next replay reuses the pool.
                parts.append(static_out[:n].float().cpu().numpy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        self._graphs.clear()
        self.module = None
        super().close()


def _build_cuda_graphs(model, *, precision, threads, device, max_batch, calibration=None) -> Backend:
    return CudaGraphBackend(model, precision=precision, max_batch=max_batch)


BACKENDS = (
    BackendSpec("cuda-graphs", _build_cuda_graphs, cuda_graph_support, "CUDA graphs per batch bucket (GPU)"),
)

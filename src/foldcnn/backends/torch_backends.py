"""PyTorch backends: eager (channels_last, inference_mode, autocast) and torch.compile."""

from __future__ import annotations

import contextlib
import copy
import os

import numpy as np
import torch

from foldcnn.backends.base import Backend, BackendError, BackendSpec
from foldcnn.memory import keep_freed_memory
from foldcnn.models import FoldedCNN
from foldcnn.precision import cast_dtype

# On the CPU a call runs in chunks whose largest activation stays below this many MiB. glibc maps
# every block above 32 MiB afresh and faults its pages in on each call, in worker threads even
# with foldcnn.memory's setting; below it, the blocks are reused (docs/notebook/2026-11-21-cpu-memory.md).
CPU_CHUNK_ENV = "FOLDCNN_CPU_CHUNK_MIB"
DEFAULT_CPU_CHUNK_MIB = 24.0


def cpu_chunk_mib() -> float:
    """The chunk size in MiB: ``FOLDCNN_CPU_CHUNK_MIB`` when set, else 24; 0 or less = no chunks."""
    text = os.environ.get(CPU_CHUNK_ENV, "").strip()
    try:
        return float(text) if text else DEFAULT_CPU_CHUNK_MIB
    except ValueError:
        raise BackendError(f"{CPU_CHUNK_ENV} must be a number of MiB (0 turns chunking off), got {text!r}") from None


def cpu_chunk(model: FoldedCNN, precision: str) -> int | None:
    """Folded inputs per CPU call so that no layer's input or output passes ``cpu_chunk_mib()``
    (None: chunking off)."""
    mib = cpu_chunk_mib()
    if mib <= 0:
        return None
    from foldcnn.analysis import analyze

    element = (cast_dtype(precision) or torch.float32).itemsize
    report = analyze(model, batch_size=model.fold, bytes_per_element=element)
    largest = max((max(layer.input_elements, layer.output_elements) for layer in report.layers), default=0)
    return max(1, int(mib * 2**20 // max(1, largest * element)))


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX); elsewhere autocast
    bf16 still runs but emulated, slower than fp32, so it is not offered."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe that fails means "no"
            pass
    return False


def cuda_ready() -> bool:
    return torch.cuda.is_available()


def torch_support(device: str) -> dict[str, str | None]:
    """{precision: None if usable, else why not} for the torch backends on ``device``."""
    int8 = "int8 runs on the ort and openvino backends (static quantization); use name='ort' or 'openvino'"
    if device == "cuda":
        if not cuda_ready():
            gone = "no CUDA GPU is visible to torch here"
            return {"fp32": gone, "bf16": gone, "fp16": gone, "int8": int8}
        bf16 = None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
        return {"fp32": None, "bf16": bf16, "fp16": None, "int8": int8}
    bf16 = None if cpu_has_bf16() else "this CPU has no native bf16 (AVX512-BF16/AMX); use fp32"
    return {"fp32": None, "bf16": bf16, "fp16": "fp16 runs on CUDA only; on CPU use bf16 or fp32", "int8": int8}


def prepare_module(model: FoldedCNN, device: str) -> torch.nn.Module:
    """A private eval-mode copy of ``model`` on ``device`` in channels_last (the caller's model is
    left as it was)."""
    module = copy.deepcopy(model).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(device=device, memory_format=torch.channels_last)


class EagerBackend(Backend):
    """torch eager: channels_last, inference_mode, bf16/fp16 via autocast; on the CPU, calls run in
    chunks of ``self.chunk`` folded inputs (``cpu_chunk``)."""

    def __init__(self, model: FoldedCNN, *, name: str = "eager", precision: str, threads: int | None,
                 device: str, max_batch: int) -> None:
        super().__init__(model, name, precision, device, max_batch)
        if device == "cpu":
            keep_freed_memory()  # large activations reuse their pages instead of faulting them in per call
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-module thread count
        self.threads = torch.get_num_threads()
        self.module = prepare_module(model, device)
        self._dtype = cast_dtype(precision)
        self.chunk = cpu_chunk(model, precision) if device == "cpu" else None  # folded inputs per call

    def _autocast(self):
        if self._dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self._dtype)

    def _to_input(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last)

    def _forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.module(t)

    def _run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.chunk is None or x.shape[0] <= self.chunk:
            return self._run_chunk(x)
        return np.concatenate([self._run_chunk(x[i:i + self.chunk]) for i in range(0, x.shape[0], self.chunk)])

    def _run_chunk(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            y = self._forward(self._to_input(x))
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.module = None
        super().close()


RECOMPILE_LIMIT = 1024


def _raise_recompile_limit() -> None:
    """Every model of one class shares its ``forward`` code object, and dynamo compiles it again
    for each new module and batch size; past its default limit of 8 it silently runs eager
    instead, which made a sweep's later compile rows eager numbers. Raise it once."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name in torch >= 2.7, and before
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
            break
    if hasattr(dynamo_config, "accumulated_recompile_limit"):
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                        4 * RECOMPILE_LIMIT)


class CompiledBackend(EagerBackend):
    """torch.compile of the eager module (dynamic=False), compiled and warmed up at max_batch in
    the constructor so that a missing compiler fails here, not in the middle of a job (on the CPU
    that compiles the chunk size and max_batch's remainder). Other batch sizes compile once each
    on first use.

    bf16/fp16 cast the weights and inputs once instead of autocasting every call: the same
    arithmetic, and inductor then sees one dtype (faster: docs/notebook/2026-11-21-cpu-bf16.md)."""

    def __init__(self, model: FoldedCNN, **kw) -> None:
        super().__init__(model, name="compile", **kw)
        _raise_recompile_limit()
        if self._dtype is not None:
            self.module.to(self._dtype)
        self._compiled = torch.compile(self.module, dynamic=False)
        warm = torch.rand(self.max_batch, *self.folded_input_shape)
        try:
            self._run(warm.numpy())
        except Exception as e:
            raise BackendError(
                f"torch.compile failed for this model ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "CPU compilation needs a working C++ compiler (g++/clang) on PATH. Use the eager or ort "
                "backend instead"
            ) from e

    def _autocast(self):
        return contextlib.nullcontext()  # weights are already in the low precision

    def _to_input(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = super()._to_input(x)
        return t if self._dtype is None else t.to(self._dtype)

    def _forward(self, t: torch.Tensor) -> torch.Tensor:
        return self._compiled(t)

    def close(self) -> None:
        self._compiled = None
        super().close()


def _build_eager(model, *, precision, threads, device, max_batch, calibration=None) -> Backend:
    return EagerBackend(model, precision=precision, threads=threads, device=device, max_batch=max_batch)


def _build_compile(model, *, precision, threads, device, max_batch, calibration=None) -> Backend:
    return CompiledBackend(model, precision=precision, threads=threads, device=device, max_batch=max_batch)


BACKENDS = (
    BackendSpec("eager", _build_eager, torch_support, "torch eager, channels_last, inference_mode"),
    BackendSpec("compile", _build_compile, torch_support, "torch.compile (inductor), static shapes"),
)

"""The backend interface: one object that runs folded inputs and returns folded logits.

A backend wraps one FoldedCNN for one engine (torch eager, torch.compile, ONNX Runtime, CUDA
graphs) at one precision. ``run`` takes folded inputs (B, f*C, H, W) float32 in [0, 1] and returns
folded logits (B, f*K) as float32 numpy; unfolding, padding and order are the caller's business
(the Predictor). Builders are found by name in a registry; a duplicate name is an error.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from foldcnn.errors import FoldcnnError, UsageError, UsageTypeError
from foldcnn.fold import unfold_logits
from foldcnn.tensors import is_tensor, tensor_to_numpy

if TYPE_CHECKING:  # torch is not imported here: the ort and openvino backends run exported graphs without it
    import torch

    from foldcnn.models import FoldedCNN

__all__ = ["DEVICES", "PRECISIONS", "Backend", "BackendError", "BackendSpec", "cores_shared", "default_threads",
           "prediction_agreement", "shares_cores"]

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEVICES = ("cpu", "cuda")


class BackendError(FoldcnnError, ValueError):
    """A backend that cannot be built or run here (unknown name, unsupported precision, ...)."""


# ----------------------------------------------------------------------------- the interface
class Backend:
    """Runs folded inputs (B, f*C, H, W) and returns folded logits (B, f*K), float32 numpy.

    Subclasses implement ``_run(x)`` for a validated C-contiguous float32 numpy array or a
    float32 torch tensor (whichever the caller passed) and may override ``close``.
    """

    def __init__(self, model: FoldedCNN, name: str, precision: str, device: str, max_batch: int) -> None:
        self.name = name
        self.precision = precision
        self.device = device
        self.max_batch = int(max_batch)
        self.fold = int(model.fold)
        self.num_classes = int(model.num_classes)
        self.input_shape = tuple(int(s) for s in model.input_shape)
        self.folded_input_shape = (self.fold * self.input_shape[0], *self.input_shape[1:])
        self.closed = False

    def run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Folded logits (B, f*K) float32 numpy for folded inputs ``x`` (B, f*C, H, W), B >= 1."""
        if self.closed:
            raise BackendError(f"the {self.name} backend was closed; create a new one with create_backend")
        return self._run(self._check(x))

    def _check(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if not (isinstance(x, np.ndarray) or is_tensor(x)):
            raise UsageTypeError(f"run() takes a numpy array or a torch tensor, got {type(x).__name__}")
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1:] != self.folded_input_shape or shape[0] < 1:
            f, (c, h, w) = self.fold, self.input_shape
            raise UsageError(
                f"the {self.name} backend expects folded inputs (B, {f * c}, {h}, {w}) with B >= 1 "
                f"(fold={f} images of ({c}, {h}, {w}) each); got {shape}. Fold images with "
                f"foldcnn.fold_images(images, {f})"
            )
        if is_tensor(x):
            return x.float()  # no copy when it is float32 already
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Free the engine's resources; ``run`` raises afterwards."""
        self.closed = True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, precision={self.precision!r}, device={self.device!r}, "
                f"fold={self.fold}, num_classes={self.num_classes}, input_shape={self.input_shape})")


# ------------------------------------------------------------------------------ a registration
@dataclass(frozen=True)
class BackendSpec:
    """A backend builder and what it supports. ``supports(device)`` returns ``{precision: reason
    or None}``: None means usable here, a string says why not (shown in errors).
    ``build(model, *, precision, threads, device, max_batch, calibration)`` returns a Backend.
    Backend modules list theirs in ``BACKENDS``; foldcnn.backends.registry collects them."""

    name: str
    build: Callable[..., Backend]
    supports: Callable[[str], dict[str, str | None]]
    description: str = ""


_SHARED_CORES: contextvars.ContextVar[bool] = contextvars.ContextVar("foldcnn_shared_cores", default=False)


@contextlib.contextmanager
def cores_shared(shared: bool = True) -> Iterator[None]:
    """Backends built inside this block run beside other CPU work (decoding processes): their
    idle threads should sleep rather than spin, so the decoders get the cores."""
    token = _SHARED_CORES.set(shared)
    try:
        yield
    finally:
        _SHARED_CORES.reset(token)


def shares_cores() -> bool:
    """True inside :func:`cores_shared`: read by a backend's builder."""
    return _SHARED_CORES.get()


def default_threads(threads: int | None) -> int:
    """``threads`` or every core this process may use."""
    if threads is not None:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


# -------------------------------------------------------------------------------- agreement
def prediction_agreement(reference_logits, logits, fold: int | None = None) -> float:
    """Fraction of images whose argmax class is equal in ``logits`` and ``reference_logits``.

    Both are per-image logits (N, K), or folded logits (N/f, f*K) when ``fold`` is given
    (they are unfolded first). Used to judge lower precisions (bf16, int8) against fp32.
    """
    ref = _as_float_array(reference_logits)
    got = _as_float_array(logits)
    if fold is not None:
        ref, got = unfold_logits(ref, fold), unfold_logits(got, fold)
    if ref.shape != got.shape or ref.ndim != 2:
        raise UsageError(f"prediction_agreement needs two logits arrays of one shape (N, K), "
                         f"got {tuple(ref.shape)} and {tuple(got.shape)}")
    if ref.shape[0] == 0:
        raise UsageError("prediction_agreement needs at least one image")
    return float((ref.argmax(1) == got.argmax(1)).mean())


def _as_float_array(x) -> np.ndarray:
    return np.asarray(tensor_to_numpy(x) if is_tensor(x) else x, dtype=np.float32)

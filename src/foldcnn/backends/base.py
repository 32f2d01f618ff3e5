"""The backend interface: one object that runs folded inputs and returns folded logits.

A backend wraps one FoldedCNN for one engine (torch eager, torch.compile, ONNX Runtime, CUDA
graphs) at one precision. ``run`` takes folded inputs (B, f*C, H, W) float32 in [0, 1] and returns
folded logits (B, f*K) as float32 numpy; unfolding, padding and order are the caller's business
(the Predictor). Builders are found by name in a registry; a duplicate name is an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from foldcnn.fold import check_fold, unfold_logits
from foldcnn.models import FoldedCNN

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Backend",
    "BackendError",
    "BackendSpec",
    "available_backends",
    "create_backend",
    "list_backends",
    "prediction_agreement",
    "register_backend",
]

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEVICES = ("cpu", "cuda")


class BackendError(ValueError):
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
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise TypeError(f"run() takes a numpy array or a torch tensor, got {type(x).__name__}")
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1:] != self.folded_input_shape or shape[0] < 1:
            f, (c, h, w) = self.fold, self.input_shape
            raise ValueError(
                f"the {self.name} backend expects folded inputs (B, {f * c}, {h}, {w}) with B >= 1 "
                f"(fold={f} images of ({c}, {h}, {w}) each); got {shape}. Fold images with "
                f"foldcnn.fold_images(images, {f})"
            )
        if isinstance(x, torch.Tensor):
            if x.dtype != torch.float32:
                x = x.float()
            return x
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


# ------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class BackendSpec:
    """A registered builder. ``supports(device)`` returns ``{precision: reason or None}``:
    None means usable here, a string says why not (shown in errors)."""

    name: str
    build: Callable[..., Backend]
    supports: Callable[[str], dict[str, str | None]]
    description: str = ""


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(name: str, *, supports: Callable[[str], dict[str, str | None]], description: str = ""):
    """Decorator: register ``build(model, *, precision, threads, device, max_batch, calibration)``."""

    def deco(build: Callable[..., Backend]) -> Callable[..., Backend]:
        if name in _REGISTRY:
            raise ValueError(f"a backend named {name!r} is already registered")
        _REGISTRY[name] = BackendSpec(name, build, supports, description)
        return build

    return deco


def _ensure_builtin() -> None:
    # The built-in backends register themselves on import; imported lazily so that
    # `import foldcnn.backends.base` stays cheap and cycle-free.
    from foldcnn.backends import cuda_graphs, openvino, ort, torch_backends  # noqa: F401


def list_backends() -> list[str]:
    """Names of every registered backend (usable here or not)."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def available_backends(device: str = "cpu") -> list[tuple[str, str]]:
    """(name, precision) pairs usable on this machine for ``device``."""
    _check_device(device)
    _ensure_builtin()
    return [(n, p) for n in sorted(_REGISTRY) for p, why in _REGISTRY[n].supports(device).items() if why is None]


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise BackendError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")


def _describe(device: str) -> str:
    pairs = available_backends(device)
    return ", ".join(f"{n}/{p}" for n, p in pairs) or "none"


def create_backend(
    model: FoldedCNN,
    name: str = "eager",
    *,
    precision: str = "fp32",
    threads: int | None = None,
    device: str = "cpu",
    max_batch: int = 1024,
    calibration: torch.Tensor | None = None,
) -> Backend:
    """Build backend ``name`` for ``model`` (folded inputs (B, f*C, H, W) -> logits (B, f*K)).

    ``max_batch`` is the largest number of folded inputs per ``run`` call (used for warm-up and
    static shapes); ``calibration`` uint8 images (N, C, H, W) are needed for ``precision="int8"``.
    ``threads`` (default: all cores) sets the engine's intra-op threads.
    """
    _check_device(device)
    _ensure_builtin()
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "fold"):
        raise TypeError(f"create_backend takes a FoldedCNN (from foldcnn.create_model), got {type(model).__name__}")
    spec = _REGISTRY.get(name)
    if spec is None:
        raise BackendError(f"unknown backend {name!r}; registered: {', '.join(sorted(_REGISTRY))} "
                           f"(usable here on {device}: {_describe(device)})")
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    support = spec.supports(device)
    if precision not in support:
        raise BackendError(f"the {name} backend has no precision {precision!r}; it supports "
                           f"{', '.join(support) or 'nothing'} (usable here on {device}: {_describe(device)})")
    if support[precision] is not None:
        raise BackendError(f"{name}/{precision} is not usable here: {support[precision]} "
                           f"(usable on {device}: {_describe(device)})")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise BackendError(f"max_batch must be an int >= 1 (folded inputs per run), got {max_batch!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BackendError(f"threads must be an int >= 1 or None (all cores), got {threads!r}")
    check_fold(model.fold)
    return spec.build(model, precision=precision, threads=threads, device=device,
                      max_batch=max_batch, calibration=calibration)


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
    ref = torch.as_tensor(np.asarray(reference_logits, dtype=np.float32))
    got = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    if fold is not None:
        ref, got = unfold_logits(ref, fold), unfold_logits(got, fold)
    if ref.shape != got.shape or ref.dim() != 2:
        raise ValueError(f"prediction_agreement needs two logits arrays of one shape (N, K), "
                         f"got {tuple(ref.shape)} and {tuple(got.shape)}")
    if ref.shape[0] == 0:
        raise ValueError("prediction_agreement needs at least one image")
    return float((ref.argmax(1) == got.argmax(1)).double().mean())

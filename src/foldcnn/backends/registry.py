"""The backend registry: names -> builders, what each supports here, and create_backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from foldcnn.backends.base import DEVICES, PRECISIONS, Backend, BackendError, BackendSpec
from foldcnn.backends.graphs import GRAPH_BACKENDS, GraphModel
from foldcnn.errors import UsageTypeError
from foldcnn.fold import check_fold

if TYPE_CHECKING:  # an exported graph (GraphModel) is built without torch and without the registry
    import torch

    from foldcnn.models import FoldedCNN

__all__ = ["available_backends", "create_backend", "list_backends", "register_backend"]


# ------------------------------------------------------------------------------- the registry
_REGISTRY: dict[str, BackendSpec] = {}
_BUILTIN_LOADED = False


def register_backend(name: str, *, supports: Callable[[str], dict[str, str | None]], description: str = ""):
    """Decorator: register ``build(model, *, precision, threads, device, max_batch, calibration)``."""

    def deco(build: Callable[..., Backend]) -> Callable[..., Backend]:
        _ensure_builtin()
        _add(BackendSpec(name, build, supports, description))
        return build

    return deco


def _add(spec: BackendSpec) -> None:
    if spec.name in _REGISTRY:
        raise BackendError(f"a backend named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def _ensure_builtin() -> None:
    # The built-in backend modules list their specs in BACKENDS and import only
    # foldcnn.backends.base, so the dependency runs one way; they are imported on first use so
    # that `import foldcnn.backends` stays cheap (no onnxruntime, no CUDA).
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    from foldcnn.backends import cuda_graphs, openvino, ort, torch_backends

    for module in (torch_backends, ort, openvino, cuda_graphs):
        for spec in module.BACKENDS:
            _add(spec)


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
    model: FoldedCNN | GraphModel,
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
    ``threads`` (default: all cores) sets the engine's intra-op threads. An exported graph
    (foldcnn.backends.graphs.GraphModel) runs on ort or openvino, without torch.
    """
    _check_device(device)
    if isinstance(model, GraphModel):
        return _create_graph_backend(model, name, precision=precision, threads=threads, device=device,
                                    max_batch=max_batch)
    import torch

    _ensure_builtin()
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "fold"):
        raise UsageTypeError(f"create_backend takes a FoldedCNN (from foldcnn.create_model), got {type(model).__name__}")
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


def _create_graph_backend(graph: GraphModel, name: str, *, precision: str, threads: int | None, device: str,
                          max_batch: int) -> Backend:
    """The ort or openvino backend over an exported graph (no torch: neither the registry's torch
    engines nor the model zoo are imported)."""
    if name not in GRAPH_BACKENDS:
        raise BackendError(f"an exported graph runs on {' or '.join(GRAPH_BACKENDS)}, not {name!r}; pass "
                           "--backend ort (backend='ort') or openvino")
    if name == "ort":
        from foldcnn.backends.ort import OrtBackend as Engine, ort_support as supports
    else:
        from foldcnn.backends.openvino import OpenVINOBackend as Engine, openvino_support as supports
    why = supports(device).get(precision, f"no precision {precision!r}")
    if why is not None:
        raise BackendError(f"{name}/{precision} is not usable here: {why}")
    if name == "ort":
        return Engine(graph, precision=precision, threads=threads, device=device, max_batch=max_batch)
    from foldcnn.backends.openvino import default_options

    return Engine(graph, precision=precision, threads=threads, device=device, max_batch=max_batch,
                  options=default_options())

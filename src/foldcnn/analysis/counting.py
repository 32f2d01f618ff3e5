"""FLOPs, bytes moved and arithmetic intensity, counted the way the FoldedCNNs paper counts them.

Rules (docs/design.md, "Arithmetic intensity"; Kosaian et al., ICML 2021):

* Only convolutions and linear layers count; ReLU, pooling and BatchNorm are assumed fused into
  them, so they add neither FLOPs nor memory traffic.
* FLOPs = 2 x MACs + one add per output element when the layer has a bias. A grouped conv does
  1/groups of the MACs of a dense one.
* Bytes = bytes_per_element x (weight elements, read once per batch, bias NOT included, plus for
  every folded input the input and output activation elements of every conv/linear layer).
  Leaving the bias out of the weight term is what reproduces the paper's reference table to two
  decimals (with it, two of the twenty values move by 0.01).
* A batch of B images is B/f folded inputs, counted as an exact fraction: intensity is a
  steady-state property of a stream, and the paper's f=3 values (B=1024) are reproduced by
  1024/3 inputs, not by padding to 342.

Counting is a pure function of layer shapes (``count_layer``, ``summarize``); ``analyze`` only runs
one dummy forward pass to learn those shapes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from foldcnn.errors import UsageError, UsageTypeError
from foldcnn.fold import check_fold

__all__ = ["LayerCount", "AnalysisReport", "count_layer", "summarize", "analyze"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerCount:
    """One call of a conv or linear layer on ONE folded input (shapes without the batch axis)."""

    name: str
    kind: str  # "conv" or "linear"
    input_shape: tuple[int, ...]  # e.g. (f*C, H, W) for the first conv
    output_shape: tuple[int, ...]
    macs: int
    bias_adds: int  # one per output element when the layer has a bias, else 0
    flops: int  # 2 * macs + bias_adds
    weight_elements: int  # weight tensor only (the paper's bytes count leaves the bias out)
    bias_elements: int
    input_elements: int
    output_elements: int


@dataclass(frozen=True)
class AnalysisReport:
    """Arithmetic intensity of a model for a batch of ``batch_size`` IMAGES.

    Per-image values already divide by the f images of a folded input, so folded and unfolded
    models compare directly. Units: FLOPs (2 per MAC), bytes, FLOPs per byte.
    """

    fold: int
    batch_size: int  # images; the batch holds batch_size / fold folded inputs
    bytes_per_element: float
    params: int  # every parameter of the model (BatchNorm included)
    flops_per_image: float
    bias_adds_per_image: float  # part of flops_per_image
    bytes_per_image: float
    arithmetic_intensity: float  # flops_per_image / bytes_per_image
    weight_elements: int  # counted once per batch, bias excluded
    activation_elements_per_input: int  # inputs + outputs of every layer, one folded input
    layers: tuple[LayerCount, ...]

    @property
    def folded_inputs(self) -> float:
        """Folded inputs per batch, B/f (a fraction when f does not divide B)."""
        return self.batch_size / self.fold

    @property
    def flops_per_batch(self) -> float:
        return self.flops_per_image * self.batch_size

    @property
    def bytes_per_batch(self) -> float:
        return self.bytes_per_image * self.batch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def count_layer(
    module: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...], name: str = ""
) -> LayerCount:
    """Count one conv/linear call from its shapes (no batch axis) and hyperparameters."""
    in_elems, out_elems = math.prod(input_shape), math.prod(output_shape)
    if isinstance(module, _CONV_TYPES):
        # Each output element is a dot product over (C_in / groups) x kernel taps.
        kind = "conv"
        macs = out_elems * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, nn.Linear):
        kind = "linear"
        macs = out_elems * module.in_features
    else:
        raise UsageTypeError(f"only Conv1d/2d/3d and Linear layers are counted, got {type(module).__name__}")
    has_bias = getattr(module, "bias", None) is not None
    bias_adds = out_elems if has_bias else 0
    return LayerCount(
        name=name,
        kind=kind,
        input_shape=tuple(int(s) for s in input_shape),
        output_shape=tuple(int(s) for s in output_shape),
        macs=int(macs),
        bias_adds=int(bias_adds),
        flops=int(2 * macs + bias_adds),
        weight_elements=int(module.weight.numel()),
        bias_elements=int(module.bias.numel()) if has_bias else 0,
        input_elements=int(in_elems),
        output_elements=int(out_elems),
    )


def _check_batch(batch_size: object, bytes_per_element: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size counts images and must be an int >= 1, got {batch_size!r}")
    if isinstance(bytes_per_element, bool) or not isinstance(bytes_per_element, (int, float)) \
            or not bytes_per_element > 0:
        raise UsageError(
            f"bytes_per_element must be a positive number (2 for fp16/bf16, 4 for fp32, 1 for int8), "
            f"got {bytes_per_element!r}"
        )


def summarize(
    layers: tuple[LayerCount, ...] | list[LayerCount],
    *,
    fold: int = 1,
    batch_size: int = 1024,
    bytes_per_element: float = 2,
    params: int = 0,
) -> AnalysisReport:
    """Combine per-layer counts (one folded input each) into per-image totals for a batch.

    A layer name that occurs more than once (a module called twice) adds its FLOPs and
    activations each time but its weights only once: weights are read once per batch.
    """
    fold = check_fold(fold)
    _check_batch(batch_size, bytes_per_element)
    layers = tuple(layers)
    if not layers:
        raise UsageError("the model has no Conv or Linear layers to count")
    flops_per_input = sum(layer.flops for layer in layers)
    bias_per_input = sum(layer.bias_adds for layer in layers)
    weights = sum({layer.name: layer.weight_elements for layer in layers}.values())
    acts = sum(layer.input_elements + layer.output_elements for layer in layers)
    folded_inputs = batch_size / fold
    bytes_per_batch = bytes_per_element * (weights + folded_inputs * acts)
    flops_per_image = flops_per_input / fold
    bytes_per_image = bytes_per_batch / batch_size
    return AnalysisReport(
        fold=fold,
        batch_size=batch_size,
        bytes_per_element=bytes_per_element,
        params=int(params),
        flops_per_image=flops_per_image,
        bias_adds_per_image=bias_per_input / fold,
        bytes_per_image=bytes_per_image,
        arithmetic_intensity=flops_per_image / bytes_per_image,
        weight_elements=int(weights),
        activation_elements_per_input=int(acts),
        layers=layers,
    )


def _dummy_input(model: nn.Module, input_shape, fold: int) -> torch.Tensor:
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise UsageError(
            f"{type(model).__name__} has no input_shape attribute; pass the shape of one image, "
            f"e.g. analyze(model, input_shape=(3, 32, 32))"
        )
    c, *rest = (int(s) for s in input_shape)
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    return torch.zeros((1, fold * c, *rest), dtype=dtype, device=device)


def _trace_layers(model: nn.Module, x: torch.Tensor) -> list[LayerCount]:
    """Forward ``x`` once in eval mode and count every conv/linear call; leaves model as found."""
    rows: list[LayerCount] = []
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            # A module called twice yields two rows with one name (weights then count once).
            # Shapes are read at call time: an in-place ReLU later cannot change them.
            rows.append(count_layer(module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]), name))
        return hook

    modes = {m: m.training for m in model.modules()}
    try:
        for name, m in model.named_modules():
            if isinstance(m, (*_CONV_TYPES, nn.Linear)):
                handles.append(m.register_forward_hook(make_hook(name or type(m).__name__)))
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return rows


def analyze(
    model: nn.Module,
    batch_size: int = 1024,
    bytes_per_element: float = 2,
    *,
    input_shape: tuple[int, ...] | None = None,
    fold: int | None = None,
) -> AnalysisReport:
    """FLOPs, bytes and arithmetic intensity per image of ``model`` at ``batch_size`` images.

    ``input_shape`` is the shape of ONE image (C, H, W), default ``model.input_shape``; ``fold``
    defaults to ``model.fold`` or 1. Shapes come from one forward pass of a zero input
    (1, fold*C, H, W) under ``torch.no_grad`` in eval mode; training flags and hooks are restored.
    ``bytes_per_element``: 2 for fp16/bf16 (the paper's setting), 4 for fp32, 1 for int8.
    """
    fold = check_fold(fold if fold is not None else getattr(model, "fold", 1))
    _check_batch(batch_size, bytes_per_element)
    layers = _trace_layers(model, _dummy_input(model, input_shape, fold))
    params = sum(p.numel() for p in model.parameters())
    return summarize(layers, fold=fold, batch_size=batch_size,
                     bytes_per_element=bytes_per_element, params=params)

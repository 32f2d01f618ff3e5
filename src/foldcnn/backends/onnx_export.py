"""ONNX export of folded models, int8 static quantization, the sidecar and a parity check.

The exported graph takes ``images`` (B, f*C, H, W) float32 in [0, 1] (folded, uint8 / 255) and
returns ``logits`` (B, f*K); the batch axis is dynamic. ``model.onnx.json`` beside it describes
how to fold and unfold, so the file runs with plain onnxruntime + numpy (see the README).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from foldcnn.backends.base import BackendError
from foldcnn.backends.graphs import INPUT_NAME, OUTPUT_NAME, SIDECAR_FORMAT, fold_calibration, graph_sha256
from foldcnn.errors import MissingInputError, UsageError
from foldcnn.models import FoldedCNN

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "check_onnx_parity",
    "export_onnx",
    "fold_calibration",
    "onnx_bytes",
    "quantize_int8",
    "write_sidecar",
]

# Opset of the TorchScript exporter: 17 is read by every onnxruntime >= 1.14 and has all ops we use.
DEFAULT_OPSET = 17
# The oldest opset torch.onnx writes (torch.onnx._constants.ONNX_MIN_OPSET); onnxruntime has no kernels
# for the opset-1 ReLU an opset-5 graph would hold.
MIN_OPSET = 7
EXPORTERS = ("auto", "legacy", "dynamo")


def _plain_copy(model: FoldedCNN) -> torch.nn.Module:
    return copy.deepcopy(model).float().eval().to("cpu", memory_format=torch.contiguous_format)


def _export_legacy(module, example, opset, dynamic_batch) -> bytes:
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of the TorchScript exporter
        torch.onnx.export(module, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset or DEFAULT_OPSET, dynamo=False)
    return buf.getvalue()


def _export_dynamo(module, example, opset, dynamic_batch) -> bytes:
    shapes = ({0: torch.export.Dim("batch", max=1 << 20)},) if dynamic_batch else None
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # it logs a warning per missing torchvision op
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), None, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                        opset_version=opset, dynamo=True, verbose=False)
    finally:
        log.setLevel(level)
    return program.model_proto.SerializeToString()


def onnx_bytes(model: FoldedCNN, *, opset: int | None = None, dynamic_batch: bool = True,
               exporter: str = "auto") -> bytes:
    """The fp32 ONNX graph of ``model``: ``images`` (B, f*C, H, W) -> ``logits`` (B, f*K).

    ``exporter="auto"`` uses torch's TorchScript exporter (fast, no onnxscript needed) and falls
    back to the torch.export-based one (needs onnxscript) where the former is gone or fails.
    """
    if exporter not in EXPORTERS:
        raise UsageError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if opset is not None and not MIN_OPSET <= opset <= _max_opset():
        raise UsageError(f"opset {opset} is not one torch {torch.__version__} exports and onnxruntime runs; pass "
                         f"an opset from {MIN_OPSET} to {_max_opset()} (the default is {DEFAULT_OPSET})")
    module = _plain_copy(model)
    example = torch.rand(2, *model.folded_input_shape)  # batch 2: a batch of 1 may get specialized
    errors = []
    for name, fn in (("legacy", _export_legacy), ("dynamo", _export_dynamo)):
        if exporter not in ("auto", name):
            continue
        try:
            data = fn(module, example, opset, dynamic_batch)
        except Exception as e:  # noqa: BLE001 - report every exporter's failure together
            errors.append(f"{name} exporter: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            continue
        written = graph_opset(data)
        if opset is not None and written not in (None, opset):  # the dynamo exporter falls back silently
            raise BackendError(f"torch {torch.__version__} cannot write opset {opset} (its {name} exporter wrote "
                               f"opset {written}); pass an opset from {MIN_OPSET} to {_max_opset()} or leave it "
                               f"out for {DEFAULT_OPSET}")
        return data
    hint = " (the dynamo exporter needs onnxscript: pip install onnxscript)" if exporter != "legacy" else ""
    raise BackendError(f"torch could not export {type(model).__name__} to ONNX{hint}: " + "; ".join(errors))


def _max_opset() -> int:
    """Newest opset torch's exporters write (torch 2.13: 23; above 20 only the dynamo exporter);
    DEFAULT_OPSET where torch does not say."""
    try:
        from torch.onnx import _constants
    except ImportError:
        return DEFAULT_OPSET
    return int(getattr(_constants, "ONNX_MAX_OPSET", DEFAULT_OPSET))


def quantize_int8(model_bytes: bytes, calibration: np.ndarray, *, per_channel: bool = True,
                  batch: int = 32) -> bytes:
    """ONNX Runtime static quantization (QDQ; uint8 activations, int8 weights, per-channel weights)
    calibrated by min/max on folded inputs ``calibration`` (M, f*C, H, W) float32."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise BackendError("int8 needs onnxruntime: pip install 'foldcnn[export]'") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(calibration), batch))

        def get_next(self):
            start = next(self._it, None)
            return None if start is None else {INPUT_NAME: calibration[start:start + batch]}

    with tempfile.TemporaryDirectory(prefix="foldcnn-int8-") as tmp:
        raw, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(raw).write_bytes(model_bytes)
        try:  # shape inference + graph cleanup make quantization cover more nodes
            quant_pre_process(raw, pre, skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - an optimization only; quantize the raw graph instead
            pre = raw
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=per_channel)
        return Path(out).read_bytes()


def write_sidecar(path: str | os.PathLike, model: FoldedCNN, *, class_names: list[str] | None = None,
                  precision: str = "fp32", opset: int | None = None, data: bytes | None = None) -> Path:
    """Write ``<path>.json``: what a user needs to fold inputs and read the outputs without foldcnn.
    ``data``: the graph's bytes, whose SHA-256 the sidecar records (so a sidecar is never used with
    another graph); read from ``path`` when not given."""
    path = Path(path)
    names = list(class_names) if class_names is not None else [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise UsageError(f"{len(names)} class names for a model with {model.num_classes} classes")
    config = getattr(model, "config", None)
    body = {
        "format": SIDECAR_FORMAT,
        "fold": model.fold,
        "num_classes": model.num_classes,
        "class_names": names,
        "input_shape": list(model.input_shape),
        "folded_input_shape": list(model.folded_input_shape),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "normalization": {"scale": 1 / 255, "range": [0.0, 1.0], "from": "uint8"},
        "precision": precision,
        "opset": opset,
        "graph_sha256": graph_sha256(data if data is not None else path.read_bytes()),
        "model": config.to_dict() if config is not None else None,
        "layout": "image i -> folded row i // fold, channels [C*(i % fold), C*(i % fold) + C); "
                  "logits [j*K, (j+1)*K) of folded row g -> image g*fold + j",
    }
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps(body, indent=2))
    return side


def export_onnx(model: FoldedCNN, path: str | os.PathLike, *, opset: int | None = None,
                dynamic_batch: bool = True, int8_calibration: torch.Tensor | None = None,
                class_names: list[str] | None = None, exporter: str = "auto") -> Path:
    """Export ``model`` to ``path`` (+ the ``<path>.json`` sidecar); returns ``path``.

    The graph maps ``images`` (B, f*C, H, W) float32 in [0, 1] to ``logits`` (B, f*K). With
    ``int8_calibration`` (uint8 training images (N, C, H, W)) the file is statically quantized.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise MissingInputError(f"the folder {path.parent} does not exist; create it first")
    data = onnx_bytes(model, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter)
    precision = "fp32"
    if int8_calibration is not None:
        data = quantize_int8(data, fold_calibration(int8_calibration, model.fold, model.input_shape))
        precision = "int8"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    write_sidecar(path, model, class_names=class_names, precision=precision, opset=graph_opset(data), data=data)
    return path


def graph_opset(model_bytes: bytes) -> int | None:
    """The default-domain opset an ONNX graph was written for (None if onnx is not installed)."""
    try:
        import onnx
    except ImportError:
        return None
    proto = onnx.load_model_from_string(model_bytes)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def check_onnx_parity(model: FoldedCNN, path: str | os.PathLike, *, inputs: torch.Tensor | None = None,
                      batch_sizes: tuple[int, ...] = (1, 3), seed: int = 0) -> dict:
    """Run the ONNX file and the eager model on the same folded inputs (random ones unless
    ``inputs`` (B, f*C, H, W) is given, at each of ``batch_sizes``); returns
    ``{"max_abs_diff": float, "agreement": float, "batch_sizes": [...]}``."""
    import onnxruntime as ort

    from foldcnn.backends.base import prediction_agreement

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = _plain_copy(model)
    gen = torch.Generator().manual_seed(seed)
    batches = [inputs] if inputs is not None else [
        torch.rand(b, *model.folded_input_shape, generator=gen) for b in batch_sizes]
    diff, ref_all, got_all = 0.0, [], []
    with torch.inference_mode():
        for x in batches:
            ref = module(x).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
            if got.shape != ref.shape:
                raise BackendError(f"{path} returned logits of shape {got.shape}, expected {ref.shape}")
            diff = max(diff, float(np.abs(got - ref).max()))
            ref_all.append(ref)
            got_all.append(got)
    agree = prediction_agreement(np.concatenate(ref_all), np.concatenate(got_all), fold=model.fold)
    return {"max_abs_diff": diff, "agreement": agree, "batch_sizes": [int(x.shape[0]) for x in batches]}

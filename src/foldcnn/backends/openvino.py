"""OpenVINO backend (CPU): fp32, bf16 and int8 over the same ONNX graph the ort backend runs.

* The inference precision is always set explicitly (``INFERENCE_PRECISION_HINT``): OpenVINO's CPU
  plugin otherwise runs "fp32" models in bf16 on CPUs with AMX. fp32 means fp32; int8 runs its
  quantized layers in int8 and the rest in fp32.
* int8 comes from uint8 calibration images in one of two ways (``int8=``): ``"qdq"``, OpenVINO
  reading the static QDQ graph that ``foldcnn.backends.onnx_export.quantize_int8`` makes for
  ONNX Runtime, or ``"nncf"``, NNCF post-training quantization of the OpenVINO model.
* ``hint="latency"`` runs each call as one inference on all threads (one stream);
  ``hint="throughput"`` lets OpenVINO pick streams and splits each call's batch across them.
* ``shapes="static"`` (with the latency hint) compiles the model for the batch size of each call
  (max_batch when built, others on first use, a few tenths of a second each; past
  ``MAX_STATIC_SHAPES`` of them calls run the dynamic-batch model, which is always built).

The defaults (``DEFAULTS``) are the fastest settings measured (docs/notebook/2026-12-06-openvino.md,
"OpenVINO settings"; experiments/lab/openvino_settings.py measures them again);
``FOLDCNN_OPENVINO_HINT`` overrides the hint for backends built by name.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import os
import warnings
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from foldcnn.backends.base import Backend, BackendError, BackendSpec, default_threads
from foldcnn.backends.graphs import GraphModel, check_graph_shapes, fold_calibration
from foldcnn.backends.ort import NO_CALIBRATION
from foldcnn.tensors import is_tensor

if TYPE_CHECKING:  # an exported graph (GraphModel) runs without torch
    import torch

    from foldcnn.models import FoldedCNN

__all__ = ["DEFAULTS", "HINTS", "HINT_ENV", "INT8_METHODS", "OpenVINOBackend", "OpenVINOOptions", "default_options",
           "openvino_support"]

HINTS = ("latency", "throughput")
INT8_METHODS = ("qdq", "nncf")
SHAPES = ("dynamic", "static")
MAX_STATIC_SHAPES = 8  # compiled batch sizes kept per backend; past them calls run the dynamic model
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the unquantized rest stays fp32


@dataclass(frozen=True)
class OpenVINOOptions:
    """How the backend runs: ``hint`` (latency: one stream on all threads; throughput: OpenVINO's
    streams, each call's batch split across them), ``int8`` (qdq or nncf) and ``shapes``
    (dynamic: one model for every batch size; static: one compiled model per batch size)."""

    hint: str = "throughput"  # faster in every int8 cell measured (docs/notebook/2026-12-06-openvino.md)
    int8: str = "qdq"
    shapes: str = "static"

    def __post_init__(self) -> None:
        for name, allowed in (("hint", HINTS), ("int8", INT8_METHODS), ("shapes", SHAPES)):
            if getattr(self, name) not in allowed:
                raise BackendError(f"OpenVINO option {name} must be one of {', '.join(allowed)}, "
                                   f"got {getattr(self, name)!r}")


DEFAULTS = OpenVINOOptions()
HINT_ENV = "FOLDCNN_OPENVINO_HINT"  # overrides DEFAULTS.hint for every backend built by name


def default_options() -> OpenVINOOptions:
    """The options ``create_backend(model, "openvino")`` uses: DEFAULTS, with the hint taken from
    ``FOLDCNN_OPENVINO_HINT`` (latency or throughput) when it is set."""
    hint = os.environ.get(HINT_ENV, "").strip().lower()
    if not hint:
        return DEFAULTS
    if hint not in HINTS:
        raise BackendError(f"{HINT_ENV} must be one of {', '.join(HINTS)}, got {hint!r}")
    return replace(DEFAULTS, hint=hint)


@functools.lru_cache(maxsize=1)
def _core():
    import openvino as ov

    return ov.Core()


def _int8_missing(method: str) -> str | None:
    module, extra = ("onnxruntime", "openvino") if method == "qdq" else ("nncf", "nncf")
    if importlib.util.find_spec(module) is None:
        return f"int8 ({method}) needs {module}: pip install 'foldcnn[{extra}]'"
    return None


def openvino_support(device: str) -> dict[str, str | None]:
    """{precision: None if usable, else why not} for the openvino backend on ``device``."""
    fp16 = "fp16 runs on CUDA only; on CPU use bf16 or fp32"
    if importlib.util.find_spec("openvino") is None:
        missing = "openvino is not installed; pip install 'foldcnn[openvino]'"
        return {p: missing for p in ("fp32", "bf16", "int8", "fp16")}
    if device == "cuda":
        gone = ("foldcnn runs OpenVINO on the CPU only (its GPU plugin is for Intel GPUs); on CUDA use "
                "eager, cuda-graphs or ort")
        return {p: gone for p in ("fp32", "bf16", "int8", "fp16")}
    caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16 = None if "BF16" in caps else "this CPU has no native bf16 (AVX512-BF16/AMX) for OpenVINO; use fp32"
    return {"fp32": None, "bf16": bf16, "int8": _int8_missing(default_options().int8), "fp16": fp16}


def _quiet():
    """Silence NNCF's log lines and progress bars (library code never prints)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def nncf_int8(ov_model, calibration: np.ndarray):
    """NNCF post-training quantization (symmetric int8, the CPU's fastest preset) of an OpenVINO
    model, calibrated on folded inputs ``calibration`` (M, f*C, H, W) float32, one per item."""
    try:
        import nncf
    except ImportError:
        raise BackendError(_int8_missing("nncf")) from None
    nncf.set_log_level(logging.ERROR)
    items = [calibration[i:i + 1] for i in range(len(calibration))]
    with _quiet():
        return nncf.quantize(ov_model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(items))


class OpenVINOBackend(Backend):
    """An OpenVINO CompiledModel over the exported folded graph, on the CPU."""

    def __init__(self, model: FoldedCNN | GraphModel, *, precision: str, threads: int | None, device: str = "cpu",
                 max_batch: int, calibration: torch.Tensor | None = None,
                 options: OpenVINOOptions = DEFAULTS) -> None:
        super().__init__(model, "openvino", precision, device, max_batch)
        if device != "cpu":
            raise BackendError(openvino_support(device)[precision] or "the openvino backend runs on the CPU")
        graph = isinstance(model, GraphModel)
        if precision == "int8" and calibration is None and not graph:
            raise BackendError(NO_CALIBRATION)
        self.options = options
        self.threads = default_threads(threads)
        cal = None
        self.graph_cache = None
        if graph:
            if (precision == "int8") != (model.precision == "int8"):
                raise BackendError(f"{model.source} is a {model.precision} graph; run it at that precision "
                                   f"(not {precision})")
            data, self.graph_cache = model.data, model.graph_cache
        elif precision == "int8" and options.int8 == "qdq":
            missing = _int8_missing("qdq")
            if missing:
                raise BackendError(missing)
            from foldcnn.backends.graph_cache import model_graph

            data, self.graph_cache = model_graph(model, "int8", calibration)  # the QDQ graph ort runs
        else:
            from foldcnn.backends.graph_cache import model_graph

            data, self.graph_cache = model_graph(model, "fp32", None)
            if precision == "int8":
                cal = fold_calibration(calibration, model.fold, model.input_shape)
        core = _core()
        try:
            self.ov_model = core.read_model(data, b"")
            if cal is not None and options.int8 == "nncf":
                self.ov_model = nncf_int8(self.ov_model, cal)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"OpenVINO could not read the exported model ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}); try the ort or eager backend") from e
        if graph:
            check_graph_shapes(model, _dims(self.ov_model.input(0)), _dims(self.ov_model.output(0)))
        self.config = {"PERFORMANCE_HINT": options.hint.upper(), "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
                       "INFERENCE_NUM_THREADS": self.threads}
        self._compiled: dict[int | None, tuple] = {}
        self._runner(None)  # the dynamic-batch model: fails here, not in the middle of a job
        if options.shapes == "static" and options.hint == "latency":
            self._runner(max_batch)
        self.streams = int(self._compiled[None][0].get_property("NUM_STREAMS"))

    def settings(self) -> dict:
        """What this backend runs with (recorded in bench JSON): options, threads, streams, precision hint."""
        return {**asdict(self.options), "threads": self.threads, "streams": self.streams,
                "inference_precision": self.config["INFERENCE_PRECISION_HINT"]}

    def _runner(self, batch: int | None):
        """(compiled model, infer request or, with several streams, an AsyncInferQueue) for folded
        batch ``batch`` (None: dynamic batch)."""
        if batch not in self._compiled:
            import openvino as ov

            model = self.ov_model
            if batch is not None:
                model = model.clone()
                model.reshape([batch, *self.folded_input_shape])
            compiled = _core().compile_model(model, "CPU", self.config)
            streams = int(compiled.get_property("NUM_STREAMS"))
            requests = ov.AsyncInferQueue(compiled, streams) if streams > 1 else compiled.create_infer_request()
            self._compiled[batch] = (compiled, requests)
        return self._compiled[batch]

    def _pick(self, batch: int):
        static = self.options.shapes == "static" and self.options.hint == "latency"
        if static and (batch in self._compiled or len(self._compiled) <= MAX_STATIC_SHAPES):
            return self._runner(batch)
        return self._runner(None)

    def _run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if is_tensor(x):
            x = x.detach().to("cpu").contiguous().numpy()
        _, requests = self._pick(x.shape[0])
        if not hasattr(requests, "wait_all"):  # one stream: one InferRequest (a queue has wait_all)
            # share_inputs: no copy of the input; the outputs are copied (a caller may keep them).
            return requests.infer({0: x}, share_inputs=True)[0]
        parts = np.array_split(x, min(len(requests), x.shape[0]))
        out: list = [None] * len(parts)

        def done(request, i):
            out[i] = request.get_output_tensor(0).data.copy()

        requests.set_callback(done)
        for i, part in enumerate(parts):
            requests.start_async({0: part}, i, share_inputs=True)
        requests.wait_all()
        return np.concatenate(out)

    def close(self) -> None:
        self._compiled.clear()
        self.ov_model = None
        super().close()


def _dims(port) -> list:
    """An OpenVINO port's dims: ints, -1 for a dynamic one."""
    return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]


def _build_openvino(model, *, precision, threads, device, max_batch, calibration=None) -> Backend:
    return OpenVINOBackend(model, precision=precision, threads=threads, device=device, max_batch=max_batch,
                           calibration=calibration, options=default_options())


BACKENDS = (
    BackendSpec("openvino", _build_openvino, openvino_support,
                "OpenVINO on the CPU (fp32, bf16; int8 from the QDQ graph or NNCF)"),
)

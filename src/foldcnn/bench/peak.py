"""Peak FLOP/s per (runtime, device, precision) and memory bandwidth, measured in the benchmark's run.

* torch on CPU: ``foldcnn.analysis.roofline.matmul_peak`` (``torch.mm`` of two n x n
  matrices, fp32 or bf16; bandwidth from a large ``copy_``).
* torch on CUDA: ``torch.mm`` timed with CUDA events (fp32 without TF32, fp16, bf16); bandwidth
  from a device-to-device ``copy_``.
* ONNX Runtime: a one-node ONNX graph, ``MatMul`` (fp32) or ``MatMulInteger`` (uint8 x int8 ->
  int32, "int8"), the right-hand matrix an initializer like a model's weights, run by an
  InferenceSession with the same thread count as the backends.
* OpenVINO: the fp32 ``MatMul`` graph compiled with the inference precision set to f32 or bf16,
  and for int8 a QDQ ``MatMul`` (uint8 activations, int8 weights), which OpenVINO runs as an int8
  matmul; the same thread count as the backends.

The roof of a precision (``PeakSet.roof``) is the highest of these peaks on any runtime: a model
is judged against the fastest matmul this machine ran at that precision, whichever engine ran it
(``foldcnn.bench.report`` raises it further to any model that ran faster still, so that no
fraction of peak reads above 100%).

Each peak is the fastest of several sizes n (``PEAK_SIZES``: no one size is the fastest on
every machine and precision, and a peak set too low flatters every fraction of peak). FLOPs of an
n x n matrix multiply are counted as 2 * n^3 (one multiply and one add per MAC; integer ops for
int8). Bandwidth counts bytes read + bytes written. Every value is the median of ``repeats``
timed calls after one warm-up; ``Peak.what`` says exactly what was run. ``PeakSet.highest``
keeps the higher of two measurements (``foldcnn bench`` measures before and after its sweep, so
that a slow moment of a shared machine does not set the roof).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from foldcnn.analysis.roofline import (
    PEAK_SIZES,
    best_matmul_rate,
    copy_bandwidth,
    matmul_peak,
    matmul_sizes,
    size_note,
    torch_threads,
)
from foldcnn.bench.timing import CudaEventTimer, median_seconds
from foldcnn.errors import UsageError
from foldcnn.precision import TORCH_DTYPES, with_precision_key

__all__ = ["Bandwidth", "Peak", "PeakSet", "measure_peaks", "openvino_matmul_peak", "ort_matmul_peak", "peak_runtime"]

@dataclass(frozen=True)
class Peak:
    runtime: str  # "torch", "ort" or "openvino"
    device: str  # "cpu" or "cuda"
    precision: str
    flops_per_s: float
    what: str


@dataclass(frozen=True)
class Bandwidth:
    device: str
    bytes_per_s: float
    what: str


@dataclass
class PeakSet:
    """Everything measured for the roofs; ``skipped`` says which peaks could not be measured and why."""

    peaks: list[Peak] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def flops_per_s(self, runtime: str, device: str, precision: str) -> float | None:
        runtime = peak_runtime(runtime)
        for p in self.peaks:
            if (p.runtime, p.device, p.precision) == (runtime, device, precision):
                return p.flops_per_s
        return None

    def roof(self, device: str, precision: str) -> Peak | None:
        """The highest peak measured for ``precision`` on ``device`` on any runtime (None: none measured)."""
        mine = [p for p in self.peaks if (p.device, p.precision) == (device, precision)]
        return max(mine, key=lambda p: p.flops_per_s) if mine else None

    def bytes_per_s(self, device: str) -> float | None:
        vals = [b.bytes_per_s for b in self.bandwidths if b.device == device]
        return max(vals) if vals else None

    def highest(self, other: PeakSet) -> PeakSet:
        """Per (runtime, device, precision) and per device's bandwidth, the higher of ``self`` and
        ``other``, its ``what`` saying it was the higher of two measurements; ``skipped`` keeps
        what neither measured."""
        def best(a: list, b: list, key, rate):
            out = {}
            for item in [*a, *b]:
                k = key(item)
                if k not in out or rate(item) > rate(out[k]):
                    out[k] = item
            both = {key(x) for x in a} & {key(x) for x in b}
            return [replace(v, what=f"{v.what}; the higher of 2 measurements") if k in both else v
                    for k, v in out.items()]

        peaks = best(self.peaks, other.peaks, lambda p: (p.runtime, p.device, p.precision), lambda p: p.flops_per_s)
        bws = best(self.bandwidths, other.bandwidths, lambda b: b.device, lambda b: b.bytes_per_s)
        got = {f"{p.runtime}/{p.device}/{p.precision}" for p in peaks}
        skipped = [s for s in dict.fromkeys([*self.skipped, *other.skipped]) if s.split(":")[0] not in got]
        return PeakSet(peaks, bws, skipped)

    def to_dict(self) -> dict:
        return {"peaks": [asdict(p) for p in self.peaks], "bandwidths": [asdict(b) for b in self.bandwidths],
                "skipped": list(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict) -> PeakSet:
        return cls([Peak(**with_precision_key(p)) for p in d.get("peaks", [])], [Bandwidth(**b) for b in d.get("bandwidths", [])],
                   list(d.get("skipped", [])))


def peak_runtime(runtime: str) -> str:
    """The runtime whose matmul peak a backend's runtime is compared with (TensorRT: torch's)."""
    return "torch" if runtime == "tensorrt" else runtime


# ------------------------------------------------------------------------------------ torch
def _torch_cpu(precision: str, sizes: Sequence[int], copy_mib: int, repeats: int,
               threads: int | None) -> tuple[Peak, Bandwidth]:
    with torch_threads(threads) as n:
        rate, best = matmul_peak(precision, sizes, repeats)
        bytes_per_s = copy_bandwidth(copy_mib, repeats)
    what = f"torch.mm {size_note(sizes, best)} {precision} on CPU, {n} thread(s), median of {repeats}"
    bw = Bandwidth("cpu", bytes_per_s, f"torch copy_ of {copy_mib} MiB fp32 on CPU (read + write bytes), "
                                       f"{n} thread(s), median of {repeats}")
    return Peak("torch", "cpu", precision, rate, what), bw


def _torch_cuda(precision: str, sizes: Sequence[int], repeats: int) -> Peak:
    if precision not in TORCH_DTYPES:
        raise UsageError(f"no torch CUDA matmul peak for {precision}")

    def seconds(n: int) -> float:
        a = torch.randn(n, n, device="cuda", dtype=TORCH_DTYPES[precision])
        b = torch.randn(n, n, device="cuda", dtype=TORCH_DTYPES[precision])
        return median_seconds(lambda: torch.mm(a, b), repeats, CudaEventTimer(), sync=torch.cuda.synchronize)

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means plain fp32 here, as in the device table
    try:
        rate, best = best_matmul_rate(seconds, sizes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return Peak("torch", "cuda", precision, rate,
                f"torch.mm {size_note(sizes, best)} {precision} on {torch.cuda.get_device_name()} (TF32 off), "
                f"CUDA events, median of {repeats}")


def _cuda_bandwidth(copy_mib: int, repeats: int) -> Bandwidth:
    src = torch.ones(copy_mib * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    s = median_seconds(lambda: dst.copy_(src), repeats, CudaEventTimer(), sync=torch.cuda.synchronize)
    return Bandwidth("cuda", 2 * src.numel() * 4 / s,
                     f"torch copy_ of {copy_mib} MiB fp32 on {torch.cuda.get_device_name()} "
                     f"(read + write bytes), CUDA events, median of {repeats}")


# -------------------------------------------------------------------------------------- ort
def _matmul_graph(precision: str, size: int, rng: np.random.Generator):
    """(serialized one-node ONNX model, left-hand input array)."""
    from onnx import TensorProto, helper, numpy_helper

    if precision == "fp32":
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
    elif precision == "int8":
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    else:
        raise UsageError(f"no ONNX Runtime matmul peak for {precision} (fp32 and int8 are measured)")
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], f"peak_{op}",
        [helper.make_tensor_value_info("a", a_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        initializer=[numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's IR; old enough for every onnxruntime that runs opset 17
    return model.SerializeToString(), a, op


def ort_matmul_peak(precision: str = "fp32", *, size: int | Sequence[int] = PEAK_SIZES, repeats: int = 5,
                    threads: int | None = None, device: str = "cpu") -> Peak:
    """Peak of a one-node ONNX MatMul (fp32) / MatMulInteger (int8) run by onnxruntime: the
    fastest of ``size`` (one matrix size or several)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UsageError("this onnxruntime has no CUDAExecutionProvider")
    op = ""

    def seconds(n: int) -> float:
        nonlocal op
        blob, a, op = _matmul_graph(precision, n, np.random.default_rng(0))
        sess = ort.InferenceSession(blob, so, providers=providers)
        if device == "cuda":  # keep both matrices on the GPU: time the multiply, not the PCIe copies
            binding = sess.io_binding()
            binding.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0))
            binding.bind_output("y", "cuda")
            return median_seconds(lambda: sess.run_with_iobinding(binding), repeats)
        return median_seconds(lambda: sess.run(None, {"a": a}), repeats)

    rate, best = best_matmul_rate(seconds, size)
    n = "default" if threads is None else str(threads)
    kind = "uint8 x int8 -> int32" if precision == "int8" else "fp32"
    return Peak("ort", device, precision, rate,
                f"onnxruntime {ort.__version__} one-node {op} {size_note(size, best)} ({kind}) on {device}, "
                f"{n} intra-op thread(s), median of {repeats}")


# --------------------------------------------------------------------------------- openvino
def _qdq_matmul_graph(size: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """A float MatMul between QuantizeLinear/DequantizeLinear pairs (uint8 activations, int8
    weights): OpenVINO's low-precision transformations run it as one int8 matmul."""
    from onnx import TensorProto, helper, numpy_helper

    a = rng.random((size, size), dtype=np.float32)
    b = rng.integers(-127, 128, (size, size), dtype=np.int8)
    init = [numpy_helper.from_array(b, "b_q"), numpy_helper.from_array(np.float32(1 / 255), "a_scale"),
            numpy_helper.from_array(np.uint8(0), "a_zero"), numpy_helper.from_array(np.float32(0.01), "b_scale"),
            numpy_helper.from_array(np.int8(0), "b_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero"], ["a_q"]),
             helper.make_node("DequantizeLinear", ["a_q", "a_scale", "a_zero"], ["a_dq"]),
             helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b_dq"]),
             helper.make_node("MatMul", ["a_dq", "b_dq"], ["y"])]
    graph = helper.make_graph(nodes, "peak_qdq_matmul", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), a


def openvino_matmul_peak(precision: str = "fp32", *, size: int | Sequence[int] = PEAK_SIZES, repeats: int = 5,
                         threads: int | None = None) -> Peak:
    """Peak of a one-node MatMul run by OpenVINO on the CPU with the inference precision set to
    ``precision`` (fp32 or bf16), or of a QDQ MatMul for int8: the fastest of ``size``."""
    import openvino as ov

    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"no OpenVINO matmul peak for {precision} (fp32, bf16 and int8 are measured)")
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads

    def seconds(n: int) -> float:
        rng = np.random.default_rng(0)
        blob, a = _qdq_matmul_graph(n, rng) if precision == "int8" else _matmul_graph("fp32", n, rng)[:2]
        request = core.compile_model(core.read_model(blob, b""), "CPU", config).create_infer_request()
        return median_seconds(lambda: request.infer({0: a}, share_inputs=True), repeats)

    rate, best = best_matmul_rate(seconds, size)
    kind = "QDQ MatMul (uint8 x int8)" if precision == "int8" else f"MatMul, inference precision {config['INFERENCE_PRECISION_HINT']}"
    n = "default" if threads is None else str(threads)
    return Peak("openvino", "cpu", precision, rate,
                f"openvino {ov.__version__} one-node {kind} {size_note(size, best)} on cpu, {n} thread(s), "
                f"median of {repeats}")


# ------------------------------------------------------------------------------------- all
def measure_peaks(
    needed: Iterable[tuple[str, str, str]],
    *,
    sizes: int | Sequence[int] = PEAK_SIZES,
    copy_mib: int = 128,
    repeats: int = 5,
    threads: int | None = None,
) -> PeakSet:
    """Measure every (runtime, device, precision) in ``needed``, each the fastest matmul over
    ``sizes``, plus each device's copy bandwidth.

    A peak that cannot be measured here (no CUDA, no onnxruntime, no kernel for the precision) is
    listed in ``skipped`` with the reason instead of raising.
    """
    sizes = matmul_sizes(sizes)
    out = PeakSet()
    seen = set()
    for runtime, device, precision in needed:
        key = (peak_runtime(runtime), device, precision)
        if key in seen:
            continue
        seen.add(key)
        runtime = key[0]
        try:
            if device == "cuda" and not torch.cuda.is_available():
                raise UsageError("skipped: no CUDA device")
            if runtime == "torch" and device == "cpu":
                peak, bw = _torch_cpu(precision, sizes, copy_mib, repeats, threads)
                if out.bytes_per_s("cpu") is None:
                    out.bandwidths.append(bw)
            elif runtime == "torch":
                peak = _torch_cuda(precision, sizes, repeats)
            elif runtime == "ort":
                from foldcnn.backends.base import (
                    default_threads,  # the ORT backend's own default
                )

                peak = ort_matmul_peak(precision, size=sizes, repeats=repeats, threads=default_threads(threads),
                                       device=device)
            elif runtime == "openvino" and device == "cpu":
                from foldcnn.backends.base import default_threads

                peak = openvino_matmul_peak(precision, size=sizes, repeats=repeats, threads=default_threads(threads))
            else:
                raise UsageError(f"no peak measurement for runtime {runtime!r} on {device}")
            out.peaks.append(peak)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; reported, not fatal
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            out.skipped.append(f"{runtime}/{device}/{precision}: {msg}")
    devices = {d for _, d, _ in seen}
    if "cpu" in devices and out.bytes_per_s("cpu") is None:
        _, bw = _torch_cpu("fp32", (256,), copy_mib, repeats, threads)
        out.bandwidths.append(bw)
    if "cuda" in devices and torch.cuda.is_available():
        out.bandwidths.append(_cuda_bandwidth(max(copy_mib, 1024), repeats))
    return out

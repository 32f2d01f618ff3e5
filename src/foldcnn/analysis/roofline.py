"""Roofline model: what throughput an arithmetic intensity allows on a device.

attainable FLOP/s = min(peak FLOP/s, AI x memory bandwidth)    (Williams et al., CACM 2009)
images/s          = attainable FLOP/s / FLOPs per image

Peaks are vendor datasheet numbers, dense (no 2:4 structured sparsity); for int8 "FLOP/s" means
integer ops/s. ``fp32`` on the GPUs is the plain (non-tensor-core) rate; ``tf32`` is the
tensor-core rate for fp32 data. ``measure_peak`` builds the same record for the machine it runs on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from foldcnn.analysis.counting import AnalysisReport
from foldcnn.errors import UsageError
from foldcnn.precision import BYTES_PER_ELEMENT, TORCH_DTYPES, check_precision
from foldcnn.timing import median_seconds

__all__ = ["Device", "DEVICES", "PEAK_SIZES", "Attainable", "attainable", "best_matmul_rate",
           "copy_bandwidth", "matmul_peak", "matmul_sizes", "measure_peak", "size_note", "torch_threads"]

_T = 1e12  # tera


@dataclass(frozen=True)
class Device:
    """Peak compute per precision (FLOP/s, dense) and memory bandwidth (bytes/s) of one device."""

    name: str
    peak_flops_per_s: dict[str, float]
    bytes_per_s: float
    source: str = field(default="")

    def peak(self, precision: str) -> float:
        check_precision(precision)
        if precision not in self.peak_flops_per_s:
            raise UsageError(
                f"device {self.name!r} has no {precision} peak (its datasheet lists none); "
                f"available: {', '.join(self.peak_flops_per_s)}"
            )
        return self.peak_flops_per_s[precision]


DEVICES: dict[str, Device] = {
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (nvidia.com/en-us/data-center/h200):
    # FP32 67 TFLOPS; TF32 989, BF16/FP16 1,979 TFLOPS and INT8 3,958 TOPS are "with sparsity",
    # so dense is half; GPU memory bandwidth 4.8 TB/s.
    "h200": Device(
        "h200",
        {"fp32": 67 * _T, "tf32": 494.5 * _T, "fp16": 989.5 * _T, "bf16": 989.5 * _T, "int8": 1979 * _T},
        4.8e12,
        "https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM; sparse tensor figures halved)",
    ),
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (nvidia.com/en-us/data-center/h100):
    # same tensor-core figures as H200 (same GH100 silicon), sparse figures halved; 3.35 TB/s.
    "h100": Device(
        "h100",
        {"fp32": 67 * _T, "tf32": 494.5 * _T, "fp16": 989.5 * _T, "bf16": 989.5 * _T, "int8": 1979 * _T},
        3.35e12,
        "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM; sparse tensor figures halved)",
    ),
    # NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column: FP32 19.5 TFLOPS, TF32 156,
    # BF16/FP16 312 TFLOPS, INT8 624 TOPS (dense; the starred values are sparse); 2,039 GB/s.
    "a100": Device(
        "a100",
        {"fp32": 19.5 * _T, "tf32": 156 * _T, "fp16": 312 * _T, "bf16": 312 * _T, "int8": 624 * _T},
        2.039e12,
        "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
        "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (A100 80GB SXM)",
    ),
    # NVIDIA Tesla V100 datasheet, V100 SXM2 column: single precision 15.7 TFLOPS, tensor
    # (fp16) 125 TFLOPS, HBM2 900 GB/s. Volta has no bf16 and the datasheet lists no int8 rate.
    "v100": Device(
        "v100",
        {"fp32": 15.7 * _T, "fp16": 125 * _T},
        900e9,
        "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
        " (V100 SXM2)",
    ),
    # NVIDIA T4 Tensor Core GPU datasheet: single precision 8.1 TFLOPS, mixed precision
    # (FP16/FP32) 65 TFLOPS, INT8 130 TOPS; GDDR6 320 GB/s (256-bit bus at 10 Gbps).
    # Turing has no bf16.
    "t4": Device(
        "t4",
        {"fp32": 8.1 * _T, "fp16": 65 * _T, "int8": 130 * _T},
        320e9,
        "https://www.nvidia.com/en-us/data-center/tesla-t4/ (T4 datasheet)",
    ),
}


@dataclass(frozen=True)
class Attainable:
    """Roofline prediction for one (model report, device, precision)."""

    device: str
    precision: str
    images_per_s: float
    flops_per_s: float  # attainable: min(peak, AI x bandwidth)
    bound: str  # "compute" or "memory"
    peak_flops_per_s: float
    bytes_per_s: float
    ridge_point: float  # FLOPs/byte where the two roofs meet: peak / bandwidth


def attainable(report: AnalysisReport, device: Device, precision: str) -> Attainable:
    """Predicted images/s of ``report``'s model on ``device`` at ``precision``.

    The report must count the same element size as ``precision`` (fp16 -> analyze(...,
    bytes_per_element=2)); otherwise its intensity belongs to another precision.
    """
    peak = device.peak(precision)
    if report.bytes_per_element != BYTES_PER_ELEMENT[precision]:
        raise UsageError(
            f"the report counts {report.bytes_per_element} bytes per element but {precision} has "
            f"{BYTES_PER_ELEMENT[precision]}; rerun analyze(model, bytes_per_element={BYTES_PER_ELEMENT[precision]})"
        )
    memory_roof = report.arithmetic_intensity * device.bytes_per_s
    flops_per_s = min(peak, memory_roof)
    return Attainable(
        device=device.name,
        precision=precision,
        images_per_s=flops_per_s / report.flops_per_image,
        flops_per_s=flops_per_s,
        bound="compute" if peak <= memory_roof else "memory",
        peak_flops_per_s=peak,
        bytes_per_s=device.bytes_per_s,
        ridge_point=peak / device.bytes_per_s,
    )


# ------------------------------------------------------------------------------ measured
def _matmul_fn(precision: str, size: int) -> Callable[[], object]:
    gen = torch.Generator().manual_seed(0)
    if precision == "int8":
        if not hasattr(torch, "_int_mm"):
            raise UsageError("this torch build has no int8 matrix multiply (torch._int_mm)")
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=gen)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=gen)
        return lambda: torch._int_mm(a, b)
    if precision not in TORCH_DTYPES:
        raise UsageError(
            f"measure_peak supports {', '.join([*TORCH_DTYPES, 'int8'])} on CPU, got {precision!r}"
        )
    a = torch.randn(size, size, generator=gen).to(TORCH_DTYPES[precision])
    b = torch.randn(size, size, generator=gen).to(TORCH_DTYPES[precision])
    return lambda: torch.mm(a, b)


PEAK_SIZES = (1024, 2048, 3072, 4096)  # matmul sizes the measured peak is the best of


def matmul_sizes(size: int | Sequence[int]) -> tuple[int, ...]:
    """One matmul size or several, as a tuple of positive integers (ValueError otherwise)."""
    sizes = (size,) if isinstance(size, int) else tuple(size) if isinstance(size, Sequence) else ()
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise UsageError(f"matmul sizes must be integers >= 1, got {size!r}")
    return sizes


def best_matmul_rate(run_at: Callable[[int], float], size: int | Sequence[int]) -> tuple[float, int]:
    """(highest FLOP/s, the size that reached it) over ``size``: ``run_at(n)`` returns the
    seconds of one n x n matmul (2*n^3 FLOPs). No single size is the fastest everywhere (a
    2048 bf16 matmul ran at 2.4 TFLOP/s here, a 3072 one at 2.7), and a peak set too low makes
    every "fraction of peak" look better than it is."""
    rates = {n: 2 * n**3 / run_at(n) for n in matmul_sizes(size)}
    best = max(rates, key=rates.get)
    return rates[best], best


def size_note(size: int | Sequence[int], best: int) -> str:
    """``2048x2048`` or ``3072x3072 (the fastest of 1024/2048/3072/4096)``."""
    sizes = matmul_sizes(size)
    if len(sizes) == 1:
        return f"{best}x{best}"
    return f"{best}x{best} (the fastest of {'/'.join(map(str, sizes))})"


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with torch's intra-op thread count set to ``threads`` (None: as it is)."""
    old = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def matmul_peak(precision: str, size: int | Sequence[int] = PEAK_SIZES, repeats: int = 5) -> tuple[float, int]:
    """(FLOP/s, n) of the fastest torch n x n matmul over ``size``, at torch's current threads."""
    if repeats < 1:
        raise UsageError("repeats must be >= 1")
    return best_matmul_rate(lambda n: median_seconds(_matmul_fn(precision, n), repeats), size)


def copy_bandwidth(copy_mib: int = 128, repeats: int = 5) -> float:
    """Bytes/s (read + written) of a ``copy_mib`` MiB fp32 ``copy_``, at torch's current threads."""
    if copy_mib < 1 or repeats < 1:
        raise UsageError("copy_mib and repeats must be >= 1")
    src = torch.ones(copy_mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), repeats)


def measure_peak(
    precision: str = "fp32",
    threads: int | None = None,
    *,
    size: int | Sequence[int] = PEAK_SIZES,
    copy_mib: int = 128,
    repeats: int = 5,
) -> Device:
    """Measure this CPU: the fastest ``n`` x ``n`` matmul (2*n^3 FLOPs) over ``size`` (one size
    or several) and a ``copy_mib`` MiB copy.

    Bandwidth counts bytes read + bytes written. ``copy_mib`` should exceed the last-level cache
    (128 MiB does on current desktop and server CPUs). ``threads`` sets torch's intra-op threads
    for the measurement only. Takes a few seconds; medians over ``repeats`` after one warm-up.
    Nothing is cached: call it in the same run as the benchmark it is compared with.
    """
    sizes = matmul_sizes(size)
    if repeats < 1 or copy_mib < 1:
        raise UsageError("size, copy_mib and repeats must be >= 1")
    with torch_threads(threads) as used:
        flops_per_s, best = matmul_peak(precision, sizes, repeats)
        bytes_per_s = copy_bandwidth(copy_mib, repeats)
    return Device(
        name="measured",
        peak_flops_per_s={precision: flops_per_s},
        bytes_per_s=bytes_per_s,
        source=f"measured here: torch {precision} {size_note(sizes, best)} matmul and a {copy_mib} MiB copy, "
        f"{used} thread(s), median of {repeats}",
    )

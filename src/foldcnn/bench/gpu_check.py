"""The GPU check (experiments/published/gpu_check.py): every CUDA engine against eager fp32, then the
``gpu-check`` preset (six game CNNs, f=1 vs f=4, batch 1,024, fp16) within a time budget.

    python experiments/published/gpu_check.py --out runs/gpu-check     # under 8 minutes on one GPU

Pure planning and formatting here (testable without a GPU); the script does the running.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from foldcnn.bench.configs import BenchConfig, estimate_seconds
from foldcnn.bench.tables import format_table

__all__ = ["DROP_ORDER", "GPU_TARGET", "NO_CUDA", "check_engine", "cuda_engines", "fit_budget", "format_gpu_table"]

GPU_TARGET = 2.5  # folded f=4 / original on the same engine: the paper's headline
NO_CUDA = "no CUDA GPU is visible to torch here: run experiments/published/gpu_check.py on a machine with one"
# Engines left out first when the estimate passes the budget: the slowest to build per model.
DROP_ORDER = ("tensorrt", "compile")
# Largest |difference| to eager fp32 on the CPU, relative to the logits' scale (TF32 may run fp32 convolutions).
TOLERANCE = {"fp32": 1e-2, "fp16": 3e-2, "bf16": 6e-2}


def cuda_engines(tensorrt: bool) -> list[tuple[str, str]]:
    """(backend, precision) pairs usable on CUDA here, plus TensorRT fp16 when installed."""
    from foldcnn.backends import available_backends

    pairs = list(available_backends("cuda"))
    return pairs + ([("tensorrt", "fp16")] if tensorrt else [])


def check_engine(engine, reference: np.ndarray, x: torch.Tensor, precision: str) -> dict:
    """Run ``engine`` on folded inputs ``x`` (B, f*C, H, W) and compare with ``reference``, the
    eager fp32 logits on the CPU: ``{"max_rel_diff", "tolerance", "ok"}``."""
    ref = reference
    got = np.asarray(engine.run(x), dtype=np.float32)
    if got.shape != ref.shape:
        return {"max_rel_diff": None, "tolerance": TOLERANCE[precision], "ok": False,
                "error": f"logits of shape {got.shape}, expected {ref.shape}"}
    rel = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
    return {"max_rel_diff": rel, "tolerance": TOLERANCE[precision], "ok": rel <= TOLERANCE[precision]}


def fit_budget(configs: Sequence[BenchConfig], trials: int, min_seconds: float,
               budget_s: float) -> tuple[list[BenchConfig], list[str]]:
    """Leave out engines in DROP_ORDER until the estimated sweep fits ``budget_s``; the notes say
    what was left out and why."""
    configs, notes = list(configs), []
    for backend in DROP_ORDER:
        est = estimate_seconds(configs, trials, min_seconds)
        if est <= budget_s:
            break
        if any(c.backend == backend for c in configs):
            configs = [c for c in configs if c.backend != backend]
            notes.append(f"{backend} left out: the sweep was estimated at {est / 60:.1f} min, over the "
                         f"{budget_s / 60:.1f} min budget")
    return configs, notes


def format_gpu_table(records: list[dict]) -> str:
    """Per model and engine: f=1 and f=4 images/s at the largest batch and the ratio, with the target."""
    rows = []
    by = {(r["model"], r["backend"], r["precision"], r["fold"]): r for r in records}
    for (model, backend, precision, fold), r in by.items():
        if fold == 1:
            continue
        base = by.get((model, backend, precision, 1))
        if base is None:
            continue
        ratio = r["images_per_s"] / base["images_per_s"]
        rows.append([model, f"{backend}/{precision}", f"{base['images_per_s']:,.0f}", f"f={fold}: {r['images_per_s']:,.0f}",
                     f"{ratio:.2f}x", "met" if ratio >= GPU_TARGET else "not met"])
    return format_table(["model", "engine", "f=1 images/s", "folded images/s", "folded / f=1",
                         f"target >= {GPU_TARGET}x"], rows)

"""Whether a lower precision (bf16, int8) answers as fp32 does: the share of images whose class
an engine gives as eager fp32 gives it. A lower precision is worth its speed only where this is
high (``MIN_AGREEMENT``); ``foldcnn fold`` and ``foldcnn bench --tune`` report it."""

from __future__ import annotations

import copy

import torch

from foldcnn.backends.base import prediction_agreement
from foldcnn.backends.registry import create_backend

__all__ = ["MIN_AGREEMENT", "engine_agreement"]

# An engine at a lower precision stands in for fp32 only when at least this share of images gets
# fp32's class from it (the bar docs/benchmarks.md and docs/search.md hold int8 to).
MIN_AGREEMENT = 0.99


def engine_agreement(model, images: torch.Tensor, backend: str, precision: str, *, device: str = "cpu",
                     threads: int | None = None, calibration: torch.Tensor | None = None) -> float:
    """Share of ``images`` (uint8, N x C x H x W, one image per row: folded by fold-mates in order,
    the last fold padded) whose class ``backend``/``precision`` gives as eager fp32 gives it.
    int8 calibrates on ``calibration`` (default: the images themselves)."""
    from foldcnn.fold import fold_images, pad_to_fold

    if precision == "fp32" and backend == "eager":
        return 1.0
    padded, n = pad_to_fold(images, model.fold)
    x = fold_images(padded.float() / 255, model.fold).contiguous()
    cal = images if calibration is None else calibration
    with create_backend(copy.deepcopy(model), "eager", device=device, max_batch=x.shape[0], threads=threads) as ref, \
            create_backend(copy.deepcopy(model), backend, precision=precision, device=device, max_batch=x.shape[0],
                           calibration=cal, threads=threads) as low:
        a, b = ref.run(x), low.run(x)
    k = model.num_classes
    return prediction_agreement(a.reshape(-1, k)[:n], b.reshape(-1, k)[:n])

"""Where and in which precision training runs: CPU or CUDA, fp32 or bf16 autocast."""

from __future__ import annotations

import contextlib

import torch

from foldcnn.errors import UsageError
from foldcnn.precision import torch_dtype

__all__ = ["bf16_supported", "resolve_precision", "resolve_device", "autocast_for"]


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 arithmetic is fast here: AVX-512 bf16 or AMX on a CPU, Ampere or later on CUDA."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, c, lambda: False)() for c in checks)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (GPU ``local_rank``) or ``auto`` (cuda when one is visible)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device 'cuda' was asked for but no CUDA GPU is visible; use device 'cpu'")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def autocast_for(precision: str, device: torch.device | str = "cpu"):
    """An autocast context for the forward pass (a no-op for fp32)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch_dtype(precision))

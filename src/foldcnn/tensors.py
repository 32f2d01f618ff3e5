"""Torch tensors and numpy arrays told apart without importing torch (a tensor can only come from a
caller that imported it), so the torch-free inference path accepts tensors too. Lowest layer."""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["is_array", "is_tensor", "tensor_to_numpy"]


def is_tensor(x) -> bool:
    """True for a torch tensor."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_array(x) -> bool:
    """A numpy array or a torch tensor."""
    return isinstance(x, np.ndarray) or is_tensor(x)


def tensor_to_numpy(x) -> np.ndarray:
    """A torch tensor -> a numpy array over the same memory where possible (CPU; bfloat16, which
    numpy lacks, as float32)."""
    x = x.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    if str(x.dtype) == "torch.bfloat16":
        x = x.float()
    return x.numpy()

"""Precision names, their torch dtypes and their bytes per element: one table for every layer.

Backends, the roofline, the benchmarks and training's autocast all name precisions by these
strings; they used to keep their own maps, which could drift. ``tf32`` is fp32 storage with
TF32 tensor-core matmuls (NVIDIA A100 whitepaper, 2020) and ``int8`` a quantized element, so
neither has a float dtype to cast to.

Importing this module does not import torch (the torch-free runtime validates precision names
with it); ``TORCH_DTYPES`` and the functions that return a dtype import torch when first used.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from foldcnn.errors import UnknownNameError, UsageError

__all__ = ["BYTES_PER_ELEMENT", "PRECISIONS", "TORCH_DTYPES", "HALF_PRECISIONS", "torch_dtype", "cast_dtype",  # noqa: F822 - TORCH_DTYPES: module __getattr__
           "check_precision", "precision_rank", "with_precision_key"]

# Bytes per element of each precision, in the order the CLI and every table list them.
BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1}
# The precisions an inference engine runs a model at (tf32 is a matmul mode of fp32, not one of them).
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Precisions under which weights and inputs are cast down from fp32.
HALF_PRECISIONS = ("bf16", "fp16")

if TYPE_CHECKING:
    import torch


@functools.cache
def _torch_dtypes() -> dict[str, torch.dtype]:
    """Float storage types: what a tensor of this precision is made of."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def __getattr__(name: str):
    if name == "TORCH_DTYPES":  # built on first use, so that importing this module needs no torch
        return _torch_dtypes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_dtype(precision: str) -> torch.dtype:
    """The float dtype of ``precision`` (fp32, fp16, bf16)."""
    try:
        return _torch_dtypes()[precision]
    except KeyError:
        raise UnknownNameError(f"precision {precision!r} has no float dtype; choose one of "
                               f"{', '.join(_torch_dtypes())}") from None


def cast_dtype(precision: str) -> torch.dtype | None:
    """The dtype a model and its inputs are cast to under ``precision``; None keeps fp32 tensors
    (fp32, and int8, whose quantized layers take fp32 activations)."""
    return _torch_dtypes()[precision] if precision in HALF_PRECISIONS else None


def check_precision(precision: str, what: str = "precision") -> str:
    """``precision`` if it is a precision name (BYTES_PER_ELEMENT), else one UsageError naming them."""
    if precision not in BYTES_PER_ELEMENT:
        raise UsageError(f"{what} must be one of {', '.join(BYTES_PER_ELEMENT)}, got {precision!r}")
    return precision


def precision_rank(precision: str) -> int:
    """Where ``precision`` sorts in a table: BYTES_PER_ELEMENT's order, unknown names last."""
    order = list(BYTES_PER_ELEMENT)
    return order.index(precision) if precision in order else len(order)


def with_precision_key(record: dict) -> dict:
    """``record`` keyed ``precision``: files written before foldcnn 0.2.0 (bench JSON format_version 1,
    its CSV, tune rankings) named the precision ``dtype``; every reader of such a file goes through here."""
    if "dtype" not in record:
        return record
    return {("precision" if k == "dtype" else k): v for k, v in record.items()}

"""Folding as pure tensor operations (docs/design.md, "Layout").

Layout contract, for a fold factor f:

* images (N, C, H, W) with N a multiple of f become folded inputs (N/f, f*C, H, W);
  image i goes to folded input i // f, channel slots [C*(i % f), C*(i % f) + C).
* folded logits (N/f, f*K) become per-image logits (N, K); logits [j*K, (j+1)*K) of
  folded row g belong to image g*f + j.

Both directions are plain reshapes, so they are views of contiguous inputs. Every function takes a
torch tensor or a numpy array and returns the same kind: this module imports neither torch nor
anything that does, so the torch-free inference path (an exported graph on onnxruntime or
OpenVINO) folds with these very functions.
"""

from __future__ import annotations

import numpy as np

from foldcnn.errors import UsageError, UsageTypeError

__all__ = ["check_fold", "fold_images", "unfold_logits", "pad_to_fold", "padded_count", "round_batch"]


def check_fold(fold: object) -> int:
    """Return ``fold`` as an int after checking it is an integer >= 1."""
    if isinstance(fold, np.integer):
        fold = int(fold)
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise UsageTypeError(f"fold must be an int >= 1 (1 means the unfolded CNN), got {fold!r}")
    if fold < 1:
        raise UsageError(f"fold must be an int >= 1 (1 means the unfolded CNN), got {fold}")
    return fold


def _check_multiple(n: int, fold: int, what: str) -> None:
    if n % fold:
        raise UsageError(
            f"{what} has {n} rows, which is not a multiple of fold={fold}; "
            f"pad it first with foldcnn.pad_to_fold(x, {fold}) and discard the padded outputs"
        )


def fold_images(x, fold: int):
    """Stack groups of ``fold`` consecutive images along channels.

    (N, C, H, W) -> (N/f, f*C, H, W), a torch tensor or a numpy array (the same kind back).
    Returns a view when ``x`` is contiguous.
    """
    fold = check_fold(fold)
    if x.ndim != 4:
        raise UsageError(
            f"fold_images expects a batch of images (N, C, H, W), got a tensor of shape "
            f"{tuple(x.shape)}; add a batch axis with x.unsqueeze(0) for a single image"
        )
    n, c, h, w = x.shape
    _check_multiple(n, fold, "the image batch")
    return x.reshape(n // fold, fold * c, h, w)


def unfold_logits(y, fold: int):
    """Split folded logits back into per-image logits: (N/f, f*K) -> (N, K) (torch or numpy)."""
    fold = check_fold(fold)
    if y.ndim != 2:
        raise UsageError(
            f"unfold_logits expects folded logits (N/f, f*K), got a tensor of shape {tuple(y.shape)}"
        )
    g, fk = y.shape
    if fk % fold:
        raise UsageError(
            f"folded logits have {fk} columns, which is not a multiple of fold={fold}; "
            f"was the model built with fold={fold}?"
        )
    return y.reshape(g * fold, fk // fold)


def padded_count(n: int, fold: int) -> int:
    """Smallest multiple of ``fold`` that is >= ``n``."""
    fold = check_fold(fold)
    return -(-n // fold) * fold


def round_batch(batch_size: int, fold: int) -> int:
    """Images per batch rounded down to whole folded inputs: a multiple of ``fold``, at least ``fold``.

    Every batch size the user gives (training step, evaluation, Predictor, Ray engine, server,
    batch loader) goes through this, so a size that is not a multiple of f means the same everywhere.
    """
    fold = check_fold(fold)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size counts images and must be an int >= 1, got {batch_size!r}")
    return max(fold, batch_size // fold * fold)


def pad_to_fold(x, fold: int) -> tuple:
    """Zero-pad the batch axis of ``x`` (N, ...) up to a multiple of ``fold``.

    Returns ``(padded, n_real)``: callers keep the first ``n_real`` per-image outputs and
    discard the rest. When N is already a multiple of ``fold`` the input itself is returned.
    """
    fold = check_fold(fold)
    if x.ndim < 1:
        raise UsageError("pad_to_fold expects a batch (N, ...), got a 0-d tensor")
    n = x.shape[0]
    target = padded_count(n, fold)
    if target == n:
        return x, n
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.zeros((target - n, *x.shape[1:]), x.dtype)]), n
    pad = x.new_zeros((target - n, *x.shape[1:]))  # a torch tensor: torch is imported already
    return _torch_cat(x, pad), n


def _torch_cat(x, pad):
    import torch  # only reached with a torch tensor in hand

    return torch.cat([x, pad], dim=0)

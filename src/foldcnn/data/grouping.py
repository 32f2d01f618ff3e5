"""Fold groups: which f images share one folded input, for training and evaluation.

Consecutive video frames are near duplicates, so images are grouped at random (seeded), not in
storage order (docs/design.md, "Layout"). Training regroups every epoch (the epoch mixes into the
seed); evaluation keeps one fixed grouping. No image is ever dropped: when N is not a multiple
of f the last group is padded with -1 slots, which :class:`FoldBatcher` turns into zero images
with label 0 and ``mask`` False, so losses and accuracies can ignore them.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.errors import UsageError, UsageTypeError
from foldcnn.fold import check_fold, fold_images, round_batch

__all__ = ["fold_groups", "gather_fold_batch", "FoldBatcher"]

# Seed-sequence tags keep evaluation groupings apart from every training epoch's grouping.
_EVAL_TAG, _TRAIN_TAG = 0xE7A1, 0x7A1


def _check_int(name: str, v, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise UsageError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def _generator(seed: int, epoch: int | None) -> torch.Generator:
    entropy = [seed, _EVAL_TAG] if epoch is None else [seed, _TRAIN_TAG, epoch]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def fold_groups(n: int, fold: int, seed: int | None = None, epoch: int | None = None) -> torch.Tensor:
    """Partition ``range(n)`` into groups of ``fold``: int64 (ceil(n/f), f), -1 for padding.

    ``seed=None`` keeps storage order (image i in group i // f, as ``fold_images`` does).
    With a seed the images are shuffled first; ``epoch=None`` gives the fixed evaluation
    grouping, an int epoch gives that epoch's training grouping. Padding slots (at most
    f - 1) sit at the end of the last group. Every index in ``range(n)`` appears exactly once.
    """
    n, fold = _check_int("n", n), check_fold(fold)
    if seed is None:
        if epoch is not None:
            raise UsageError("epoch only changes a seeded grouping; pass a seed too")
        order = torch.arange(n)
    else:
        seed = _check_int("seed", seed)
        epoch = None if epoch is None else _check_int("epoch", epoch)
        order = torch.randperm(n, generator=_generator(seed, epoch))
    pad = -n % fold
    if pad:
        order = torch.cat([order, torch.full((pad,), -1, dtype=torch.int64)])
    return order.view(-1, fold)


def gather_fold_batch(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, fold: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``index`` (B,), B a multiple of f, -1 = padding -> one folded batch.

    Returns ``(inputs (B/f, f*C, H, W) float32, labels (B,) int64, mask (B,) bool)``; uint8
    images are scaled to [0, 1] here; padded slots get zero images, label 0 and mask False.
    """
    mask = index >= 0
    safe = index.clamp(min=0)
    x = images.index_select(0, safe)
    x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
    y = labels.index_select(0, safe)
    if not bool(mask.all()):
        x[~mask] = 0
        y = y.masked_fill(~mask, 0)
    return fold_images(x, fold), y, mask


class FoldBatcher:
    """Batches of folded inputs over an in-memory data set, for training and evaluation.

    ``data`` is an ArrayDataset or ``(images (N, C, H, W) uint8 or float, labels (N,))``.
    ``batch_size`` counts images and is rounded down to a multiple of ``fold`` (at least
    ``fold``). Iterating yields ``(inputs (B/f, f*C, H, W) float32, labels (B,), mask (B,))``
    (plus ``index (B,)``, -1 for padding, with ``return_index=True``); the last batch may be
    smaller. ``shuffle=True`` regroups every epoch (call :meth:`set_epoch` before each);
    ``shuffle=False`` keeps one seeded grouping (evaluation); ``seed=None`` with
    ``shuffle=False`` keeps storage order.
    """

    def __init__(self, data, fold: int, batch_size: int, *, seed: int | None = 0, shuffle: bool = True,
                 return_index: bool = False):
        if isinstance(data, ArrayDataset):
            images, labels = data.images, data.labels
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            images, labels = data
        else:
            raise UsageTypeError("FoldBatcher takes an ArrayDataset or a tuple (images (N, C, H, W), "
                            f"labels (N,)); got {type(data).__name__} (load other datasets into memory first)")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or labels.shape != images.shape[:1]:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise UsageError(f"need images (N, C, H, W) and labels (N,), got {got} and {tuple(labels.shape)}")
        self.fold = check_fold(fold)
        self.batch_size = round_batch(_check_int("batch_size", batch_size, 1), self.fold)
        if shuffle and seed is None:
            raise UsageError("shuffle=True needs a seed (seed=None means storage order)")
        self.images, self.labels = images, labels
        self.seed, self.shuffle, self.return_index = seed, shuffle, return_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s grouping (only matters with ``shuffle=True``)."""
        self.epoch = _check_int("epoch", epoch)

    def groups(self) -> torch.Tensor:
        """The current grouping, int64 (G, f) with -1 for padding."""
        return fold_groups(len(self.labels), self.fold, self.seed, self.epoch if self.shuffle else None)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    @property
    def padding(self) -> int:
        """Padded (wasted) slots per pass: at most f - 1."""
        return -self.num_images % self.fold

    def __len__(self) -> int:
        groups = math.ceil(self.num_images / self.fold)
        return math.ceil(groups / (self.batch_size // self.fold))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        flat = self.groups().view(-1)
        for start in range(0, len(flat), self.batch_size):
            index = flat[start : start + self.batch_size]
            batch = gather_fold_batch(self.images, self.labels, index, self.fold)
            yield (*batch, index) if self.return_index else batch

    def __repr__(self) -> str:
        return (f"FoldBatcher(images={self.num_images}, fold={self.fold}, batch_size={self.batch_size}, "
                f"batches={len(self)}, padding={self.padding}, shuffle={self.shuffle}, seed={self.seed}, "
                f"epoch={self.epoch})")

"""Curriculum for folded models: train on a few classes first, add classes as the run goes on.

The paper (docs/design.md, "Training recipe") starts folded game models on max(K // 10, f) classes in label
order and adds max(K // 10, 1) classes every 60 of up to 1500 epochs. Our budgets are tens of
epochs, so the additions are spread evenly over a fraction of the run instead: all K classes
are in by ``end_fraction`` of the epochs (default 0.6), whatever the epoch count.
"""

from __future__ import annotations

import math

import torch

from foldcnn.data.grouping import fold_groups
from foldcnn.errors import UsageError
from foldcnn.fold import check_fold

__all__ = ["DEFAULT_END_FRACTION", "curriculum_schedule", "active_pool", "stage_sizes", "epoch_groups"]

DEFAULT_END_FRACTION = 0.6


def curriculum_schedule(num_classes: int, fold: int, epochs: int, end_fraction: float = DEFAULT_END_FRACTION
                        ) -> list[int]:
    """Active classes per epoch: ``schedule[e]`` means labels ``0 .. schedule[e] - 1`` train in epoch e.

    Starts at ``min(K, max(K // 10, fold))`` classes; ``max(K // 10, 1)`` classes join at evenly
    spaced epochs so that every class is in from epoch ``round(end_fraction * epochs)`` on (at
    the latest the last epoch, so the best checkpoint can be chosen with all classes in). The
    list is non-decreasing, has ``epochs`` entries and ends with ``num_classes``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"epochs must be an int >= 1, got {epochs!r}")
    if not (isinstance(end_fraction, (int, float)) and 0 < end_fraction <= 1):
        raise UsageError(f"the curriculum end must be a fraction of the run in (0, 1], got {end_fraction!r}")
    k, fold = num_classes, check_fold(fold)
    start, step = min(k, max(k // 10, fold)), max(k // 10, 1)
    end_epoch = min(epochs - 1, round(end_fraction * epochs))  # first epoch with every class
    if start >= k or end_epoch <= 0:
        return [k] * epochs
    additions = math.ceil((k - start) / step)
    # Addition j (1..additions) happens at epoch ceil(j * end_epoch / additions): the first
    # stage always lasts at least one epoch and the last addition lands exactly on end_epoch.
    joins = [-(-j * end_epoch // additions) for j in range(1, additions + 1)]
    return [min(k, start + step * sum(1 for j in joins if j <= e)) for e in range(epochs)]


def active_pool(labels: torch.Tensor, active: int) -> torch.Tensor:
    """Indices (ascending, int64) of the images whose label is one of the ``active`` first classes."""
    return (labels < active).nonzero().view(-1)


def stage_sizes(labels: torch.Tensor, num_classes: int, schedule: list[int]) -> list[int]:
    """Training images per epoch under ``schedule``; raises if a stage would have none."""
    counts = torch.bincount(labels, minlength=num_classes).cumsum(0).tolist()
    sizes = [counts[a - 1] for a in schedule]
    for e, (a, n) in enumerate(zip(schedule, sizes)):
        if n == 0:
            raise UsageError(f"curriculum epoch {e + 1} trains on classes 0..{a - 1}, which have no training "
                             "images; give every class training images or train without --curriculum")
    return sizes


def epoch_groups(labels: torch.Tensor, active: int, num_classes: int, fold: int, seed: int, epoch: int):
    """This epoch's fold groups (G, f) of training-image indices (-1 = padding), active classes only."""
    if active >= num_classes:
        return fold_groups(len(labels), fold, seed, epoch)
    pool = active_pool(labels, active)
    local = fold_groups(len(pool), fold, seed, epoch)
    return torch.where(local >= 0, pool[local.clamp(min=0)], local)

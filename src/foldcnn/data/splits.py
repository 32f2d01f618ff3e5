"""Train/validation/test splits.

Video frames next to each other are near duplicates, so a random split of a video would put
the same scene into training and test. NoScope split its videos into contiguous chunks in time
(docs/design.md, "Data tasks and classes"); :func:`temporal_split` does that, optionally leaving ``gap`` frames unused
between two splits so that the frames on either side of a boundary are not near duplicates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.errors import UsageError

__all__ = ["SPLIT_SEED_OFFSETS", "split_seed", "temporal_split", "random_split", "stratified_split",
           "split_dataset"]

SPLIT_NAMES = ("train", "val", "test")
# Seeds of the three splits of a generated data set, offset from its seed. `foldcnn train --task T
# --data-seed S` and `foldcnn data game T --seed S` both use them, so the exported folders hold
# exactly the images such a run trains, validates and tests on (for the same split sizes).
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def split_seed(seed: int, split: str) -> int:
    """The seed of one split of a generated data set (different for every split)."""
    if split not in SPLIT_SEED_OFFSETS:
        raise UsageError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    return int(seed) + SPLIT_SEED_OFFSETS[split]


def _check(n: int, fractions: Sequence[float], names: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise UsageError(f"the number of items must be an int >= 0, got {n!r}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 1 or (fr <= 0).any():
        raise UsageError(f"fractions must be positive numbers, got {fractions!r}")
    if abs(fr.sum() - 1) > 1e-6:
        raise UsageError(f"fractions must sum to 1, got {list(fractions)} (sum {fr.sum():g})")
    names = tuple(names)[: len(fr)] if len(fr) <= len(names) else ()
    if len(names) != len(fr) or len(set(names)) != len(names):
        raise UsageError(f"need {len(fr)} distinct split names for fractions {list(fractions)}, got {names}")
    return fr, names


def _sizes(n: int, fr: np.ndarray) -> list[int]:
    bounds = np.rint(np.cumsum(fr) * n).astype(np.int64)
    bounds[-1] = n
    return np.diff(np.concatenate([[0], bounds])).tolist()


def temporal_split(n_frames: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, gap: int = 0,
                   names: Sequence[str] = SPLIT_NAMES) -> dict[str, range]:
    """Contiguous index ranges in time order, e.g. ``{"train": range(0, 600), "val": ..., ...}``.

    ``gap`` frames are left out between consecutive splits (they belong to no split); the
    fractions apply to the ``n_frames - gap * (k - 1)`` frames that remain. Every split must
    get at least one frame.
    """
    fr, names = _check(n_frames, fractions, names)
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise UsageError(f"gap must be an int >= 0, got {gap!r}")
    usable = n_frames - gap * (len(fr) - 1)
    sizes = _sizes(max(usable, 0), fr)
    if usable <= 0 or min(sizes) < 1:
        raise UsageError(f"{n_frames} frames are too few for fractions {list(fractions)} with gap={gap}: "
                         f"a split would be empty")
    out, start = {}, 0
    for name, size in zip(names, sizes):
        out[name] = range(start, start + size)
        start += size + gap
    return out


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.2), *, seed: int,
                 names: Sequence[str] = SPLIT_NAMES) -> dict[str, torch.Tensor]:
    """A seeded random partition of ``range(n)`` (for independent images, not video frames).

    Returns sorted int64 index tensors that together hold every index exactly once.
    """
    fr, names = _check(n, fractions, names)
    sizes = _sizes(n, fr)
    if min(sizes) < 1:
        raise UsageError(f"{n} items are too few for fractions {list(fractions)}: a split would be empty")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    parts = torch.split(perm, sizes)
    return {name: part.sort().values for name, part in zip(names, parts)}


def stratified_split(labels: torch.Tensor, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int,
                     names: Sequence[str] = SPLIT_NAMES) -> dict[str, torch.Tensor]:
    """A seeded random partition of ``range(len(labels))`` that splits every class by ``fractions``.

    Each class's images are shuffled (one generator seeded by ``seed``, classes in label order)
    and spread evenly over [0, 1) (the i-th of n at i / n); all images sorted by that position
    (ties in label order) are cut by the fractions, as :func:`random_split` cuts. So the split
    sizes are exact overall, each class lands in every split in proportion (within about one
    image), and every class has a training image when there are at least as many as classes.
    Returns sorted int64 index tensors that together hold every index exactly once; every split
    must get at least one image.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    fr, names = _check(len(labels), fractions, names)
    g = torch.Generator().manual_seed(int(seed))
    position = torch.zeros(len(labels), dtype=torch.float64)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        position[idx] = torch.arange(len(idx), dtype=torch.float64) / len(idx)
    order = torch.sort(position, stable=True).indices
    sizes = _sizes(len(labels), fr)
    if min(sizes) < 1:
        raise UsageError(f"{len(labels)} images are too few for split fractions {list(fractions)}: "
                         f"{', '.join(n for n, k in zip(names, sizes) if k < 1)} would be empty")
    return {name: part.sort().values for name, part in zip(names, torch.split(order, sizes))}


def split_dataset(dataset: ArrayDataset, split: dict[str, range | torch.Tensor]) -> dict[str, ArrayDataset]:
    """Apply a split from :func:`temporal_split` or :func:`random_split` to an ArrayDataset.

    Each part's ``meta["split"]`` records its name and indices (a range as start/stop).
    """
    out = {}
    for name, idx in split.items():
        if isinstance(idx, range):
            if idx.step != 1 or idx.start < 0 or idx.stop > len(dataset):
                raise UsageError(f"split {name!r} {idx} does not fit a dataset of {len(dataset)} items")
            part = ArrayDataset(dataset.images[idx.start : idx.stop], dataset.labels[idx.start : idx.stop],
                                dataset.classes, dataset.meta)
            info = {"name": name, "start": idx.start, "stop": idx.stop}
        else:
            idx = torch.as_tensor(idx, dtype=torch.int64)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(dataset)):
                raise UsageError(f"split {name!r} has indices outside [0, {len(dataset)})")
            part = dataset.subset(idx)
            info = {"name": name, "n": len(idx)}
        part.meta = {**dataset.meta, "split": info}
        out[name] = part
    return out

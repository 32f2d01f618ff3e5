"""The in-memory data set every reader and generator returns."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from foldcnn.errors import UsageError


class ArrayDataset(Dataset):
    """Images in memory as uint8 (N, C, H, W) with int64 labels (N,).

    ``dataset[i]`` gives ``(image, label)`` with the image as float32 (C, H, W) in [0, 1].
    ``meta`` carries provenance (generator, seed, source files) into run manifests.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        meta: dict | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise UsageError(
                f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise UsageError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UsageError(f"labels must lie in [0, {len(classes)}) for {len(classes)} classes")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255.0), int(self.labels[i])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float_images(self) -> torch.Tensor:
        """All images as float32 (N, C, H, W) in [0, 1]."""
        return self.images.float().div_(255.0)

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ArrayDataset":
        index = torch.as_tensor(index, dtype=torch.int64)
        return ArrayDataset(self.images[index], self.labels[index], self.classes, self.meta)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

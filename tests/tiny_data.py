"""Small generated data shared by the tests (imported as ``tiny_data``: pytest puts tests/ on sys.path)."""

import torch

from foldcnn.data.base import ArrayDataset


def easy_dataset(n: int, seed: int, size=(16, 16)) -> ArrayDataset:
    """3 classes told apart by which colour channel is bright: a model learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, *size), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return ArrayDataset(images, labels, ["r", "g", "b"])

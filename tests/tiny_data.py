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


def write_folder(root, layout: dict, seed: int = 0):
    """layout: {split: {class: [(H, W), ...]}} -> PNG files with the class colour bright
    (split "." writes the class folders into ``root`` itself: the unsplit layout)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for ci, (name, sizes) in enumerate(sorted(classes.items())):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(sizes):
                arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                arr[..., ci % 3] += 150
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return root


def write_user_module(tmp_path, monkeypatch, source: str, prefix: str = "user_cnn") -> str:
    """A user's model file in a fresh current directory, importable as the returned module name
    (unique, so no earlier test's import is cached), as `foldcnn ... pkg.module:Name` finds it."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# Users' CNNs for the tests of models by import path (written out by write_user_module): good
# ones of several shapes and the bad kinds issue 18 lists.
USER_CNNS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=5, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.relu(y + self.conv2(y))
        return self.fc(torch.flatten(self.pool(y), 1))


def make(num_classes=4):
    return Net(num_classes=num_classes)


def not_a_module():
    return 3


def raises(**kw):
    raise RuntimeError("bad builder")


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 2)

    def forward(self, x):
        return self.fc(x)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, groups=3)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x).mean((2, 3), keepdim=True), 1))


class WithShape(Net):
    input_shape = (3, 8, 10)


class NoBias(nn.Module):
    def __init__(self, num_classes=5, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        y = self.conv2(self.conv(x).relu()).relu()
        return self.fc(self.pool(y).flatten(1))
'''

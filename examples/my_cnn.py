"""A user's own CNN, shaped unlike the zoo: conv-BN-ReLU blocks with a residual add, global
average pooling and an MLP head. foldcnn folds it by import path:

    foldcnn fold examples.my_cnn:MyCNN --model-kwargs '{"num_classes": 11}' --data DIR --out OUT --fold 4

It maps images (N, 3, H, W) -> logits (N, num_classes) for any H x W (global pooling).
"""

from __future__ import annotations

from torch import nn


class Block(nn.Module):
    """conv3x3-BN-ReLU twice with a residual add (the same width in and out)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(y)))


class MyCNN(nn.Module):
    """Stem conv, two residual blocks (one after a stride-2 conv), global pooling, MLP head."""

    def __init__(self, num_classes: int = 10, width: int = 24, hidden: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Block(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.block2 = Block(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.head(self.pool(self.block2(self.down(self.block1(self.stem(x))))))

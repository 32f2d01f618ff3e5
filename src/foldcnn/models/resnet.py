"""ResNet-18, CIFAR variant (3x3 stem, no stem pooling), every width x width_mult."""

from __future__ import annotations

from torch import nn

from foldcnn.models.base import (
    FoldedCNN,
    init_weights_,
    resolve_channel_multiple,
    resolve_width_mult,
    scaled_width,
)
from foldcnn.models.registry import register_model


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(FoldedCNN):
    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        *,
        num_classes: int = 10,
        input_size: tuple[int, int] = (32, 32),
        fold: int = 1,
        width_mult: float | None = None,
        channel_multiple: int | None = None,
        in_channels: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ):
        super().__init__()
        self.set_interface(fold, num_classes, (in_channels, *input_size))
        wm = resolve_width_mult(self.fold, width_mult)
        cm = resolve_channel_multiple(channel_multiple)
        ws = [scaled_width(c, wm, cm) for c in widths]
        self.stem = nn.Sequential(
            conv3x3(in_channels * self.fold, ws[0]), nn.BatchNorm2d(ws[0]), nn.ReLU(inplace=True)
        )
        stages, cin = [], ws[0]
        for i, (n, cout) in enumerate(zip(blocks, ws)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes * self.fold)
        init_weights_(self)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


@register_model(
    "cifar-resnet18",
    family="cifar",
    description="ResNet-18, CIFAR variant (3x3 stem, stages 64/128/256/512)",
    num_classes=10,
    input_shape=(3, 32, 32),
)
def cifar_resnet18(**kw) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), **kw)

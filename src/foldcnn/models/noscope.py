"""NoScope's specialized binary CNNs (docs/design.md, "The paper's models"), input 3 x 50 x 50.

conv3x3 (3f -> F), ReLU, conv3x3 (F -> F), ReLU, maxpool 2;
with 4 conv layers also conv3x3 (-> 2F), ReLU, conv3x3 (2F -> 2F), ReLU, maxpool 2;
flatten, linear (-> D), ReLU, linear (-> 2f). F, 2F and D widen by width_mult.
"""

from __future__ import annotations

from torch import nn

from foldcnn.errors import UsageError
from foldcnn.models.base import (
    FoldedCNN,
    init_weights_,
    resolve_channel_multiple,
    resolve_width_mult,
    scaled_width,
)
from foldcnn.models.registry import register_model

NOSCOPE_INPUT = (3, 50, 50)

# name -> (conv layers, F, D, what is detected); docs/design.md, "The paper's models".
NOSCOPE_MODELS: dict[str, tuple[int, int, int, str]] = {
    "noscope-coral": (2, 16, 128, "person"),
    "noscope-night": (2, 16, 128, "car"),
    "noscope-taipei": (2, 64, 32, "bus"),
    "noscope-roundabout": (4, 32, 32, "car"),
}


class NoScopeCNN(FoldedCNN):
    def __init__(
        self,
        conv_layers: int,
        filters: int,
        dense: int,
        *,
        num_classes: int = 2,
        input_size: tuple[int, int] = NOSCOPE_INPUT[1:],
        fold: int = 1,
        width_mult: float | None = None,
        channel_multiple: int | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        if conv_layers not in (2, 4):
            raise UsageError(f"NoScope CNNs have 2 or 4 conv layers, got {conv_layers}")
        h, w = (int(s) for s in input_size)
        self.set_interface(fold, num_classes, (in_channels, h, w))
        wm = resolve_width_mult(self.fold, width_mult)
        cm = resolve_channel_multiple(channel_multiple)
        f1, f2, d = (scaled_width(c, wm, cm) for c in (filters, 2 * filters, dense))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels * self.fold, f1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(f1, f1, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c, h, w = f1, h // 2, w // 2
        if conv_layers == 4:
            layers += [
                nn.Conv2d(f1, f2, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(f2, f2, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c, h, w = f2, h // 2, w // 2
        if h < 1 or w < 1:
            raise UsageError(f"input size {input_size} is too small for a {conv_layers}-layer NoScope CNN")
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, d), nn.ReLU(inplace=True), nn.Linear(d, num_classes * self.fold)
        )
        init_weights_(self)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def _register(name: str) -> None:
    layers, filters, dense, what = NOSCOPE_MODELS[name]

    @register_model(
        name,
        family="noscope",
        description=f"NoScope {layers}-conv CNN ({what} present?), F={filters}, D={dense}",
        num_classes=2,
        input_shape=NOSCOPE_INPUT,
    )
    def _build(**kw) -> NoScopeCNN:
        return NoScopeCNN(layers, filters, dense, **kw)


for _name in NOSCOPE_MODELS:
    _register(_name)

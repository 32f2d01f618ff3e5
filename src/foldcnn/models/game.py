"""Game-scraping CNNs of the FoldedCNNs paper (docs/design.md, "The paper's models") and the paper's baseline.

Template, input 3 x H x W (no BatchNorm, no dropout):
  conv3x3 pad1 (3f -> c1), ReLU, maxpool k3 s2
  ``units`` x [3 x (conv3x3 pad1 -> ci, ReLU), maxpool k3 s1]
  conv3x3 pad1 (-> cn), ReLU, maxpool k3 s2
  flatten, linear (-> K*f)
with c1 = ci = 32 and cn = 8 before widening.
"""

from __future__ import annotations

import functools

from torch import nn

from foldcnn.errors import UsageError
from foldcnn.models.base import (
    FoldedCNN,
    init_weights_,
    pool_out,
    resolve_channel_multiple,
    resolve_width_mult,
    scaled_width,
)
from foldcnn.models.registry import register_model

CONVS_PER_UNIT = 3

# task name -> (classes per image, (H, W), units); docs/design.md, "The paper's models".
GAME_TASKS: dict[str, tuple[int, tuple[int, int], int]] = {
    "lol-gold-fraction": (11, (22, 52), 1),
    "lol-gold-int": (111, (22, 52), 1),
    "lol-timer-minutes": (62, (15, 35), 1),
    "apex-squad-count": (22, (19, 25), 1),
    "sot-coin-count": (15, (17, 40), 1),
    "sot-timer": (27, (22, 30), 2),
}

# EfficientNet compound scaling one step down, as the paper's baseline: width /1.1,
# depth /1.1 (truncated: trailing convs are dropped), resolution /1.15 (truncated).
SCALE_WIDTH, SCALE_DEPTH, SCALE_RESOLUTION = 1.1, 1.1, 1.15


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


class GameCNN(FoldedCNN):
    """The game-scraping template; any input size and class count."""

    def __init__(
        self,
        num_classes: int,
        input_size: tuple[int, int],
        units: int = 1,
        *,
        fold: int = 1,
        width_mult: float | None = None,
        channel_multiple: int | None = None,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (32, 32, 8),
        max_convs: int | None = None,
    ):
        super().__init__()
        h, w = (int(s) for s in input_size)
        self.set_interface(fold, num_classes, (in_channels, h, w))
        if units < 0:
            raise UsageError(f"units must be >= 0, got {units}")
        wm = resolve_width_mult(self.fold, width_mult)
        cm = resolve_channel_multiple(channel_multiple)
        c1, ci, cn = (scaled_width(c, wm, cm) for c in widths)
        budget = 2 + CONVS_PER_UNIT * units if max_convs is None else max_convs
        if budget < 1:
            raise UsageError("a game CNN needs at least one conv layer")

        layers: list[nn.Module] = []
        cin, used = in_channels * self.fold, 0
        layers += _conv(cin, c1) + [nn.MaxPool2d(3, stride=2)]
        cin, used = c1, 1
        h, w = pool_out(h, 3, 2), pool_out(w, 3, 2)
        for _ in range(units):
            added = False
            for _ in range(CONVS_PER_UNIT):
                if used < budget:
                    layers += _conv(cin, ci)
                    cin, used, added = ci, used + 1, True
            if added:
                layers.append(nn.MaxPool2d(3, stride=1))
                h, w = pool_out(h, 3, 1), pool_out(w, 3, 1)
        if used < budget:
            layers += _conv(cin, cn) + [nn.MaxPool2d(3, stride=2)]
            cin = cn
            h, w = pool_out(h, 3, 2), pool_out(w, 3, 2)
        if h < 1 or w < 1:
            raise UsageError(
                f"input size {input_size[0]}x{input_size[1]} is too small for this game CNN "
                f"({units} unit(s)): the pooling layers shrink it below 1 pixel; use at least "
                f"{7 + 4 * units}x{7 + 4 * units}"
            )
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin * h * w, num_classes * self.fold)
        init_weights_(self)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def game_cnn(
    task: str | None = None,
    *,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    units: int | None = None,
    fold: int = 1,
    width_mult: float | None = None,
    channel_multiple: int | None = None,
    in_channels: int = 3,
) -> GameCNN:
    """Build a game CNN for a paper task, or for your own data (give num_classes and input_size)."""
    k, size, u = GAME_TASKS[task] if task is not None else (None, None, 1)
    num_classes = num_classes if num_classes is not None else k
    input_size = tuple(input_size) if input_size is not None else size
    if num_classes is None or input_size is None:
        raise UsageError("a game CNN without a task needs num_classes and input_size")
    return GameCNN(
        num_classes,
        input_size,
        units if units is not None else u,
        fold=fold,
        width_mult=width_mult,
        channel_multiple=channel_multiple,
        in_channels=in_channels,
    )


def scaled_game_cnn(
    task: str,
    *,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    fold: int = 1,
    width_mult: float | None = None,
    channel_multiple: int | None = None,
) -> GameCNN:
    """The paper's baseline: the game CNN scaled down one EfficientNet compound-scaling step."""
    k, (h, w), units = GAME_TASKS[task]
    if input_size is None:
        input_size = (int(h / SCALE_RESOLUTION), int(w / SCALE_RESOLUTION))
    widths = tuple(int(c / SCALE_WIDTH) for c in (32, 32, 8))
    max_convs = int((2 + CONVS_PER_UNIT * units) / SCALE_DEPTH)
    return GameCNN(
        num_classes or k,
        input_size,
        units,
        fold=fold,
        width_mult=width_mult,
        channel_multiple=channel_multiple,
        widths=widths,
        max_convs=max_convs,
    )


def _register(task: str) -> None:
    """The task's CNN and the paper's compound-scaled baseline of it, in the zoo."""
    k, (h, w), units = GAME_TASKS[task]
    sh, sw = int(h / SCALE_RESOLUTION), int(w / SCALE_RESOLUTION)
    for name, family, description, shape, build in (
        (task, "game", f"game-scraping CNN, {units} unit(s), {k} classes, {h}x{w} crops", (3, h, w), game_cnn),
        (f"{task}-scaled", "baseline", f"paper's baseline: {task} scaled down by EfficientNet compound scaling",
         (3, sh, sw), scaled_game_cnn),
    ):
        register_model(name, family=family, description=description, num_classes=k,
                       input_shape=shape)(functools.partial(build, task))


for _task in GAME_TASKS:
    _register(_task)

"""What every foldcnn model shares: widths, the folded interface, initialization."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from foldcnn.errors import UsageError
from foldcnn.fold import check_fold, fold_images, pad_to_fold, unfold_logits

# Default rounding of widened layers. On the CPUs measured (ONNX Runtime, fp32,
# batch 1024) widths that are multiples of 8 ran faster than the paper's odd widths
# (45 at f=2); docs/widths.md has the table, its machine, date and command.
DEFAULT_CHANNEL_MULTIPLE = 8


def resolve_width_mult(fold: int, width_mult: float | None) -> float:
    """The width multiplier: sqrt(fold) unless given (FoldedCNNs, ICML 2021, section 4)."""
    if width_mult is None:
        return math.sqrt(fold)
    if not (isinstance(width_mult, (int, float)) and width_mult > 0):
        raise UsageError(f"width_mult must be a positive number, got {width_mult!r}")
    return float(width_mult)


def resolve_channel_multiple(channel_multiple: int | None) -> int:
    if channel_multiple is None:
        return DEFAULT_CHANNEL_MULTIPLE
    if isinstance(channel_multiple, bool) or not isinstance(channel_multiple, int) or channel_multiple < 1:
        raise UsageError(
            f"channel_multiple must be an int >= 1 (1 = the paper's exact widths), got {channel_multiple!r}"
        )
    return channel_multiple


def scaled_width(width: int, width_mult: float, channel_multiple: int) -> int:
    """Widen one hidden layer.

    ``width_mult == 1`` keeps the width exactly (fold=1 is the original CNN). Otherwise the
    paper's rule ``int(width * width_mult)`` (32 -> 45/55/64 for f=2/3/4) is rounded up to a
    multiple of ``channel_multiple``; ``channel_multiple=1`` is the paper's exact width.
    """
    if width_mult == 1.0:
        return width
    # The epsilon keeps int() from truncating 63.99999... when width_mult is an exact root.
    w = int(width * width_mult + 1e-9)
    if w < 1:
        raise UsageError(f"width_mult {width_mult:g} makes a layer of {width} channels 0 channels wide; "
                         f"use a width multiplier of at least {1 / width:.3g}")
    return -(-w // channel_multiple) * channel_multiple


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: saved inside every checkpoint. ``name`` is a zoo
    name or an import path ``package.module:Name`` (then ``kwargs`` are the builder's keyword
    arguments plus ``input_shape``)."""

    name: str
    fold: int = 1
    width_mult: float | None = None
    channel_multiple: int | None = None
    kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "fold": self.fold,
            "width_mult": self.width_mult,
            "channel_multiple": self.channel_multiple,
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        kwargs = dict(d.get("kwargs") or {})
        if "input_size" in kwargs and kwargs["input_size"] is not None:
            kwargs["input_size"] = tuple(kwargs["input_size"])
        if kwargs.get("input_shape") is not None:  # models by import path (foldcnn.models.imported)
            kwargs["input_shape"] = tuple(kwargs["input_shape"])
        return cls(
            name=d["name"],
            fold=int(d.get("fold", 1)),
            width_mult=d.get("width_mult"),
            channel_multiple=d.get("channel_multiple"),
            kwargs=kwargs,
        )


class FoldedCNN(nn.Module):
    """Base of every zoo model.

    ``forward`` takes folded inputs (N/f, f*C, H, W) and returns folded logits (N/f, f*K).
    ``classify`` takes plain images (N, C, H, W), any N, and returns per-image logits (N, K).
    """

    fold: int
    num_classes: int
    input_shape: tuple[int, int, int]
    config: ModelConfig | None = None

    def set_interface(self, fold: int, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        """Declare the model's contract: ``fold`` images per input, ``num_classes`` logits per image,
        ``input_shape`` (C, H, W) of one image. Every builder and ``fold_model`` call it once."""
        self.fold = check_fold(fold)
        if num_classes < 1:
            raise UsageError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)

    @property
    def folded_input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.input_shape
        return (self.fold * c, h, w)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a readable error when ``x`` is not a folded batch this model accepts."""
        expected = self.folded_input_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            c, h, w = self.input_shape
            raise UsageError(
                f"{type(self).__name__} (fold={self.fold}) expects folded inputs of shape "
                f"(N/{self.fold}, {expected[0]}, {expected[1]}, {expected[2]}) made from images of "
                f"shape ({c}, {h}, {w}); got {tuple(x.shape)}. Use model.classify(images) for "
                f"unfolded images, or foldcnn.fold_images(images, {self.fold})."
            )

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image logits for images (N, C, H, W), any N (zero padding, discarded)."""
        c, h, w = self.input_shape
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, h, w):
            raise UsageError(
                f"expected images of shape (N, {c}, {h}, {w}), got {tuple(images.shape)}"
            )
        padded, n = pad_to_fold(images, self.fold)
        return unfold_logits(self(fold_images(padded, self.fold)), self.fold)[:n]


def init_weights_(model: nn.Module) -> nn.Module:
    """The paper's initialization, in place: Xavier-uniform (ReLU gain) convs, N(0, 0.01) linears,
    zero biases; BatchNorm to identity."""
    gain = nn.init.calculate_gain("relu")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def pool_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of a max/avg pool or conv along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

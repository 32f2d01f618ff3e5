"""Which CNN a run builds: one declaration of the model options every training workflow shares.

``foldcnn train`` generates its model flags from :class:`ModelSpec` (foldcnn.cli.options), and
:func:`foldcnn.train.run_training` takes one, so a model option is declared here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from foldcnn.errors import UsageError
from foldcnn.models.base import resolve_channel_multiple, resolve_width_mult
from foldcnn.options import option

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model or the user's own CNN (``package.module:Name``), folded ``fold`` times.

    ``name`` None: the generated task's own model (the data spec names the task)."""

    name: str | None = option(None, "zoo model, or your own CNN as package.module:Name (an nn.Module class or a "
                              "function returning one, for one image; the current directory is importable) "
                              "(default: the task's own model)", flag="--model")
    fold: int = option(1, "images classified together (1 = original CNN)")
    width_mult: float | None = option(None, "every hidden width x this multiplier, relative to the original's (a "
                                      "folded model's default is sqrt(fold), the paper's; below 1 at fold 1: a "
                                      "narrower CNN)", parse="width_mult")
    channel_multiple: int | None = option(None, "round widened layers up to this multiple (1 = paper's widths; "
                                          "default 8)")
    kwargs: dict = option(help="JSON keyword arguments of the model's builder, e.g. '{\"num_classes\": 10}'; for "
                          "a model given as package.module:Name, \"input_shape\": [C, H, W] sets one image's shape "
                          "where no data gives it", flag="--model-kwargs", parse="json_object",
                          default_factory=dict)
    weights: str | None = option(None, "start from the original's trained weights (fold 1): a .safetensors file "
                                 "or a .pt/.pth state_dict")

    def __post_init__(self):
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or self.fold < 1:
            raise UsageError(f"fold must be an int >= 1, got {self.fold!r}")
        if self.width_mult is not None:
            resolve_width_mult(self.fold, self.width_mult)
        if self.channel_multiple is not None:
            resolve_channel_multiple(self.channel_multiple)
        if not isinstance(self.kwargs, dict):
            raise UsageError(f"kwargs must be a dict of the builder's keyword arguments, got {self.kwargs!r}")

    def replace(self, **changes) -> ModelSpec:
        return replace(self, **changes)

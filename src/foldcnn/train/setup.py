"""What train_model checks and builds before its first step: input checks, optimizer, schedule.

Kept apart from the loop so that foldcnn.train.loop reads as its phases (set-up, resume, step,
epoch end) and the checks, which callers such as the CLI reuse, can be found by name.
"""

from __future__ import annotations

import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.errors import UsageError
from foldcnn.models import FoldedCNN
from foldcnn.train.config import TrainConfig

__all__ = ["check_compatible", "check_train_inputs", "build_optimizer", "build_scheduler"]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle" and total_steps > 1:
        # OneCycleLR divides by zero when the warm-up phase ends at step 0 (runs under 6 steps).
        pct = max(0.25, 1.5 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def check_compatible(model: FoldedCNN, dataset: ArrayDataset, what: str) -> None:
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        raise UsageError(
            f"the {what} images have shape {tuple(dataset.input_shape)} but the model expects "
            f"{tuple(model.input_shape)} (C, H, W); build the model with input_size="
            f"{tuple(dataset.input_shape[1:])} or resize the data"
        )
    if dataset.num_classes != model.num_classes:
        raise UsageError(
            f"the {what} data has {dataset.num_classes} classes but the model has {model.num_classes}"
        )
    if len(dataset) < 1:
        raise UsageError(f"the {what} data is empty")


def _check_teacher(teacher_logits: torch.Tensor | None, cfg: TrainConfig, want: tuple[int, int]) -> None:
    if cfg.distill != "none":
        if teacher_logits is None:
            raise UsageError(f"distill={cfg.distill!r} needs teacher_logits {want} (one row per training image); "
                             "compute them with foldcnn.train.distill.teacher_logits(teacher, train.images)")
        if tuple(teacher_logits.shape) != want:
            raise UsageError(f"teacher_logits have shape {tuple(teacher_logits.shape)} but the training data "
                             f"needs {want}: one row of K logits per training image, in image order")
        if not bool(torch.isfinite(teacher_logits).all()):
            raise UsageError("teacher_logits hold NaN or infinite values; check the teacher checkpoint")
    elif teacher_logits is not None:
        raise UsageError("teacher_logits were given but distill is 'none'; set distill='mse' or 'kl'")


def check_train_inputs(model, train_ds, val_ds, cfg, teacher_logits, out_dir, resume, state_every_steps) -> None:
    """Every user error train_model can see before it changes the model, raised as UsageError."""
    check_compatible(model, train_ds, "training")
    check_compatible(model, val_ds, "validation")
    if model.fold > len(train_ds):
        raise UsageError(f"fold={model.fold} is larger than the {len(train_ds)} training images; "
                         "use a smaller fold or more training data")
    _check_teacher(teacher_logits, cfg, (len(train_ds), model.num_classes))
    if resume and out_dir is None:
        raise UsageError("resume=True needs out_dir, the run directory that holds train_state.pt")
    if isinstance(state_every_steps, bool) or not isinstance(state_every_steps, int) or state_every_steps < 0:
        raise UsageError(f"state_every_steps must be an int >= 0 (0 = only after each epoch), "
                         f"got {state_every_steps!r}")

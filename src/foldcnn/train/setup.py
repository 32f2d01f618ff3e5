"""train_model's set-up phase: input checks, optimizer, schedule, and the TrainRun it builds.

Kept apart from foldcnn.train.loop so that the loop reads as the phases after set-up (resume,
step, epoch end, finish) and everything fixed before the first step is found here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.errors import UsageError
from foldcnn.models import FoldedCNN
from foldcnn.train.batchnorm import add_train_batchnorm_
from foldcnn.train.config import TrainConfig
from foldcnn.train.curriculum import curriculum_schedule, stage_sizes
from foldcnn.train.devices import resolve_device, resolve_precision
from foldcnn.train.distributed import DistInfo, dist_info
from foldcnn.train.ema import WeightAverage
from foldcnn.train.resume import TRAIN_STATE_FILE, LoopState, fingerprint
from foldcnn.train.symmetry import shrink_cross_slot_, tie_fold_slots_

__all__ = ["TrainRun", "setup_run", "check_compatible", "check_train_inputs", "build_optimizer", "build_scheduler"]


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


@dataclass
class TrainRun:
    """One call of train_model: what ``setup_run`` builds once and the loop's phases share.

    ``loop`` is the part that changes and is saved for resume (foldcnn.train.resume.LoopState);
    everything else is fixed after set-up (the progress bar and clock aside).
    """

    cfg: TrainConfig
    model: FoldedCNN
    dist: DistInfo
    device: torch.device
    precision: str  # resolved: "fp32" or "bf16"
    memory_format: torch.memory_format
    schedule: list[int]  # active classes per epoch (all K without a curriculum)
    steps: list[int]  # optimizer steps per epoch
    groups_per_step: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: WeightAverage | None
    teacher: torch.Tensor | None  # (N_train, K) fp32 on device
    state_path: Path | None
    fp: dict | None  # fingerprint of config, model and data, checked on resume
    net: torch.nn.Module | None = None  # the model, or its DDP wrapper
    loop: LoopState = field(default_factory=LoopState)
    resumed: dict | None = None
    log_path: Path | None = None
    bar: object = None
    seconds_before: float = 0.0  # training time of the runs this one resumes
    t_start: float = 0.0


def setup_run(model: FoldedCNN, train_ds: ArrayDataset, val_ds: ArrayDataset, cfg: TrainConfig,
              out_dir: str | Path | None, teacher_logits: torch.Tensor | None) -> TrainRun:
    """Seed, device, training BatchNorm, slot tying, schedule, optimizer: in this order, which the
    random state and the recorded results (tests/test_loop.py) depend on."""
    dist = dist_info()
    device = resolve_device(cfg.device, dist.local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fold, k = model.fold, model.num_classes
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.train_batchnorm:
        add_train_batchnorm_(model)
    model.to(device=device, memory_format=memory_format)
    if cfg.tie_slots:  # after .to(): the blocks are 5-D, which channels_last cannot convert
        tie_fold_slots_(model, fold)
    if cfg.cross_slot_decay == math.inf and fold > 1:  # zero from the first step, the weight average's copy too
        shrink_cross_slot_(model, 0.0)
    schedule = curriculum_schedule(k, fold, cfg.epochs, cfg.curriculum_end) if cfg.curriculum else [k] * cfg.epochs
    groups_per_step = cfg.images_per_step(fold) // fold
    steps = [math.ceil(math.ceil(n / fold) / groups_per_step) for n in stage_sizes(train_ds.labels, k, schedule)]
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, sum(steps))
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # after tying: averages the blocks
    run_dir = Path(out_dir) if out_dir is not None else None
    return TrainRun(
        cfg=cfg, model=model, dist=dist, device=device, precision=resolve_precision(cfg.precision, device),
        memory_format=memory_format, schedule=schedule, steps=steps, groups_per_step=groups_per_step,
        opt=opt, sched=sched, ema=ema,
        teacher=teacher_logits.to(device=device, dtype=torch.float32) if teacher_logits is not None else None,
        state_path=run_dir / TRAIN_STATE_FILE if run_dir is not None else None,
        fp=fingerprint(cfg, model, train_ds, val_ds, teacher_logits) if run_dir is not None else None,
    )

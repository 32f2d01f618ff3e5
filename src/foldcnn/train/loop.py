"""The training loop: folded inputs from random groups of f images, per-image loss and metrics.

On top of the plain loop, each off by default: a class curriculum (foldcnn.train.curriculum),
distillation from precomputed teacher logits (foldcnn.train.distill), weight averaging
(foldcnn.train.ema), resume from
``train_state.pt`` (foldcnn.train.resume) and DistributedDataParallel when a process group is
initialized (foldcnn.train.distributed). bf16 autocast and channels_last apply to all of them.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from foldcnn.data.base import ArrayDataset
from foldcnn.data.grouping import fold_groups, gather_fold_batch
from foldcnn.errors import UsageError
from foldcnn.fold import unfold_logits
from foldcnn.models import FoldedCNN
from foldcnn.progress import progress_bar
from foldcnn.train.batchnorm import add_train_batchnorm_, fuse_train_batchnorm_
from foldcnn.train.config import DEFAULT_STATE_EVERY_STEPS, TrainConfig
from foldcnn.train.curriculum import active_pool, curriculum_schedule, stage_sizes
from foldcnn.train.devices import autocast_for, bf16_supported, resolve_device, resolve_precision  # noqa: F401
from foldcnn.train.distill import distill_loss_sum
from foldcnn.train.distributed import all_reduce_sum, broadcast_buffers_, broadcast_floats, dist_info, shard_groups
from foldcnn.train.ema import WeightAverage
from foldcnn.train.evaluation import EVAL_GROUP_SEED, evaluate, predict_logits  # noqa: F401 - re-exported
from foldcnn.train.resume import (
    TRAIN_STATE_FILE,
    LoopState,
    check_fingerprint,
    fingerprint,
    load_train_state,
    pack_state,
    save_train_state,
    unpack_state,
)
from foldcnn.train.symmetry import plain_state_dict, tie_fold_slots_, untie_fold_slots_


@dataclass
class TrainResult:
    best_epoch: int
    best_val_top1: float
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    features: dict = field(default_factory=dict)  # what ran: precision, device, curriculum, resume, ranks


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: TrainConfig, total_steps: int):
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


def _check_inputs(model, train_ds, val_ds, cfg, teacher_logits, out_dir, resume, state_every_steps) -> None:
    check_compatible(model, train_ds, "training")
    check_compatible(model, val_ds, "validation")
    if model.fold > len(train_ds):
        raise UsageError(f"fold={model.fold} is larger than the {len(train_ds)} training images; "
                         "use a smaller fold or more training data")
    if cfg.distill != "none":
        want = (len(train_ds), model.num_classes)
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
    if resume and out_dir is None:
        raise UsageError("resume=True needs out_dir, the run directory that holds train_state.pt")
    if isinstance(state_every_steps, bool) or not isinstance(state_every_steps, int) or state_every_steps < 0:
        raise UsageError(f"state_every_steps must be an int >= 0 (0 = only after each epoch), "
                         f"got {state_every_steps!r}")


def _epoch_groups(labels: torch.Tensor, active: int, num_classes: int, fold: int, seed: int, epoch: int):
    """This epoch's fold groups (G, f) of training-image indices (-1 = padding), active classes only."""
    if active >= num_classes:
        return fold_groups(len(labels), fold, seed, epoch)
    pool = active_pool(labels, active)
    local = fold_groups(len(pool), fold, seed, epoch)
    return torch.where(local >= 0, pool[local.clamp(min=0)], local)


def _step_loss(logits, y, teacher, cfg: TrainConfig, per_rank_images: float) -> torch.Tensor:
    """(1 - w) * CE + w * distill, summed over this rank's images and divided by the step's
    images per rank, so that DDP's gradient average is the mean over all images of the step."""
    loss = F.cross_entropy(logits, y, reduction="sum")
    if teacher is not None:
        w = cfg.distill_weight
        loss = (1 - w) * loss + w * distill_loss_sum(logits, teacher, cfg.distill, cfg.temperature)
    return loss / per_rank_images


def train_model(
    model: FoldedCNN,
    train_ds: ArrayDataset,
    val_ds: ArrayDataset,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    teacher_logits: torch.Tensor | None = None,
    resume: bool = False,
    state_every_steps: int = DEFAULT_STATE_EVERY_STEPS,
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch.

    With ``cfg.train_batchnorm`` BatchNorm layers are added for training and fused into the
    convolutions at the end, so ``model`` keeps its architecture (foldcnn.train.batchnorm).

    Images (N, C, H, W) are folded into (N/f, f*C, H, W) from random groups of f, regrouped
    every epoch. With ``out_dir`` writes ``metrics.jsonl`` (one line per epoch) and
    ``train_state.pt`` (after every epoch and every ``state_every_steps`` steps);
    ``resume=True`` continues from that state. ``teacher_logits`` (N_train, K) are needed when
    ``cfg.distill`` is not "none". ``on_step`` gets ``{"epoch", "step", "steps", "loss"}``
    after each optimizer step. Under an initialized process group the model trains with DDP;
    only rank 0 writes files and shows progress.
    """
    _check_inputs(model, train_ds, val_ds, cfg, teacher_logits, out_dir, resume, state_every_steps)
    dist = dist_info()
    device = resolve_device(cfg.device, dist.local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fold, k = model.fold, model.num_classes
    precision = resolve_precision(cfg.precision, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.train_batchnorm:
        add_train_batchnorm_(model)
    model.to(device=device, memory_format=memory_format)
    run_dir = Path(out_dir) if out_dir is not None else None
    state_path = run_dir / TRAIN_STATE_FILE if run_dir is not None else None
    if cfg.tie_slots:  # after .to(): the blocks are 5-D, which channels_last cannot convert
        tie_fold_slots_(model, fold)
    schedule = curriculum_schedule(k, fold, cfg.epochs, cfg.curriculum_end) if cfg.curriculum else [k] * cfg.epochs
    per_step = cfg.images_per_step(fold)
    groups_per_step = per_step // fold
    steps = [math.ceil(math.ceil(n / fold) / groups_per_step) for n in stage_sizes(train_ds.labels, k, schedule)]
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, sum(steps))
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # after tying: averages the blocks
    teacher = teacher_logits.to(device=device, dtype=torch.float32) if teacher_logits is not None else None

    fp = fingerprint(cfg, model, train_ds, val_ds, teacher_logits) if run_dir is not None else None
    loop, resumed = LoopState(), None
    if resume:
        saved = load_train_state(state_path)
        check_fingerprint(saved.get("fingerprint") or {}, fp, state_path)
        loop = unpack_state(saved, model, opt, sched, device, state_path, ema=ema)
        resumed = {"epoch": loop.epoch, "step": loop.step}
        if not dist.is_main:  # rank 0 carries the partial epoch's sums
            loop.loss_sum, loop.seen, loop.correct = 0.0, 0, 0
    log_path = run_dir / "metrics.jsonl" if run_dir is not None and dist.is_main else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(json.dumps(r) + "\n" for r in loop.history))
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save_state(mid_epoch: bool) -> None:
        if mid_epoch and dist.enabled:  # fold every rank's partial sums into rank 0's
            total = all_reduce_sum([loop.loss_sum, loop.seen, loop.correct], device)
            loop.loss_sum, loop.seen, loop.correct = (total[0], int(total[1]), int(total[2])) if dist.is_main \
                else (0.0, 0, 0)
        if dist.is_main:
            save_train_state(state_path, pack_state(loop, model, opt, sched, cfg, fp, device, ema=ema))

    seconds_before, t_start = loop.train_seconds, time.perf_counter()
    bar = progress_bar(total=sum(steps), initial=sum(steps[:loop.epoch]) + loop.step,
                       disable=not (progress and dist.is_main), unit="step", leave=False)
    for epoch in range(loop.epoch, cfg.epochs):
        if loop.stopped:
            break
        active = schedule[epoch]
        groups = _epoch_groups(train_ds.labels, active, k, fold, cfg.seed, epoch)
        net.train()
        t0 = time.perf_counter()
        for s in range(loop.step, steps[epoch]):
            chunk = groups[s * groups_per_step:(s + 1) * groups_per_step]
            n_step = int((chunk >= 0).sum())
            index = shard_groups(chunk, dist.rank, dist.world_size).reshape(-1)
            x, y, mask = gather_fold_batch(train_ds.images, train_ds.labels, index, fold)
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with autocast_for(precision, device):
                out = net(x)
            logits = unfold_logits(out.float(), fold)[mask.to(device)]
            y = y[mask].to(device)
            if active < k:  # the loss covers only the classes in the curriculum so far
                logits = logits[:, :active]
            t = teacher[index[mask].to(device)][:, :active] if teacher is not None else None
            loss = _step_loss(logits, y, t, cfg, n_step / dist.world_size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            loss_value = loss.item()
            loop.loss_sum += loss_value * (n_step / dist.world_size)
            loop.seen += len(y)
            loop.correct += (logits.argmax(1) == y).sum().item()
            loop.step = s + 1
            bar.update(1)
            if state_path and state_every_steps and loop.step % state_every_steps == 0 and loop.step < steps[epoch]:
                save_state(mid_epoch=True)
            if on_step:
                on_step({"epoch": epoch + 1, "step": loop.step, "steps": steps[epoch], "loss": loss_value})
        loss_sum, seen, correct = all_reduce_sum([loop.loss_sum, loop.seen, loop.correct], device)
        broadcast_buffers_(model)  # one set of BatchNorm statistics for validation and the checkpoint
        # With weight averaging, validation and the best checkpoint use the averaged weights.
        with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
            if dist.is_main:
                val = evaluate(model, val_ds, batch_size=cfg.eval_batch_size)
                val_top1, val_top5 = val["top1"], val["top5"]
            else:
                val_top1 = val_top5 = 0.0
            val_top1, val_top5 = broadcast_floats([val_top1, val_top5], device)
            # The best checkpoint is chosen only once every class is in the curriculum.
            is_best = active == k and val_top1 > loop.best_val_top1
            if is_best:
                loop.best_state = plain_state_dict(model)  # dense weights, whether the slots are tied or not
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "train_top1": round(correct / max(seen, 1), 5),
            "val_top1": val_top1,
            "val_top5": val_top5,
            "lr": opt.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - t0, 2),
        }
        if cfg.curriculum:
            row["active_classes"] = active
        bar.set_postfix(loss=row["train_loss"], val=row["val_top1"])
        if is_best:
            loop.best_val_top1, loop.best_epoch = val_top1, epoch + 1
        elif cfg.patience and loop.best_epoch > 0 and epoch + 1 - loop.best_epoch >= cfg.patience:
            loop.stopped = True
        loop.history.append(row)
        loop.epoch, loop.step, loop.loss_sum, loop.seen, loop.correct = epoch + 1, 0, 0.0, 0, 0
        loop.train_seconds = seconds_before + time.perf_counter() - t_start
        if state_path:
            save_state(mid_epoch=False)
        if log_path:
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        if on_epoch:
            on_epoch(row)
        if loop.stopped:
            break
    bar.close()
    untie_fold_slots_(model)
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    if cfg.train_batchnorm:
        fuse_train_batchnorm_(model)
    features = {"precision": precision, "device": str(device), "channels_last": cfg.channels_last,
                "world_size": dist.world_size, "backend": dist.backend, "resumed_from": resumed,
                "curriculum": schedule if cfg.curriculum else None, "early_stopped": loop.stopped,
                "weight_average": {"decay": cfg.ema_decay, "updates": ema.updates} if ema is not None else None}
    return TrainResult(best_epoch=loop.best_epoch, best_val_top1=loop.best_val_top1, history=loop.history,
                       train_seconds=round(loop.train_seconds, 2), features=features)

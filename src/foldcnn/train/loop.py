"""The training loop: folded inputs from random groups of f images, per-image loss and metrics.

On top of the plain loop, each off by default: a class curriculum (foldcnn.train.curriculum),
distillation from precomputed teacher logits (foldcnn.train.distill), weight averaging
(foldcnn.train.ema), resume from ``train_state.pt`` (foldcnn.train.resume) and
DistributedDataParallel when a process group is initialized (foldcnn.train.distributed). bf16
autocast and channels_last apply to all of them.

train_model runs in phases, each a function below: ``_setup`` (seed, device, optimizer),
``_resume``, ``_start`` (log, DDP, clock), ``_train_step``, ``_end_epoch`` (validation, best
epoch, early stop, metrics row, state) and ``_finish`` (best weights, fused BatchNorm).
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

from foldcnn.data.base import ArrayDataset
from foldcnn.data.grouping import gather_fold_batch
from foldcnn.fold import unfold_logits
from foldcnn.models import FoldedCNN
from foldcnn.progress import progress_bar
from foldcnn.train.batchnorm import add_train_batchnorm_, fuse_train_batchnorm_
from foldcnn.train.config import DEFAULT_STATE_EVERY_STEPS, TrainConfig
from foldcnn.train.curriculum import curriculum_schedule, epoch_groups, stage_sizes
from foldcnn.train.devices import autocast_for, bf16_supported, resolve_device, resolve_precision  # noqa: F401
from foldcnn.train.distill import step_loss
from foldcnn.train.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_buffers_,
    broadcast_floats,
    dist_info,
    shard_groups,
)
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
from foldcnn.train.setup import build_optimizer, build_scheduler, check_train_inputs
from foldcnn.train.symmetry import plain_state_dict, tie_fold_slots_, untie_fold_slots_


@dataclass
class TrainResult:
    best_epoch: int
    best_val_top1: float
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    features: dict = field(default_factory=dict)  # what ran: precision, device, curriculum, resume, ranks


@dataclass
class _Run:
    """One call of train_model: what _setup builds once and the phases after it share.

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


def _setup(model: FoldedCNN, train_ds: ArrayDataset, val_ds: ArrayDataset, cfg: TrainConfig,
           out_dir: str | Path | None, teacher_logits: torch.Tensor | None) -> _Run:
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
    schedule = curriculum_schedule(k, fold, cfg.epochs, cfg.curriculum_end) if cfg.curriculum else [k] * cfg.epochs
    groups_per_step = cfg.images_per_step(fold) // fold
    steps = [math.ceil(math.ceil(n / fold) / groups_per_step) for n in stage_sizes(train_ds.labels, k, schedule)]
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, sum(steps))
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # after tying: averages the blocks
    run_dir = Path(out_dir) if out_dir is not None else None
    return _Run(
        cfg=cfg, model=model, dist=dist, device=device, precision=resolve_precision(cfg.precision, device),
        memory_format=memory_format, schedule=schedule, steps=steps, groups_per_step=groups_per_step,
        opt=opt, sched=sched, ema=ema,
        teacher=teacher_logits.to(device=device, dtype=torch.float32) if teacher_logits is not None else None,
        state_path=run_dir / TRAIN_STATE_FILE if run_dir is not None else None,
        fp=fingerprint(cfg, model, train_ds, val_ds, teacher_logits) if run_dir is not None else None,
    )


def _resume(run: _Run) -> None:
    """Continue from ``train_state.pt`` after checking it was written by this very run."""
    saved = load_train_state(run.state_path)
    check_fingerprint(saved.get("fingerprint") or {}, run.fp, run.state_path)
    run.loop = unpack_state(saved, run.model, run.opt, run.sched, run.device, run.state_path, ema=run.ema)
    run.resumed = {"epoch": run.loop.epoch, "step": run.loop.step}
    if not run.dist.is_main:  # rank 0 carries the partial epoch's sums
        run.loop.loss_sum, run.loop.seen, run.loop.correct = 0.0, 0, 0


def _start(run: _Run, progress: bool) -> None:
    """Rewrite ``metrics.jsonl`` from the (resumed) history, wrap DDP, start the clock and the bar."""
    if run.state_path is not None and run.dist.is_main:
        run.log_path = run.state_path.parent / "metrics.jsonl"
        run.log_path.parent.mkdir(parents=True, exist_ok=True)
        run.log_path.write_text("".join(json.dumps(r) + "\n" for r in run.loop.history))
    run.net = run.model
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = DistributedDataParallel(run.model, device_ids=ids)
    run.seconds_before, run.t_start = run.loop.train_seconds, time.perf_counter()
    run.bar = progress_bar(total=sum(run.steps), initial=sum(run.steps[:run.loop.epoch]) + run.loop.step,
                           disable=not (progress and run.dist.is_main), unit="step", leave=False)


def _save_state(run: _Run, mid_epoch: bool) -> None:
    """Write ``train_state.pt`` (rank 0); every rank must call it, for the DDP sums it gathers."""
    loop, dist = run.loop, run.dist
    if mid_epoch and dist.enabled:  # fold every rank's partial sums into rank 0's
        total = all_reduce_sum([loop.loss_sum, loop.seen, loop.correct], run.device)
        loop.loss_sum, loop.seen, loop.correct = (total[0], int(total[1]), int(total[2])) if dist.is_main \
            else (0.0, 0, 0)
    if dist.is_main:
        save_train_state(run.state_path, pack_state(loop, run.model, run.opt, run.sched, run.cfg, run.fp,
                                                    run.device, ema=run.ema))


def _train_step(run: _Run, train_ds: ArrayDataset, chunk: torch.Tensor, active: int) -> float:
    """One optimizer step on ``chunk`` (G, f) of fold groups; adds to the epoch's running sums."""
    fold, k, dist, loop = run.model.fold, run.model.num_classes, run.dist, run.loop
    n_step = int((chunk >= 0).sum())
    index = shard_groups(chunk, dist.rank, dist.world_size).reshape(-1)
    x, y, mask = gather_fold_batch(train_ds.images, train_ds.labels, index, fold)
    x = x.to(run.device, non_blocking=True).contiguous(memory_format=run.memory_format)
    with autocast_for(run.precision, run.device):
        out = run.net(x)
    logits = unfold_logits(out.float(), fold)[mask.to(run.device)]
    y = y[mask].to(run.device)
    if active < k:  # the loss covers only the classes in the curriculum so far
        logits = logits[:, :active]
    t = run.teacher[index[mask].to(run.device)][:, :active] if run.teacher is not None else None
    loss = step_loss(logits, y, t, run.cfg, n_step / dist.world_size)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.sched.step()
    if run.ema is not None:
        run.ema.update(run.model)
    loss_value = loss.item()
    loop.loss_sum += loss_value * (n_step / dist.world_size)
    loop.seen += len(y)
    loop.correct += (logits.argmax(1) == y).sum().item()
    return loss_value


def _validate(run: _Run, val_ds: ArrayDataset, active: int) -> tuple[float, float, bool]:
    """(val_top1, val_top5, is_best), evaluated on rank 0 and shared; keeps the best weights.

    With weight averaging, validation and the best checkpoint use the averaged weights."""
    with run.ema.swapped_in(run.model) if run.ema is not None else contextlib.nullcontext():
        if run.dist.is_main:
            val = evaluate(run.model, val_ds, batch_size=run.cfg.eval_batch_size)
            val_top1, val_top5 = val["top1"], val["top5"]
        else:
            val_top1 = val_top5 = 0.0
        val_top1, val_top5 = broadcast_floats([val_top1, val_top5], run.device)
        # The best checkpoint is chosen only once every class is in the curriculum.
        is_best = active == run.model.num_classes and val_top1 > run.loop.best_val_top1
        if is_best:
            run.loop.best_state = plain_state_dict(run.model)  # dense weights, whether the slots are tied or not
    return val_top1, val_top5, is_best


def _end_epoch(run: _Run, val_ds: ArrayDataset, epoch: int, t0: float) -> dict:
    """Validation, best-epoch and early-stopping bookkeeping, the metrics row, state and log saved."""
    loop, cfg, active = run.loop, run.cfg, run.schedule[epoch]
    loss_sum, seen, correct = all_reduce_sum([loop.loss_sum, loop.seen, loop.correct], run.device)
    broadcast_buffers_(run.model)  # one set of BatchNorm statistics for validation and the checkpoint
    val_top1, val_top5, is_best = _validate(run, val_ds, active)
    row = {
        "epoch": epoch + 1,
        "train_loss": round(loss_sum / max(seen, 1), 5),
        "train_top1": round(correct / max(seen, 1), 5),
        "val_top1": val_top1,
        "val_top5": val_top5,
        "lr": run.opt.param_groups[0]["lr"],
        "epoch_seconds": round(time.perf_counter() - t0, 2),  # validation included
    }
    if cfg.curriculum:
        row["active_classes"] = active
    run.bar.set_postfix(loss=row["train_loss"], val=row["val_top1"])
    if is_best:
        loop.best_val_top1, loop.best_epoch = val_top1, epoch + 1
    elif cfg.patience and loop.best_epoch > 0 and epoch + 1 - loop.best_epoch >= cfg.patience:
        loop.stopped = True
    loop.history.append(row)
    loop.epoch, loop.step, loop.loss_sum, loop.seen, loop.correct = epoch + 1, 0, 0.0, 0, 0
    loop.train_seconds = run.seconds_before + time.perf_counter() - run.t_start
    if run.state_path:
        _save_state(run, mid_epoch=False)
    if run.log_path:
        with run.log_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


def _finish(run: _Run) -> TrainResult:
    """Dense best weights back in the model, training BatchNorm fused away, and what ran."""
    model, cfg, loop, ema = run.model, run.cfg, run.loop, run.ema
    run.bar.close()
    untie_fold_slots_(model)
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    if cfg.train_batchnorm:
        fuse_train_batchnorm_(model)
    features = {"precision": run.precision, "device": str(run.device), "channels_last": cfg.channels_last,
                "world_size": run.dist.world_size, "backend": run.dist.backend, "resumed_from": run.resumed,
                "curriculum": run.schedule if cfg.curriculum else None, "early_stopped": loop.stopped,
                "weight_average": {"decay": cfg.ema_decay, "updates": ema.updates} if ema is not None else None}
    return TrainResult(best_epoch=loop.best_epoch, best_val_top1=loop.best_val_top1, history=loop.history,
                       train_seconds=round(loop.train_seconds, 2), features=features)


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
    check_train_inputs(model, train_ds, val_ds, cfg, teacher_logits, out_dir, resume, state_every_steps)
    run = _setup(model, train_ds, val_ds, cfg, out_dir, teacher_logits)
    if resume:
        _resume(run)
    _start(run, progress)
    loop, steps = run.loop, run.steps
    for epoch in range(loop.epoch, cfg.epochs):
        if loop.stopped:
            break
        active = run.schedule[epoch]
        groups = epoch_groups(train_ds.labels, active, model.num_classes, model.fold, cfg.seed, epoch)
        run.net.train()
        t0 = time.perf_counter()
        for s in range(loop.step, steps[epoch]):
            chunk = groups[s * run.groups_per_step:(s + 1) * run.groups_per_step]
            loss_value = _train_step(run, train_ds, chunk, active)
            loop.step = s + 1
            run.bar.update(1)
            if run.state_path and state_every_steps and loop.step % state_every_steps == 0 and loop.step < steps[epoch]:
                _save_state(run, mid_epoch=True)
            if on_step:
                on_step({"epoch": epoch + 1, "step": loop.step, "steps": steps[epoch], "loss": loss_value})
        row = _end_epoch(run, val_ds, epoch, t0)
        if on_epoch:
            on_epoch(row)
        if loop.stopped:
            break
    return _finish(run)

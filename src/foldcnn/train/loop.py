"""The training loop: folded inputs from random groups of f images, per-image loss and metrics.

On top of the plain loop, each off by default: a class curriculum (foldcnn.train.curriculum),
distillation from precomputed teacher logits (foldcnn.train.distill), weight averaging
(foldcnn.train.ema), resume from ``train_state.pt`` (foldcnn.train.resume) and
DistributedDataParallel when a process group is initialized (foldcnn.train.distributed). bf16
autocast and channels_last apply to all of them.

train_model runs in phases: ``setup_run`` (foldcnn.train.setup: seed, device, optimizer, the
TrainRun state), then, below, ``_resume``, ``_start`` (log, DDP, clock), ``_train_step``,
``_end_epoch`` (validation, best epoch, early stop, metrics row, state) and ``_finish`` (best
weights, fused BatchNorm).
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
from foldcnn.train.batchnorm import fuse_train_batchnorm_
from foldcnn.train.config import DEFAULT_STATE_EVERY_STEPS, PLATEAU_AFTER, PLATEAU_WINDOW, TrainConfig
from foldcnn.train.curriculum import epoch_groups
from foldcnn.train.devices import autocast_for, bf16_supported  # noqa: F401 - bf16_supported re-exported
from foldcnn.train.distill import step_loss
from foldcnn.train.distributed import all_reduce_sum, broadcast_buffers_, broadcast_floats, shard_groups
from foldcnn.train.evaluation import EVAL_GROUP_SEED, evaluate, predict_logits  # noqa: F401 - re-exported
from foldcnn.train.consistency import align_to, consistency_loss_sum, regroup_index
from foldcnn.train.resume import check_fingerprint, load_train_state, pack_state, save_train_state, unpack_state
from foldcnn.train.setup import TrainRun, check_train_inputs, setup_run
from foldcnn.train.symmetry import plain_state_dict, pool_slot_statistics_, shrink_cross_slot_, untie_fold_slots_

METRICS_FILE = "metrics.jsonl"  # one JSON row per finished epoch, beside the run's state


def read_metrics(run_dir: str | Path) -> list[dict]:
    """A run's epoch rows from its ``metrics.jsonl`` ([] where it has none yet)."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_metrics(run_dir: str | Path, history: list[dict]) -> Path:
    """``metrics.jsonl`` of ``run_dir`` rewritten to ``history`` (one JSON row per epoch)."""
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in history))
    return path


@dataclass
class TrainResult:
    best_epoch: int
    best_val_top1: float
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    features: dict = field(default_factory=dict)  # what ran: precision, device, curriculum, resume, ranks


def _resume(run: TrainRun) -> None:
    """Continue from ``train_state.pt`` after checking it was written by this very run."""
    saved = load_train_state(run.state_path)
    check_fingerprint(saved.get("fingerprint") or {}, run.fp, run.state_path)
    run.loop = unpack_state(saved, run.model, run.opt, run.sched, run.device, run.state_path, ema=run.ema)
    run.resumed = {"epoch": run.loop.epoch, "step": run.loop.step}
    if not run.dist.is_main:  # rank 0 carries the partial epoch's sums
        run.loop.loss_sum, run.loop.seen, run.loop.correct = 0.0, 0, 0


def _start(run: TrainRun, progress: bool) -> None:
    """Rewrite ``metrics.jsonl`` from the (resumed) history, wrap DDP, start the clock and the bar."""
    if run.state_path is not None and run.dist.is_main:
        run.log_path = write_metrics(run.state_path.parent, run.loop.history)
    run.net = run.model
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = DistributedDataParallel(run.model, device_ids=ids)
    run.seconds_before, run.t_start = run.loop.train_seconds, time.perf_counter()
    run.bar = progress_bar(total=sum(run.steps), initial=sum(run.steps[:run.loop.epoch]) + run.loop.step,
                           disable=not (progress and run.dist.is_main), unit="step", leave=False)


def _save_state(run: TrainRun, mid_epoch: bool) -> None:
    """Write ``train_state.pt`` (rank 0); every rank must call it, for the DDP sums it gathers."""
    loop, dist = run.loop, run.dist
    if mid_epoch and dist.enabled:  # fold every rank's partial sums into rank 0's
        total = all_reduce_sum([loop.loss_sum, loop.seen, loop.correct], run.device)
        loop.loss_sum, loop.seen, loop.correct = (total[0], int(total[1]), int(total[2])) if dist.is_main \
            else (0.0, 0, 0)
    if dist.is_main:
        save_train_state(run.state_path, pack_state(loop, run.model, run.opt, run.sched, run.cfg, run.fp,
                                                    run.device, ema=run.ema))


def _train_step(run: TrainRun, train_ds: ArrayDataset, chunk: torch.Tensor, active: int) -> float:
    """One optimizer step on ``chunk`` (G, f) of fold groups; adds to the epoch's running sums."""
    fold, k, dist, loop = run.model.fold, run.model.num_classes, run.dist, run.loop
    n_step = int((chunk >= 0).sum())
    index = shard_groups(chunk, dist.rank, dist.world_size).reshape(-1)
    x, y, mask = gather_fold_batch(train_ds.images, train_ds.labels, index, fold)
    consistent = run.cfg.consistency > 0 and fold > 1
    if consistent:  # the same images in a second grouping, in the same forward pass (DDP: one per step)
        other = _second_grouping(run, index)
        x2, _, mask2 = gather_fold_batch(train_ds.images, train_ds.labels, other, fold)
        x = torch.cat([x, x2])
    x = x.to(run.device, non_blocking=True).contiguous(memory_format=run.memory_format)
    with autocast_for(run.precision, run.device):
        out = run.net(x)
    if consistent:
        out, out2 = out[: len(out) // 2], out[len(out) // 2:]
    logits = unfold_logits(out.float(), fold)[mask.to(run.device)]
    y = y[mask].to(run.device)
    if active < k:  # the loss covers only the classes in the curriculum so far
        logits = logits[:, :active]
    t = run.teacher[index[mask].to(run.device)][:, :active] if run.teacher is not None else None
    loss = step_loss(logits, y, t, run.cfg, n_step / dist.world_size)
    if consistent:
        logits2 = unfold_logits(out2.float(), fold)[mask2.to(run.device)][:, :active]
        pos = align_to(index[mask], other[mask2]).to(run.device)  # row of each image of `logits` in `logits2`
        divergence = consistency_loss_sum(logits, logits2[pos], run.cfg.consistency_kind)
        loss = loss + run.cfg.consistency * divergence / (n_step / dist.world_size)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.cfg.cross_slot_decay > 0 and fold > 1:  # decoupled, at the step's learning rate (as AdamW's)
        decay = run.cfg.cross_slot_decay
        shrink_cross_slot_(run.model, 0.0 if decay == math.inf else max(0.0, 1.0 - run.opt.param_groups[0]["lr"] * decay))
    run.sched.step()
    if run.ema is not None:
        run.ema.update(run.model)
    loss_value = loss.item()
    loop.loss_sum += loss_value * (n_step / dist.world_size)
    loop.seen += len(y)
    loop.correct += (logits.argmax(1) == y).sum().item()
    return loss_value


def _second_grouping(run: TrainRun, index: torch.Tensor) -> torch.Tensor:
    """This step's images regrouped (foldcnn.train.consistency.regroup_index). The seed comes
    from (seed, epoch, step, rank), so a resumed run draws the same groupings."""
    key = (run.cfg.seed * 1_000_003 + run.loop.epoch) * 1_000_003 + run.loop.step
    g = torch.Generator().manual_seed((key * 101 + run.dist.rank) % 2**63)
    return regroup_index(index, run.model.fold, g)


def _validate(run: TrainRun, val_ds: ArrayDataset, active: int) -> tuple[float, float, bool]:
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


def _end_epoch(run: TrainRun, val_ds: ArrayDataset, epoch: int, t0: float) -> dict:
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
    if cfg.plateau_patience and epoch + 1 >= PLATEAU_AFTER * cfg.epochs and \
            plateau_epochs([r["val_top1"] for r in loop.history]) >= cfg.plateau_patience:
        loop.stopped = True
    loop.epoch, loop.step, loop.loss_sum, loop.seen, loop.correct = epoch + 1, 0, 0.0, 0, 0
    loop.train_seconds = run.seconds_before + time.perf_counter() - run.t_start
    if run.state_path:
        _save_state(run, mid_epoch=False)
    if run.log_path:
        with run.log_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


def smoothed(values: list[float], window: int = PLATEAU_WINDOW) -> list[float]:
    """Trailing means over ``window`` values (fewer at the start)."""
    return [sum(values[max(0, i + 1 - window):i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def plateau_epochs(val_top1: list[float], window: int = PLATEAU_WINDOW) -> int:
    """Epochs since the smoothed validation top-1 last reached a new best (0: the last epoch did)."""
    s = smoothed(val_top1, window)
    return len(s) - 1 - max(range(len(s)), key=lambda i: (s[i], -i)) if s else 0


def _finish(run: TrainRun) -> TrainResult:
    """Dense best weights back in the model, training BatchNorm fused away, and what ran."""
    model, cfg, loop, ema = run.model, run.cfg, run.loop, run.ema
    run.bar.close()
    untie_fold_slots_(model)
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    pooled = pool_slot_statistics_(model, model.fold) if cfg.tie_slots else 0
    if cfg.train_batchnorm:
        fuse_train_batchnorm_(model)
    features = {"precision": run.precision, "device": str(run.device), "channels_last": cfg.channels_last,
                "world_size": run.dist.world_size, "backend": run.dist.backend, "resumed_from": run.resumed,
                "curriculum": run.schedule if cfg.curriculum else None, "early_stopped": loop.stopped,
                "weight_average": {"decay": cfg.ema_decay, "updates": ema.updates} if ema is not None else None,
                "slot_statistics_pooled": pooled}
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
    until_epoch: int | None = None,
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
    only rank 0 writes files and shows progress. ``until_epoch`` pauses the run after that epoch
    (its state saved; the schedule still spans ``cfg.epochs``): ``resume=True`` continues it.
    """
    check_train_inputs(model, train_ds, val_ds, cfg, teacher_logits, out_dir, resume, state_every_steps)
    run = setup_run(model, train_ds, val_ds, cfg, out_dir, teacher_logits)
    if resume:
        _resume(run)
    _start(run, progress)
    loop, steps = run.loop, run.steps
    for epoch in range(loop.epoch, min(cfg.epochs, until_epoch or cfg.epochs)):
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

"""The training loop: folded inputs from random groups of f images, per-image loss and metrics."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from foldcnn.data.base import ArrayDataset
from foldcnn.data.grouping import FoldBatcher, fold_groups, gather_fold_batch
from foldcnn.fold import unfold_logits
from foldcnn.models import FoldedCNN
from foldcnn.train.config import TrainConfig
from foldcnn.train.metrics import classification_metrics

EVAL_GROUP_SEED = 1234  # one fixed random grouping for every evaluation


@dataclass
class TrainResult:
    best_epoch: int
    best_val_top1: float
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


@torch.no_grad()
def predict_logits(model: FoldedCNN, images: torch.Tensor, *, batch_size: int = 1024,
                   seed: int = EVAL_GROUP_SEED) -> torch.Tensor:
    """Per-image logits (N, K) for uint8 or float images (N, C, H, W).

    Images are grouped into folds in a fixed random order (consecutive frames are near
    duplicates, DESIGN section 2); the result is returned in input order. The last partial
    fold is zero-padded and its padded outputs discarded.
    """
    was_training = model.training
    model.eval()
    n, fold = images.shape[0], model.fold
    flat = fold_groups(n, fold, seed).view(-1)
    no_labels = torch.zeros(n, dtype=torch.int64)
    step = max(fold, batch_size - batch_size % fold)
    out = torch.empty(n, model.num_classes)
    for start in range(0, len(flat), step):
        index = flat[start:start + step]
        x, _, mask = gather_fold_batch(images, no_labels, index, fold)
        out[index[mask]] = unfold_logits(model(x), fold)[mask]
    model.train(was_training)
    return out


def evaluate(model: FoldedCNN, dataset: ArrayDataset, *, batch_size: int = 1024) -> dict:
    """top-1/top-5/per-class metrics of ``model`` on ``dataset``, per image."""
    logits = predict_logits(model, dataset.images, batch_size=batch_size)
    return classification_metrics(logits, dataset.labels, dataset.classes)


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 arithmetic is fast here: AVX-512 bf16 or AMX on a CPU, Ampere or later on CUDA."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, c, lambda: False)() for c in checks)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device | str = "cpu"):
    """An autocast context for the forward pass (a no-op for fp32)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def check_compatible(model: FoldedCNN, dataset: ArrayDataset, what: str) -> None:
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"the {what} images have shape {tuple(dataset.input_shape)} but the model expects "
            f"{tuple(model.input_shape)} (C, H, W); build the model with input_size="
            f"{tuple(dataset.input_shape[1:])} or resize the data"
        )
    if dataset.num_classes != model.num_classes:
        raise ValueError(
            f"the {what} data has {dataset.num_classes} classes but the model has {model.num_classes}"
        )
    if len(dataset) < 1:
        raise ValueError(f"the {what} data is empty")


def train_model(
    model: FoldedCNN,
    train_ds: ArrayDataset,
    val_ds: ArrayDataset,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch.

    Writes ``metrics.jsonl`` (one line per epoch) to ``out_dir`` when given.
    """
    from tqdm.auto import tqdm

    check_compatible(model, train_ds, "training")
    check_compatible(model, val_ds, "validation")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fold = model.fold
    precision = resolve_precision(cfg.precision)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    batcher = FoldBatcher(train_ds, fold=fold, batch_size=cfg.images_per_step(fold), seed=cfg.seed, shuffle=True)
    steps = len(batcher)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps)
    log_path = Path(out_dir) / "metrics.jsonl" if out_dir else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    best = TrainResult(best_epoch=-1, best_val_top1=-math.inf)
    best_state = None
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps, disable=not progress, unit="step", leave=False)
    for epoch in range(cfg.epochs):
        model.train()
        batcher.set_epoch(epoch)
        t0, loss_sum, seen, correct = time.perf_counter(), 0.0, 0, 0
        for x, y, mask in batcher:
            with autocast_for(precision):
                out = model(x.contiguous(memory_format=memory_format))
            logits = unfold_logits(out.float(), fold)[mask]
            y = y[mask]
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update(1)
        val = evaluate(model, val_ds, batch_size=cfg.eval_batch_size)
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "train_top1": round(correct / max(seen, 1), 5),
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "lr": opt.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - t0, 2),
        }
        bar.set_postfix(loss=row["train_loss"], val=row["val_top1"])
        best.history.append(row)
        if log_path:
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        if on_epoch:
            on_epoch(row)
        if val["top1"] > best.best_val_top1:
            best.best_val_top1, best.best_epoch = val["top1"], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif cfg.patience and epoch + 1 - best.best_epoch >= cfg.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    best.train_seconds = round(time.perf_counter() - t_start, 2)
    return best

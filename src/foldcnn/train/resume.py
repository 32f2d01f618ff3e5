"""Training state for resume: ``train_state.pt`` in the run directory.

It holds everything needed to continue a run exactly where it stopped: model, optimizer and
scheduler state, the epoch and the step within it, the partial epoch's running sums, the best
epoch's weights and metrics, the history, RNG states and a fingerprint of config, model and
data. It is written atomically (a kill leaves the previous file intact) and holds only types
that ``torch.load(weights_only=True)`` accepts: tensors, dicts, lists, strings and numbers
(config and history travel as JSON strings). Nothing else is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.errors import FoldcnnError
from foldcnn.train.config import TrainConfig

__all__ = ["TRAIN_STATE_FILE", "ResumeError", "LoopState", "dataset_sha256", "fingerprint",
           "check_fingerprint", "save_train_state", "load_train_state", "pack_state", "unpack_state"]

TRAIN_STATE_FILE = "train_state.pt"
STATE_FORMAT = "foldcnn-train-state"
STATE_VERSION = 1
# Config fields that do not change the result: a resume may differ in them.
_FREE_FIELDS = ("threads", "eval_batch_size", "device")


class ResumeError(FoldcnnError, ValueError):
    """A training state that is missing, damaged, or belongs to another run."""


@dataclass
class LoopState:
    """Where the loop stands: ``epoch`` epochs are done and ``step`` steps of the next one."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0  # running sums of the epoch in progress (all ranks together)
    seen: int = 0
    correct: int = 0
    best_epoch: int = -1
    best_val_top1: float = -math.inf
    best_state: dict | None = None
    history: list = field(default_factory=list)
    stopped: bool = False  # early stopping ended the run
    train_seconds: float = 0.0


def dataset_sha256(ds: ArrayDataset) -> str:
    """Content hash of a data set: images, labels and class names (not file names or order of reading)."""
    h = hashlib.sha256()
    h.update(json.dumps([list(ds.images.shape), list(ds.classes)]).encode())
    h.update(ds.images.contiguous().numpy().tobytes())
    h.update(ds.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def fingerprint(cfg, model, train: ArrayDataset, val: ArrayDataset, teacher: torch.Tensor | None) -> dict:
    """What a resumed run must share with the run that wrote the state."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in _FREE_FIELDS}
    mcfg = getattr(model, "config", None)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {
        "config": json.dumps(config, sort_keys=True),
        "model": json.dumps(mcfg.to_dict() if mcfg is not None else shapes, sort_keys=True),
        "train_data": dataset_sha256(train),
        "val_data": dataset_sha256(val),
        "teacher_logits": _tensor_sha256(teacher) if teacher is not None else "none",
    }


def check_fingerprint(saved: dict, now: dict, where: str | Path) -> None:
    """Raise :class:`ResumeError` naming what differs between the saved run and this one."""
    problems = []
    old, new = json.loads(saved.get("config") or "{}"), json.loads(now["config"])
    # A field added to TrainConfig after the state was written counts as its default there.
    defaults = {k: v for k, v in TrainConfig().to_dict().items() if k not in _FREE_FIELDS}
    if old:
        old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if keys:
        problems.append("config (" + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys) + ")")
    names = {"model": "model", "train_data": "training data", "val_data": "validation data",
             "teacher_logits": "teacher logits"}
    problems += [names[k] for k in names if saved.get(k) != now[k]]
    if problems:
        raise ResumeError(f"{where} was written by a different run (different {'; '.join(problems)}); resume "
                          "with the same options and data, or start a new run in another directory")


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def pack_state(loop: LoopState, model, opt, sched, cfg, fp: dict, device: torch.device, ema=None) -> dict:
    """Everything :func:`unpack_state` needs; ``ema`` is the run's WeightAverage, if any."""
    return {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "model": _cpu(model.state_dict()),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": loop.epoch,
        "step": loop.step,
        "running": {"loss_sum": float(loop.loss_sum), "seen": int(loop.seen), "correct": int(loop.correct)},
        "best": {"epoch": loop.best_epoch, "val_top1": float(loop.best_val_top1),
                 "state": _cpu(loop.best_state) if loop.best_state is not None else None},
        "history": json.dumps(loop.history),
        "stopped": loop.stopped,
        "train_seconds": float(loop.train_seconds),
        "rng": _rng_state(device),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "fingerprint": fp,
        "ema": ema.state_dict() if ema is not None else None,
    }


def unpack_state(state: dict, model, opt, sched, device: torch.device, where: str | Path, ema=None) -> LoopState:
    """Load ``state`` into model, optimizer, scheduler and ``ema``; returns the loop position."""
    from foldcnn.checkpoints import CheckpointError, load_state_into

    try:
        load_state_into(model, state["model"], str(where))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"], device)
        best = state["best"]
        best_state = best["state"]
        if best_state is not None:
            best_state = {k: v.to(device) for k, v in best_state.items()}
        run = state["running"]
        return LoopState(epoch=int(state["epoch"]), step=int(state["step"]), loss_sum=float(run["loss_sum"]),
                         seen=int(run["seen"]), correct=int(run["correct"]), best_epoch=int(best["epoch"]),
                         best_val_top1=float(best["val_top1"]), best_state=best_state,
                         history=json.loads(state["history"]), stopped=bool(state["stopped"]),
                         train_seconds=float(state["train_seconds"]))
    except (KeyError, TypeError, ValueError, RuntimeError, CheckpointError) as e:
        raise ResumeError(f"{where} is damaged or incomplete ({type(e).__name__}: {e}); delete it to start "
                          "the run over") from None


def save_train_state(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically: a crash mid-write leaves the previous file as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_train_state(path: str | os.PathLike) -> dict:
    """Load a ``train_state.pt`` with ``weights_only=True``; :class:`ResumeError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"there is no training state to resume at {path}; run without --resume (resume=False) "
                          "to start the run, or point --out at the run directory that holds it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ResumeError(f"{path} is damaged and cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                          "delete it to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not a foldcnn training state; delete it or choose another run directory")
    if state.get("format_version", 0) > STATE_VERSION:
        raise ResumeError(f"{path} was written by a newer foldcnn; upgrade foldcnn to resume it")
    return state

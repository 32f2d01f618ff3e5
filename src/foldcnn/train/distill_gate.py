"""Distillation that cannot hurt: an early check against an undistilled twin, and off when it loses.

A teacher helps a folded student on the generated game tasks (docs/accuracy.md), but KL
distillation from an over-confident teacher trained on a small set drags the student down. So a
distilled run first trains to ``CHECK_FRACTION`` of its epochs beside an undistilled twin (same
start, same schedule, same fold groups); when the distilled run's validation top-1 (mean of its
last ``PLATEAU_WINDOW`` epochs) is below the twin's, the run goes on from the twin's state without
the teacher. Both halves use the ordinary resume machinery, so the result equals a plain run of
whichever recipe won, and a killed run resumes. The decision goes to ``distill_check.json`` and
run.json.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from foldcnn.checkpoints import atomic_write
from foldcnn.data.base import ArrayDataset
from foldcnn.models import FoldedCNN
from foldcnn.train.config import PLATEAU_WINDOW, TrainConfig
from foldcnn.train.distributed import dist_info
from foldcnn.train.loop import TrainResult, smoothed, train_model, write_metrics
from foldcnn.train.resume import TRAIN_STATE_FILE

__all__ = ["CHECK_FRACTION", "CHECK_FILE", "PROBE_DIR", "check_epoch", "decide", "final_choice", "resume_state", "train_with_check"]

CHECK_FRACTION = 0.25  # the one-cycle peak: both runs have left the flat start behind
CHECK_FILE, PROBE_DIR = "distill_check.json", "distill_check"


def resume_state(out_dir: str | Path) -> Path:
    """The state a resumed run continues from: the run's own, or (killed while the undistilled twin
    trained, before the run's first state) the twin's."""
    own, twin = Path(out_dir) / TRAIN_STATE_FILE, Path(out_dir) / PROBE_DIR / TRAIN_STATE_FILE
    return twin if twin.is_file() and not own.is_file() else own


def check_epoch(epochs: int) -> int:
    return max(1, math.ceil(CHECK_FRACTION * epochs))


def decide(distilled_val: list[float], undistilled_val: list[float], epoch: int) -> dict:
    """Keep distillation unless the distilled run's mean val top-1 over its last PLATEAU_WINDOW
    epochs is below the undistilled twin's; the record for run.json."""
    def tail_mean(v):
        tail = v[-PLATEAU_WINDOW:]
        return round(sum(tail) / len(tail), 5) if tail else 0.0

    d, u = tail_mean(distilled_val), tail_mean(undistilled_val)
    kept = d >= u
    reason = (f"at epoch {epoch} the distilled run's val top-1 ({d:.2%}, mean of {PLATEAU_WINDOW} epochs) "
              f"{'was not below' if kept else 'was below'} the undistilled twin's ({u:.2%})")
    return {"epoch": epoch, "distilled_val_top1": d, "undistilled_val_top1": u, "kept": kept,
            "reason": reason + ("" if kept else "; distillation switched off, the run went on without the teacher")}


def final_choice(distilled: TrainResult, undistilled: TrainResult) -> dict:
    """Keep the distilled run unless the undistilled twin, trained to its own end on the same budget,
    did better on validation: its best val top-1, then (a tie) its best smoothed val top-1."""
    def key(r: TrainResult):
        vals = [row["val_top1"] for row in r.history]
        return round(r.best_val_top1, 5), round(max(smoothed(vals)), 5) if vals else 0.0

    d, u = key(distilled), key(undistilled)
    kept = d >= u
    reason = (f"at the end the distilled run's best val top-1 was {d[0]:.2%} (epoch {distilled.best_epoch}), the "
              f"undistilled twin's {u[0]:.2%} (epoch {undistilled.best_epoch})")
    if d[0] == u[0]:
        reason += f", best {PLATEAU_WINDOW}-epoch means {d[1]:.2%} and {u[1]:.2%}"
    return {"distilled_best_val_top1": d[0], "undistilled_best_val_top1": u[0], "kept": kept,
            "reason": reason + ("" if kept else "; the undistilled twin's weights were kept")}


def train_with_check(model: FoldedCNN, train_ds: ArrayDataset, val_ds: ArrayDataset, cfg: TrainConfig,
                     out_dir: str | Path, teacher_logits: torch.Tensor | None, *, resume: bool = False,
                     progress: bool = True, state_every_steps: int = 500, on_epoch=None, finish_twin: bool = False
                     ) -> tuple[TrainResult, dict | None]:
    """train_model, with the early distillation check when ``cfg.distill_check`` and a teacher are on.
    ``on_epoch`` sees the run's own epochs (the distilled ones before the check), not the twin's;
    the check epoch's call waits until the twin has trained and the check has decided, and then sees
    the winner's last epoch, with ``metrics.jsonl`` holding the winner's curve (a search judging a
    candidate at that epoch judges the recipe the run goes on with: an undistilled twin well ahead
    of a slow distilled start is not abandoned with it).
    ``finish_twin`` (small sets: the budget was extended): when the check kept the teacher, the twin
    also trains to its end and the better of the two on validation is kept (``final_choice``, in the
    record as ``final``); ``model`` then holds the twin's weights where it won.

    Returns (result, the check's record or None when no check ran)."""
    run = dict(progress=progress, state_every_steps=state_every_steps)
    own = dict(run, on_epoch=on_epoch)
    out = Path(out_dir)
    if teacher_logits is None or not cfg.distill_check or dist_info().enabled or cfg.epochs < 2:
        return train_model(model, train_ds, val_ds, cfg, out_dir=out, teacher_logits=teacher_logits,
                           resume=resume, **own), None
    plain, start = replace(cfg, distill="none"), copy.deepcopy(model)
    record_path = out / CHECK_FILE
    if resume and record_path.is_file():
        record = json.loads(record_path.read_text())
    else:
        epoch = check_epoch(cfg.epochs)
        probe_dir = out / PROBE_DIR
        before_check = (lambda row: row["epoch"] < epoch and on_epoch(row)) if on_epoch else None
        first = train_model(copy.deepcopy(model), train_ds, val_ds, cfg, out_dir=out, until_epoch=epoch,
                            teacher_logits=teacher_logits, resume=resume and (out / TRAIN_STATE_FILE).is_file(),
                            **dict(run, on_epoch=before_check))
        twin = train_model(copy.deepcopy(model), train_ds, val_ds, plain, out_dir=probe_dir, until_epoch=epoch,
                           resume=resume and (probe_dir / TRAIN_STATE_FILE).is_file(), **run)
        record = decide([r["val_top1"] for r in first.history], [r["val_top1"] for r in twin.history], epoch)
        record["state_copied"] = record["kept"]
        atomic_write(record_path, json.dumps(record, indent=2).encode())
        if on_epoch and first.history:  # the check epoch's call, on the curve the run goes on with
            winner = first if record["kept"] else twin
            write_metrics(out, winner.history)
            on_epoch(winner.history[-1])
    if not record["state_copied"]:  # go on from the twin: its state, its metrics (a killed copy is redone)
        tmp = out / (TRAIN_STATE_FILE + ".twin")
        shutil.copyfile(out / PROBE_DIR / TRAIN_STATE_FILE, tmp)
        tmp.replace(out / TRAIN_STATE_FILE)
        record["state_copied"] = True
        atomic_write(record_path, json.dumps(record, indent=2).encode())
    cfg_run, teacher = (cfg, teacher_logits) if record["kept"] else (plain, None)
    result = train_model(model, train_ds, val_ds, cfg_run, out_dir=out, teacher_logits=teacher, resume=True, **own)
    if finish_twin and record["kept"]:
        twin = train_model(start, train_ds, val_ds, plain, out_dir=out / PROBE_DIR, resume=True, **run)
        record["final"] = final_choice(result, twin)
        atomic_write(record_path, json.dumps(record, indent=2).encode())
        if not record["final"]["kept"]:
            model.load_state_dict(start.state_dict())
            result = twin
    return result, record

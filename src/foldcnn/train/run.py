"""One training run end to end: data -> model -> train -> test -> checkpoint + run manifest.

Every check that needs no training data (model name, teacher, resume state, data layout) runs
before any image is generated or read; checks that need the data (classes, sizes, the
teacher's task) run before the first training step.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from foldcnn.checkpoints import (
    CALIBRATION_IMAGES,
    atomic_write,
    load_state_into,
    read_config,
    read_state_dict,
    save_checkpoint,
)
from foldcnn.errors import OutputExistsError, UsageError
from foldcnn.models import create_model, model_entry
from foldcnn.models.imported import accepts_keyword, is_import_path
from foldcnn.models.spec import ModelSpec
from foldcnn.train.aids import aid_notes, aid_report, zero_init_head_
from foldcnn.train.symmetry import slot_diagonal_init_
from foldcnn.train.config import PLATEAU_WINDOW, RunOptions, TrainConfig, fit_budget
from foldcnn.train.devices import resolve_device
from foldcnn.train.distill import check_teacher_fold, load_teacher, teacher_logits, teacher_sha256
from foldcnn.train.distributed import dist_info
from foldcnn.train.distill_gate import CHECK_FILE, resume_state, train_with_check
from foldcnn.train.evaluation import INPUT_ORDER, regrouping_metrics
from foldcnn.train.loop import evaluate, smoothed
from foldcnn.train.resume import TRAIN_STATE_FILE, dataset_sha256, load_train_state
from foldcnn.train.sources import SPLIT_SEED_OFFSETS, DataSpec, Splits, check_data_spec, load_splits

__all__ = ["DataSpec", "ModelSpec", "RunOptions", "TrainConfig", "Splits", "SPLIT_SEED_OFFSETS", "load_splits", "build_model_for", "run_training",
           "TEACHER_CACHE", "check_out_dir", "zero_init_head_"]

# run.json's layout; raised when a key changes meaning (2: test metrics folded in input order, as foldcnn eval).
RUN_SCHEMA_VERSION = 2
# Teacher logits (N_train, K) of a run, reused while teacher weights and training data are the same.
TEACHER_CACHE = "teacher_logits.safetensors"

STALE_RUN_FILES = ("run.json", TRAIN_STATE_FILE, CHECK_FILE)  # removed by overwrite=True: never mistaken for the new run's


def check_out_dir(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse to start a new run over an earlier one: a non-empty ``out_dir`` needs ``resume``
    (continue it) or ``overwrite`` (replace it). Creates the folder, so an unwritable path fails
    here, before any data is read, with the OSError naming it."""
    out = Path(out_dir)
    if resume and overwrite:
        raise UsageError("resume and overwrite exclude each other: --resume continues the run in --out, "
                         "--overwrite starts a new one there")
    held = sorted(p.name for p in out.iterdir() if p.name != TEACHER_CACHE) if out.is_dir() else []
    if held and not (resume or overwrite):
        few = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise OutputExistsError(f"{out} is not empty (it holds {few}); pass --resume to continue the run in it, "
                                "--overwrite to start a new run there, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".foldcnn-write-test"
    probe.touch()
    probe.unlink()
    if overwrite:
        for name in STALE_RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return out


def build_model_for(model_name: str, splits: Splits, fold: int, channel_multiple: int | None,
                    model_kwargs: dict | None = None, width_mult: float | None = None):
    """A model sized for the data: a zoo builder gets num_classes and input_size; a model by import
    path gets the images' input_shape, and num_classes when its builder takes it and none was given."""
    _, h, w = splits.train.input_shape
    k = splits.train.num_classes
    if fold > len(splits.train):
        raise UsageError(f"fold={fold} is larger than the {len(splits.train)} training images; "
                         "use a smaller --fold or more training data")
    if not is_import_path(model_name):
        kw = {"num_classes": k, "input_size": (h, w), **(model_kwargs or {})}
        return create_model(model_name, fold=fold, width_mult=width_mult, channel_multiple=channel_multiple, **kw)
    kw = {**(model_kwargs or {}), "input_shape": splits.train.input_shape}
    if "num_classes" not in kw and accepts_keyword(model_name, "num_classes"):
        kw["num_classes"] = k
    model = create_model(model_name, fold=fold, width_mult=width_mult, channel_multiple=channel_multiple, **kw)
    if model.num_classes != k:
        raise UsageError(f"model {model_name} emits {model.num_classes} logits per image but the data has {k} "
                         f"classes; build it for {k} (e.g. --model-kwargs '{{\"num_classes\": {k}}}')")
    return model


def _check_teacher_args(cfg: TrainConfig, teacher, allow_folded: bool) -> None:
    if cfg.distill != "none" and teacher is None:
        raise UsageError(f"distill={cfg.distill!r} needs a teacher checkpoint (--teacher CKPT)")
    if teacher is not None:
        if cfg.distill == "none":
            raise UsageError("a teacher was given but distill is 'none'; choose --distill mse or kl")
        check_teacher_fold(int(read_config(teacher).get("fold", 1)), str(teacher), allow_folded)


def _teacher_logits(teacher, splits: Splits, cfg: TrainConfig, out: Path, allow_folded: bool, write: bool):
    """Teacher logits (N_train, K), computed once per (teacher, training data) and cached in the run."""
    from safetensors.torch import load_file, save_file

    if teacher is None:
        return None, None
    model = load_teacher(teacher, splits.train, allow_folded=allow_folded)
    key = {"teacher_sha256": teacher_sha256(teacher), "train_sha256": dataset_sha256(splits.train)}
    info = {"teacher": str(teacher), **key, "kind": cfg.distill, "weight": cfg.distill_weight,
            "temperature": cfg.temperature if cfg.distill == "kl" else None, "teacher_fold": model.fold}
    cache = out / TEACHER_CACHE
    if cache.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(cache), "pt") as fh:
                if (fh.metadata() or {}) == key:
                    return load_file(str(cache))["logits"], {**info, "cached": True}
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    model.to(resolve_device(cfg.device, dist_info().local_rank))
    logits = teacher_logits(model, splits.train.images, batch_size=cfg.eval_batch_size)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        save_file({"logits": logits.contiguous()}, str(tmp), metadata=key)
        tmp.replace(cache)
    return logits, {**info, "cached": False}


def still_improving(history: list[dict], val_images: int, points: float = 0.5) -> dict | None:
    """Whether validation was still rising at the end: the smoothed val top-1 of the last epoch
    against its value a tenth of the epochs earlier (at least PLATEAU_WINDOW), by at least
    ``points`` and two validation images; None under 2 epochs."""
    vals = smoothed([r["val_top1"] for r in history])
    if len(vals) < 2:
        return None
    back = min(len(vals) - 1, max(PLATEAU_WINDOW, round(0.1 * len(vals))))
    gain = round(100 * (vals[-1] - vals[-1 - back]), 2)
    return {"yes": gain >= max(points, 200 / max(val_images, 1)), "val_top1_gain_points": gain, "over_epochs": back}


def _versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "foldcnn": __import__("foldcnn").__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cuda": torch.version.cuda}


def _check_inputs(model: ModelSpec, data: DataSpec, cfg: TrainConfig, run: RunOptions, *, is_main: bool):
    """Every check that needs no training data, before any image is generated or read; returns the
    given weights' state_dict (or None)."""
    if model.name is None:
        raise UsageError("name the model (--model): only a generated task (--task) has a model of its own")
    model_entry(model.name)  # an unknown model fails before any data is generated or read
    _check_teacher_args(cfg, run.teacher, run.allow_folded_teacher)
    if model.weights is not None and model.fold != 1:
        raise UsageError(f"weights {model.weights} are the original's (fold=1); a folded model starts from fresh "
                         "weights and learns from the original as its teacher (foldcnn fold does both)")
    if run.evaluate_only and model.weights is None:
        raise UsageError("evaluate_only needs the trained weights (weights=FILE, --weights)")
    state = read_state_dict(model.weights) if model.weights is not None else None  # unreadable: fail before the data
    check_data_spec(data)
    if is_main:
        check_out_dir(run.out_dir, resume=run.resume, overwrite=run.overwrite)
    if run.resume:
        load_train_state(resume_state(Path(run.out_dir)))  # missing or damaged: fail before the data
    return state


def _prepare_model(model: ModelSpec, splits: Splits, cfg: TrainConfig, state, resume: bool, say):
    """The model sized for the data, from the given weights or a fresh start (zero head, slot-diagonal
    where on), and the training aids that apply to it: (model, aids)."""
    torch.manual_seed(cfg.seed)  # --seed seeds the initialization
    spec, model = model, build_model_for(model.name, splits, model.fold, model.channel_multiple, model.kwargs,
                                         model.width_mult)
    if state is not None:
        load_state_into(model, state, str(spec.weights))
    diagonal = cfg.slot_diagonal_init if cfg.slot_diagonal_init is not None else is_import_path(spec.name)
    aids = aid_report(model, train_batchnorm=cfg.train_batchnorm, zero_init_head=cfg.zero_init_head and state is None,
                      tie_slots=cfg.tie_slots, slot_diagonal_init=diagonal and state is None)
    for note in aid_notes(aids):
        say(note)
    if cfg.zero_init_head and not resume and state is None:
        zero_init_head_(model)
    if aids["slot_diagonal_init"]["on"] and not resume:
        slot_diagonal_init_(model, spec.fold)
    return model, aids


def _summary(model_name: str, fold: int, test: dict, regrouping: dict | None, result, val_images: int,
             test_seconds: float) -> dict:
    """run.json's summary: test and best validation top-1, epochs, times, the fold-mate flip rate."""
    summary = {
        "model": model_name,
        "fold": fold,
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "best_val_top1": result.best_val_top1 if result else None,
        "best_epoch": result.best_epoch if result else 0,
        "epochs_run": len(result.history) if result else 0,
        "train_seconds": result.train_seconds if result else 0.0,
        "test_seconds": round(test_seconds, 2),
    }
    if result is not None:
        summary["still_improving"] = still_improving(result.history, val_images)
    if regrouping is not None:
        summary["test_flip_rate"] = regrouping["flip_rate"]
        summary["test_top1_spread"] = regrouping["top1_spread"]
    return summary


def _loop_features(cfg: TrainConfig, result) -> dict:
    """What the training loop ran with (run.json's features): precision, device, curriculum, resume,
    ranks, early stopping, weight average, pooled BatchNorm statistics."""
    f = result.features if result else {"resumed_from": None, "world_size": 1, "early_stopped": False,
                                         "weight_average": None, "curriculum": None}
    return {
        "precision": f.get("precision"), "device": f.get("device"), "channels_last": f.get("channels_last"),
        "curriculum": {"end_fraction": cfg.curriculum_end, "active_classes": f["curriculum"]} if cfg.curriculum
        else None,
        "resumed_from": f["resumed_from"],
        "distributed": {"world_size": f["world_size"], "backend": f["backend"]} if f["world_size"] > 1 else None,
        "early_stopping": {"patience": cfg.patience, "plateau_patience": cfg.plateau_patience,
                           "stopped": f["early_stopped"]} if cfg.patience or cfg.plateau_patience else None,
        "weight_average": f["weight_average"],
        # BatchNorms whose running statistics were averaged over the fold slots (symmetry.pool_slot_statistics_)
        "slot_statistics_pooled": f.get("slot_statistics_pooled"),
    }


def _save(out: Path, model, splits: Splits, cfg: TrainConfig, summary: dict) -> None:
    """The checkpoint, with a seeded sample of the training images for int8 calibration."""
    generator = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(splits.train), generator=generator)[:CALIBRATION_IMAGES]
    save_checkpoint(out / "checkpoint", model, splits.train.classes,
                    metrics=summary, extra={"data": splits.meta, "train_config": cfg.to_dict()},
                    calibration_images=splits.train.images[pick])


def run_training(model: ModelSpec, data: DataSpec, train: TrainConfig, run: RunOptions) -> dict:
    """Train, evaluate on the test split, save ``run.out_dir/checkpoint`` and ``run.out_dir/run.json``;
    returns that run manifest.

    ``model`` names the CNN (a zoo name or an import path; its ``kwargs`` go to the builder;
    ``weights`` start the original from trained weights, and ``run.evaluate_only`` then skips
    training); ``train.distill`` with ``run.teacher`` (a fold=1 checkpoint of the same task) mixes
    distillation into the loss. Every check that needs no data runs before any image is read. Under
    an initialized process group (torchrun) every rank trains and only rank 0 evaluates and writes;
    the other ranks return ``{"rank": r}``.
    """
    dist = dist_info()
    out, model = Path(run.out_dir), model.replace(name=model.name or data.task)  # None: the task's own model
    say = run.log if (run.log is not None and dist.is_main) else (lambda _msg: None)
    progress = not run.quiet and dist.is_main
    state = _check_inputs(model, data, train, run, is_main=dist.is_main)
    splits = load_splits(data, progress=progress)
    for note in splits.meta.get("notes") or []:
        say(note)
    train, budget = fit_budget(train, len(splits.train), model.fold)
    if budget["extended"] and not run.evaluate_only:
        say(f"{len(splits.train)} training images: {budget['epochs_asked']} epochs would be "
            f"{budget['epochs_asked'] * budget['steps_per_epoch']} steps; training up to {train.epochs} epochs "
            f"({budget['steps']} steps), stopping when validation stops improving")
    net, aids = _prepare_model(model, splits, train, state, run.resume,
                               say if not run.evaluate_only else (lambda _msg: None))
    t_logits, distill_info = _teacher_logits(run.teacher, splits, train, out, run.allow_folded_teacher, dist.is_main)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    result = check = None
    if not run.evaluate_only:
        result, check = train_with_check(net, splits.train, splits.val, train, out, t_logits, resume=run.resume,
                                         progress=progress, state_every_steps=run.state_every_steps,
                                         on_epoch=run.on_epoch, finish_twin=budget["extended"])
        for c in (c for c in (check, (check or {}).get("final")) if c and not c["kept"]):
            say(f"fold {model.fold}: {c['reason']}")
    if not dist.is_main:
        return {"rank": dist.rank}
    manifest = _evaluate_and_describe(net, model, splits, train, run, result, aids,
                                      distill_info and {**distill_info, "check": check}, budget)
    _save(out, net, splits, train, manifest["summary"])
    atomic_write(out / "run.json", json.dumps(manifest, indent=2).encode())
    return manifest


def _evaluate_and_describe(net, model: ModelSpec, splits: Splits, train: TrainConfig, run: RunOptions, result,
                           aids, distillation, budget) -> dict:
    """Test metrics (folded in input order, as foldcnn eval) and the run manifest around them."""
    t0 = time.perf_counter()
    test = evaluate(net, splits.test, batch_size=train.eval_batch_size, seed=INPUT_ORDER)  # as foldcnn eval
    regrouping = regrouping_metrics(net, splits.test, regroupings=run.regroupings, batch_size=train.eval_batch_size) \
        if model.fold > 1 and run.regroupings > 0 else None
    summary = _summary(model.name, model.fold, test, regrouping, result, len(splits.val), time.perf_counter() - t0)
    features = {"fold": model.fold, "channel_multiple": model.channel_multiple,
                "weights": {"path": str(model.weights), "evaluate_only": run.evaluate_only}
                if model.weights is not None else None,
                "training_aids": None if run.evaluate_only else aids,
                "distillation": distillation or None,
                "budget": budget, **_loop_features(train, result)}
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "command": list(run.command) if run.command else sys.argv,
        "seed": train.seed,
        "summary": summary,
        "test_metrics": test,
        "test_regrouping": regrouping,
        "train_config": train.to_dict(),
        "features": features,
        "data": splits.meta,
        "data_sha256": {n: dataset_sha256(getattr(splits, n)) for n in ("train", "val", "test")},
        "model_config": net.config.to_dict(),
        "versions": _versions(),
    }

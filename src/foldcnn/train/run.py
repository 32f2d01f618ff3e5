"""One training run end to end: data -> model -> train -> test -> checkpoint + run manifest."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.models import create_model, model_entry
from foldcnn.train.checkpoint import CALIBRATION_IMAGES, save_checkpoint
from foldcnn.train.config import TrainConfig
from foldcnn.train.loop import evaluate, train_model

# Seeds of the three splits of a generated task, derived from the run's data seed.
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_029}


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from: a generated game task or an image folder."""

    task: str | None = None
    data_dir: str | None = None
    train_size: int = 6000
    val_size: int = 1000
    test_size: int = 2000
    seed: int = 0
    input_size: tuple[int, int] | None = None

    def __post_init__(self):
        if (self.task is None) == (self.data_dir is None):
            raise ValueError("give exactly one data source: a generated task (--task) or a folder (--data)")


@dataclass
class Splits:
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    meta: dict = field(default_factory=dict)


def load_splits(spec: DataSpec) -> Splits:
    if spec.task is not None:
        from foldcnn.data.game_text import GameTextDataset

        sizes = {"train": spec.train_size, "val": spec.val_size, "test": spec.test_size}
        parts = {k: GameTextDataset(spec.task, n, seed=spec.seed + SPLIT_SEED_OFFSETS[k]) for k, n in sizes.items()}
        return Splits(**parts, meta={"source": "generated", "task": spec.task, "seed": spec.seed, "sizes": sizes})
    return _folder_splits(spec)


def _folder_splits(spec: DataSpec) -> Splits:
    from foldcnn.data.readers import load_image_folder

    root = Path(spec.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    names = ("train", "val", "test")
    if not all((root / n).is_dir() for n in names):
        raise ValueError(
            f"{root} must hold train/, val/ and test/ subfolders, each with one folder per class "
            "(as written by 'foldcnn data game')"
        )
    parts = {"train": load_image_folder(root / "train", input_size=spec.input_size)}
    classes = parts["train"].classes
    for n in ("val", "test"):  # a small split may lack a class: keep train's label order
        parts[n] = load_image_folder(root / n, input_size=spec.input_size, classes=classes,
                                     allow_empty_classes=True)
    for n in ("val", "test"):
        if parts[n].classes != classes:
            raise ValueError(f"{root / n} has classes {parts[n].classes}, but train/ has {classes}")
    if len(classes) < 2:
        raise ValueError(f"{root / 'train'} has only {len(classes)} class folder(s); a classifier needs at least 2")
    manifest = root / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None
    return Splits(**parts, meta={"source": "folder", "path": str(root), "manifest_sha256": digest})


def build_model_for(model_name: str, splits: Splits, fold: int, channel_multiple: int | None):
    """A zoo model sized for the data (every builder takes num_classes and input_size)."""
    _, h, w = splits.train.input_shape
    kw = {"num_classes": splits.train.num_classes, "input_size": (h, w)}
    if fold > len(splits.train):
        raise ValueError(f"fold={fold} is larger than the {len(splits.train)} training images")
    return create_model(model_name, fold=fold, channel_multiple=channel_multiple, **kw)


def run_training(
    model_name: str,
    data: DataSpec,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    fold: int = 1,
    channel_multiple: int | None = None,
    progress: bool = True,
    command: list[str] | None = None,
) -> dict:
    """Train, evaluate on the test split, save ``out_dir/checkpoint`` and ``out_dir/run.json``."""
    out = Path(out_dir)
    model_entry(model_name)  # an unknown model fails before any data is generated or read
    splits = load_splits(data)
    model = build_model_for(model_name, splits, fold, channel_multiple)
    out.mkdir(parents=True, exist_ok=True)
    result = train_model(model, splits.train, splits.val, cfg, out_dir=out, progress=progress)
    t0 = time.perf_counter()
    test = evaluate(model, splits.test, batch_size=cfg.eval_batch_size)
    summary = {
        "model": model_name,
        "fold": fold,
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "best_val_top1": result.best_val_top1,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": result.train_seconds,
        "test_seconds": round(time.perf_counter() - t0, 2),
    }
    generator = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(splits.train), generator=generator)[:CALIBRATION_IMAGES]
    save_checkpoint(out / "checkpoint", model, splits.train.classes,
                    metrics=summary, extra={"data": splits.meta, "train_config": cfg.to_dict()},
                    calibration_images=splits.train.images[pick])
    manifest = {
        "command": command or sys.argv,
        "summary": summary,
        "test_metrics": test,
        "train_config": cfg.to_dict(),
        "data": splits.meta,
        "model_config": model.config.to_dict(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "foldcnn": __import__("foldcnn").__version__, "threads": torch.get_num_threads()},
    }
    (out / "run.json").write_text(json.dumps(manifest, indent=2))
    return manifest

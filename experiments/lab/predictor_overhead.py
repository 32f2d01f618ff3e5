"""Predictor overhead and int8 agreement, per game CNN (docs/benchmarks.md).

    python experiments/lab/predictor_overhead.py                 # all six game CNNs, f=4, ORT fp32 + int8
    python experiments/lab/predictor_overhead.py --checkpoints runs/accuracy   # agreement on trained f=4 models

For each model: 1024 images already in memory (uint8, generated game crops), the bare backend
session (`Backend.run` on the pre-folded float batch) vs `Predictor.predict_arrays` on the
uint8 images (folding, scaling, softmax, ordering included), same backend object, trials
interleaved; the ratio is Predictor images/s / bare images/s. int8 agreement: the fraction of
images whose int8 class equals the fp32 class, on 2,000 generated test images.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from foldcnn.backends import create_backend
from foldcnn.bench.timing import WallTimer, time_block
from foldcnn.data.game_text import GameTextDataset
from foldcnn.fold import fold_images
from foldcnn.infer import Predictor
from foldcnn.models import create_model
from foldcnn.models.game import GAME_TASKS


def images_per_s(fn, n_images: int, min_seconds: float) -> float:
    fn()  # warm-up
    calls, seconds = time_block(fn, min_seconds, WallTimer())
    return calls * n_images / seconds


def load_model(task: str, fold: int, checkpoints: str | None):
    if checkpoints:
        path = Path(checkpoints) / f"{task}-f{fold}" / "checkpoint"
        if path.exists():
            from foldcnn.checkpoints import load_checkpoint

            return load_checkpoint(path).model, "trained"
    torch.manual_seed(0)
    return create_model(task, fold=fold), "random weights"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(GAME_TASKS))
    p.add_argument("--fold", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.3)
    p.add_argument("--checkpoints", help="runs/accuracy: use trained <task>-f<fold>/checkpoint when present")
    args = p.parse_args()
    print("| model | weights | bare ORT fp32 images/s | Predictor images/s | ratio | int8 agreement with fp32 "
          "| fp32 / int8 top-1 on the 2,000 images |")
    print("|---|---|---|---|---|---|---|")
    for task in args.models:
        model, weights = load_model(task, args.fold, args.checkpoints)
        data = GameTextDataset(task, args.batch_size, seed=11)
        test = GameTextDataset(task, 2000, seed=12)
        images = data.images
        folded = fold_images(images.float() / 255, args.fold).numpy()
        backend = create_backend(model, "ort", max_batch=args.batch_size // args.fold)
        predictor = Predictor(model, backend=backend, batch_size=args.batch_size)
        bare, pred = [], []
        for _ in range(args.trials):  # interleaved
            bare.append(images_per_s(lambda: backend.run(folded), args.batch_size, args.min_seconds))
            pred.append(images_per_s(lambda: predictor.predict_arrays(images), args.batch_size, args.min_seconds))
        fp32_cls, _ = predictor.predict_arrays(test.images)
        int8 = Predictor(model, backend="ort", precision="int8", batch_size=args.batch_size,
                         calibration=GameTextDataset(task, 256, seed=13).images)
        int8_cls, _ = int8.predict_arrays(test.images)
        agree = float(np.mean(fp32_cls == int8_cls))
        labels = test.labels.numpy()
        top1 = f"{100 * np.mean(fp32_cls == labels):.2f}% / {100 * np.mean(int8_cls == labels):.2f}%"
        b, q = statistics.median(bare), statistics.median(pred)
        print(f"| {task} | {weights} | {b:,.0f} | {q:,.0f} | {q / b:.2f} | {100 * agree:.1f}% | {top1} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

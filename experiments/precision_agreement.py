"""Prediction agreement of bf16 and int8 with fp32, for trained originals and folded models.

    python experiments/precision_agreement.py --checkpoints runs/accuracy

For each game task and fold (1 and 4 by default), the trained checkpoint
``<checkpoints>/<task>-f<fold>/checkpoint`` classifies the same 2,000 generated test images
(seed 12, as experiments/predictor_overhead.py) through ``Predictor`` on:

* fp32, torch eager: the reference;
* bf16, torch eager (autocast: convolutions in bf16, some ops kept in fp32);
* bf16, torch.compile (weights and inputs cast to bf16: what ``foldcnn bench`` times as compile/bf16);
* int8, ONNX Runtime static quantization, calibrated on 256 other generated images (seed 13).

Prints a markdown table: per precision, the fraction of images whose class equals the fp32 class,
and top-1 accuracy on the images' labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from foldcnn.data.game_text import GameTextDataset
from foldcnn.infer import Predictor
from foldcnn.models.game import GAME_TASKS
from foldcnn.checkpoints import load_checkpoint

PATHS = (("eager", "bf16"), ("compile", "bf16"), ("ort", "int8"))


def classes(model, backend: str, precision: str, images, calibration, batch_size: int) -> np.ndarray:
    kw = {"calibration": calibration} if precision == "int8" else {}
    predictor = Predictor(model, backend=backend, precision=precision, batch_size=batch_size, **kw)
    try:
        return predictor.predict_arrays(images)[0]
    finally:
        predictor.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="a folder of <task>-f<fold>/checkpoint (runs/accuracy)")
    p.add_argument("--models", nargs="+", default=list(GAME_TASKS))
    p.add_argument("--folds", type=int, nargs="+", default=[1, 4])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args()
    heads = [f"{b} {d}: agreement, top-1" for b, d in PATHS]
    print("| model | fold | fp32 top-1 | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|" * len(PATHS))
    for task in args.models:
        test = GameTextDataset(task, args.images, seed=12)
        calibration = GameTextDataset(task, 256, seed=13).images
        labels = test.labels.numpy()
        for fold in args.folds:
            path = Path(args.checkpoints) / f"{task}-f{fold}" / "checkpoint"
            if not path.exists():
                print(f"| {task} | {fold} | no checkpoint at {path} |" + " |" * len(PATHS))
                continue
            model = load_checkpoint(path).model
            ref = classes(model, "eager", "fp32", test.images, calibration, args.batch_size)
            cells = []
            for backend, precision in PATHS:
                got = classes(model, backend, precision, test.images, calibration, args.batch_size)
                cells.append(f"{100 * np.mean(got == ref):.2f}%, {100 * np.mean(got == labels):.2f}%")
            print(f"| {task} | {fold} | {100 * np.mean(ref == labels):.2f}% | " + " | ".join(cells) + " |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

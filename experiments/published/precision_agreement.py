"""Prediction agreement of bf16 and int8 with fp32, for trained originals and folded models.

    python experiments/published/precision_agreement.py --checkpoints runs/accuracy

For each game task and fold (1 and 4 by default), the trained checkpoint
``<checkpoints>/<task>-f<fold>/checkpoint`` classifies the same 2,000 generated test images
(seed 12, as experiments/lab/predictor_overhead.py) through ``Predictor`` on:

* fp32, torch eager: the reference;
* bf16, torch eager (autocast: convolutions in bf16, some ops kept in fp32);
* bf16, torch.compile (weights and inputs cast to bf16: what ``foldcnn bench`` times as compile/bf16);
* int8, ONNX Runtime static quantization, calibrated on 256 other generated images (seed 13);
* OpenVINO bf16 (inference precision bf16), int8 reading that same QDQ graph, and int8 by NNCF
  post-training quantization on the same calibration images.

Prints a markdown table: per precision, the fraction of images whose class equals the fp32 class,
and top-1 accuracy on the images' labels. ``--json`` also writes the rows (read by
experiments/published/targets_table.py --agreement).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from foldcnn.data.game_text import GameTextDataset
from foldcnn.infer import Predictor
from foldcnn.models.game import GAME_TASKS
from foldcnn.checkpoints import load_checkpoint

# (backend, precision, int8 method of the openvino backend or None)
PATHS = (("eager", "bf16", None), ("compile", "bf16", None), ("ort", "int8", None), ("openvino", "bf16", None),
         ("openvino", "int8", "qdq"), ("openvino", "int8", "nncf"))


def label(backend: str, precision: str, method: str | None) -> str:
    return f"{backend} {precision}" + (f" ({method})" if method else "")


def classes(model, backend: str, precision: str, images, calibration, batch_size: int,
            method: str | None = None) -> np.ndarray:
    kw = {"calibration": calibration} if precision == "int8" else {}
    engine = backend
    if method is not None:  # an OpenVINO int8 route other than the default: build it here
        from foldcnn.backends.openvino import OpenVINOBackend, OpenVINOOptions

        engine = OpenVINOBackend(model, precision=precision, threads=None, max_batch=batch_size // model.fold,
                                 calibration=calibration, options=OpenVINOOptions(int8=method))
    predictor = Predictor(model, backend=engine, precision=precision, batch_size=batch_size, **kw)
    try:
        return predictor.predict_arrays(images)[0]
    finally:
        predictor.close()
        if engine is not backend:
            engine.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="a folder of <task>-f<fold>/checkpoint (runs/accuracy)")
    p.add_argument("--models", nargs="+", default=list(GAME_TASKS))
    p.add_argument("--folds", type=int, nargs="+", default=[1, 4])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", help="also write the rows here (for experiments/published/targets_table.py --agreement)")
    args = p.parse_args()
    heads = [f"{label(*path)}: agreement, top-1" for path in PATHS]
    out = []
    print("| model | fold | fp32 top-1 | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|" * len(PATHS))
    for task in args.models:
        test = GameTextDataset(task, args.images, seed=12)
        calibration = GameTextDataset(task, 256, seed=13).images
        for fold in args.folds:
            path = Path(args.checkpoints) / f"{task}-f{fold}" / "checkpoint"
            if not path.exists():
                print(f"| {task} | {fold} | no checkpoint at {path} |" + " |" * len(PATHS))
                continue
            ck = load_checkpoint(path)
            model = ck.model
            # The checkpoint's class order (e.g. class folders sorted by name, from `foldcnn fold`)
            # may differ from the generator's: compare by class name.
            index = {name: i for i, name in enumerate(ck.class_names)}
            labels = np.array([index[test.classes[k]] for k in test.labels.tolist()])
            ref = classes(model, "eager", "fp32", test.images, calibration, args.batch_size)
            cells = []
            for backend, precision, method in PATHS:
                got = classes(model, backend, precision, test.images, calibration, args.batch_size, method)
                agree, top1 = float(np.mean(got == ref)), float(np.mean(got == labels))
                cells.append(f"{100 * agree:.2f}%, {100 * top1:.2f}%")
                out.append({"task": task, "fold": fold, "backend": backend, "precision": precision,
                            "int8_method": method, "agreement": agree, "top1": top1,
                            "fp32_top1": float(np.mean(ref == labels)), "images": len(labels)})
            print(f"| {task} | {fold} | {100 * np.mean(ref == labels):.2f}% | " + " | ".join(cells) + " |",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoints": args.checkpoints, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

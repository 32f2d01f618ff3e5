"""OpenVINO's settings, and what raises folded throughput further, measured side by side.

    python experiments/lab/openvino_settings.py                                  # hints, shapes, int8 routes
    python experiments/lab/openvino_settings.py --variants ov-int8-throughput,ort-int8 --folds 4 \
        --channel-multiples 8,16,32,64                                       # int8 width rounding
    python experiments/lab/openvino_settings.py --variants ov-int8-throughput --folds 1,3,4,6,8 --batch-sizes 256,1024,4096

Every (model, fold, width rounding, batch size, variant) is built once (random weights; int8
calibrated on 256 random uint8 images) and timed in interleaved trials (trial 1 of every
configuration, then trial 2, ...), each a block of back-to-back calls of at least --seconds on a
batch already in memory; images/s is the median over trials and counts every image of a folded
input. Variants:

* ov-fp32, ov-bf16, ov-int8: the openvino backend with the latency hint (one inference on all
  threads), static shapes (one compiled model per batch size) and int8 from the QDQ graph;
* ov-*-dynamic: one dynamic-batch model instead of one compiled per batch size;
* ov-*-throughput: OpenVINO's throughput hint (streams; each call's batch split across them),
  the backend's default;
* ov-int8-nncf: int8 by NNCF post-training quantization instead of the QDQ graph;
* ort-fp32, ort-int8: ONNX Runtime on the same graph, for reference.

Prints one markdown table: a row per (model, fold, width, batch), a column per variant.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch

from foldcnn.backends import create_backend
from foldcnn.backends.openvino import OpenVINOBackend, OpenVINOOptions
from foldcnn.bench.timing import TrialStats, WallTimer, interleaved_order, time_block
from foldcnn.models import create_model
from foldcnn.models.game import GAME_TASKS

_LATENCY = {"hint": "latency"}  # spelled out: the backend's default hint changed (throughput since 6c90380)
VARIANTS = {
    "ov-fp32": ("fp32", _LATENCY), "ov-fp32-dynamic": ("fp32", {**_LATENCY, "shapes": "dynamic"}),
    "ov-fp32-throughput": ("fp32", {"hint": "throughput"}),
    "ov-bf16": ("bf16", _LATENCY), "ov-bf16-dynamic": ("bf16", {**_LATENCY, "shapes": "dynamic"}),
    "ov-bf16-throughput": ("bf16", {"hint": "throughput"}),
    "ov-int8": ("int8", _LATENCY), "ov-int8-dynamic": ("int8", {**_LATENCY, "shapes": "dynamic"}),
    "ov-int8-throughput": ("int8", {"hint": "throughput"}),
    "ov-int8-nncf": ("int8", {**_LATENCY, "int8": "nncf"}),
    "ort-fp32": ("fp32", None), "ort-int8": ("int8", None),
}
DEFAULT_VARIANTS = ("ov-fp32", "ov-fp32-dynamic", "ov-fp32-throughput", "ov-bf16", "ov-bf16-throughput",
                    "ov-int8", "ov-int8-dynamic", "ov-int8-throughput", "ov-int8-nncf", "ort-int8")


def build(model, variant: str, max_batch: int, calibration: torch.Tensor, threads: int | None):
    precision, options = VARIANTS[variant]
    if options is None:
        return create_backend(model, "ort", precision=precision, threads=threads, max_batch=max_batch,
                              calibration=calibration)
    return OpenVINOBackend(model, precision=precision, threads=threads, max_batch=max_batch,
                           calibration=calibration, options=OpenVINOOptions(**options))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lol-gold-fraction,apex-squad-count,sot-timer")
    p.add_argument("--folds", default="1,4")
    p.add_argument("--channel-multiples", default="8", help="width roundings of folded models (1 = paper's)")
    p.add_argument("--batch-sizes", default="1024", help="images per call (rounded up to a multiple of f)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.4, help="length of each timed block")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    models = [m for m in a.models.split(",") if m] if a.models != "game" else list(GAME_TASKS)
    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    rng = np.random.default_rng(0)
    configs = []  # (key, backend run callable)
    for name in models:
        for f in (int(v) for v in a.folds.split(",")):
            for cm in ([int(v) for v in a.channel_multiples.split(",")] if f > 1 else [None]):
                torch.manual_seed(0)
                model = create_model(name, fold=f, **({"channel_multiple": cm} if cm else {})).eval()
                cal = torch.from_numpy(rng.integers(0, 256, (256, *model.input_shape), dtype=np.uint8))
                batches = sorted({-(-int(b) // f) for b in a.batch_sizes.split(",")})  # folded inputs
                for v in variants:
                    backend = build(model, v, max(batches), cal, a.threads)
                    for b in batches:
                        x = (rng.integers(0, 256, (b, *model.folded_input_shape), dtype=np.uint8) / 255).astype(np.float32)
                        backend.run(x)  # warm-up: compiles this batch size's static model
                        configs.append(((name, f, cm, b * f, v), functools.partial(backend.run, x), b * f))
    values: dict[tuple, list[float]] = {key: [] for key, _, _ in configs}
    timer = WallTimer()
    for _, i in interleaved_order(len(configs), a.trials):
        key, run, images = configs[i]
        run()  # untimed: the previous configuration left its data in the caches
        n, s = time_block(run, a.seconds, timer)
        values[key].append(n * images / s)
    rows = {}
    for (name, f, cm, batch, v), vals in values.items():
        rows.setdefault((name, f, cm, batch), {})[v] = TrialStats.from_values(vals).median
    print("| model | f | width | batch | " + " | ".join(variants) + " |")
    print("|---|---|---|---|" + "---|" * len(variants))
    for (name, f, cm, batch), cells in rows.items():
        print(f"| {name} | {f} | {'-' if cm is None else cm} | {batch} | "
              + " | ".join(f"{cells[v]:,.0f}" if v in cells else "-" for v in variants) + " |")


if __name__ == "__main__":
    main()

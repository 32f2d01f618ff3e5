"""Where on a video's test stretch do checkpoints err? Errors grouped by label segment.

    python experiments/lab/video_errors.py runs/accuracy/noscope-car-f1/checkpoint \
        runs/accuracy/noscope-car-f4/checkpoint --data runs/accuracy/data/noscope-car --video-gap 30 \
        --video-stride 3

Loads the test split exactly as `foldcnn train --data DIR --video-gap G` does (60/20/20 in time),
predicts it with the evaluation's fixed random fold grouping, and prints, for every run of
frames with the same label (one object pass, or the gap between two), how many frames each
checkpoint got wrong. A test stretch holds only a handful of passes, so one missed object can
move test accuracy by several points; this shows whether errors are spread out or sit in one pass.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from foldcnn.checkpoints import load_checkpoint
from foldcnn.train.loop import predict_logits
from foldcnn.train.sources import DataSpec, load_splits


def label_segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, label) for every maximal run of equal labels."""
    if len(labels) == 0:
        return []
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
    stops = np.r_[starts[1:], len(labels)]
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True, help="folder with video.mp4 and labels.csv (foldcnn data video)")
    p.add_argument("--video-gap", type=int, default=0, help="same as the training run's --video-gap")
    p.add_argument("--video-stride", type=int, default=1, help="same as the training run's --video-stride")
    a = p.parse_args()
    torch.set_num_threads(1)
    splits = load_splits(DataSpec(data_dir=a.data, video_gap=a.video_gap, video_stride=a.video_stride))
    test, first = splits.test, splits.meta["splits"]["test"][0]  # in kept frames
    labels = test.labels.numpy()
    wrong, names = {}, []
    for path in a.checkpoints:
        ck = load_checkpoint(path)
        pred = predict_logits(ck.model, test.images).argmax(1).numpy()
        wrong[path] = pred != labels
        names.append(f"f={ck.fold} wrong")
        print(f"{path}: fold {ck.fold}, test top-1 {100 * (1 - wrong[path].mean()):.2f}% "
              f"({int(wrong[path].sum())} of {len(labels)} frames wrong)")
    print(f"\n{'frames (video index)':>22}  {'label':>8}  " + "  ".join(f"{n:>10}" for n in names))
    for start, stop, label in label_segments(labels):
        counts = "  ".join(f"{int(w[start:stop].sum()):>10}" for w in wrong.values())
        s = a.video_stride
        print(f"{s * (first + start):>10}..{s * (first + stop - 1):<10}  {test.classes[label]:>8}  {counts}")


if __name__ == "__main__":
    main()

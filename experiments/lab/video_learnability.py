"""Can a NoScope CNN learn the synthetic video task? A quick check, not a benchmark.

Generates a video (foldcnn data video), reads it at 50x50 nearest, splits it 60/20/20 in time with
30-frame gaps, trains a NoScope CNN with Adam and prints test accuracy next to the majority-class
rate after every epoch.

    .venv/bin/python experiments/lab/video_learnability.py --object car --frames 3000 --epochs 6
    .venv/bin/python experiments/lab/video_learnability.py --object person --frames 12000 --stride 2 --epochs 5
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from foldcnn import unfold_logits
from foldcnn.data.grouping import FoldBatcher
from foldcnn.data.readers import load_video
from foldcnn.data.splits import split_dataset, temporal_split
from foldcnn.data.video import generate_video
from foldcnn.models import create_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--object", default="car", choices=["car", "person", "bus"])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--stride", type=int, default=1, help="keep every k-th frame")
    p.add_argument("--seed", type=int, default=5, help="video seed")
    p.add_argument("--model", default="noscope-roundabout")
    p.add_argument("--fold", type=int, default=1)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/foldcnn-video-learnability")
    a = p.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    out = f"{a.out}/{a.object}-{a.frames}-{a.seed}"
    generate_video(out, a.frames, a.seed, obj=a.object, overwrite=True, progress=False)
    ds = load_video(f"{out}/video.mp4", stride=a.stride)
    parts = split_dataset(ds, temporal_split(len(ds), (0.6, 0.2, 0.2), gap=30 // a.stride))
    test = parts["test"]
    majority = max(test.class_counts()) / len(test)
    passes = sum(o["target"] for o in ds.meta["video_manifest"]["objects"])
    print(f"{a.object}: {a.frames} frames (stride {a.stride}), {passes} target passes, "
          f"train/val/test {[len(v) for v in parts.values()]}, test majority class {majority:.1%}")

    model = create_model(a.model, fold=a.fold)
    opt = torch.optim.Adam(model.parameters(), a.lr)
    train = FoldBatcher(parts["train"], a.fold, 64, seed=0)
    evals = FoldBatcher(test, a.fold, 512, seed=0, shuffle=False)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        train.set_epoch(epoch)
        model.train()
        for x, y, mask in train:
            loss = F.cross_entropy(unfold_logits(model(x), a.fold)[mask], y[mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y, mask in evals:
                pred = unfold_logits(model(x), a.fold).argmax(1)
                correct += int((pred == y)[mask].sum())
        print(f"epoch {epoch + 1}: last train loss {loss.item():.3f}, test accuracy {correct / len(test):.1%}"
              f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

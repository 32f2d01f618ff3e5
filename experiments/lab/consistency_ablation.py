"""Fold-mate consistency: what --consistency does to a folded model's flip rate, accuracy and
training time (docs/accuracy.md, "Fold-mates").

    python experiments/lab/consistency_ablation.py --task apex-squad-count --fold 4 --epochs 100 \
        --weights 0 0.5 1 2 --out runs/consistency

Each weight trains the same model on the same generated images (foldcnn train's recipe and
defaults otherwise) and reports test top-1, the flip rate over 10 random regroupings of the test
images, the top-1 spread, and the training time. Runs that already have a run.json are read, not
retrained (delete the folder to rerun).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="apex-squad-count")
    p.add_argument("--fold", type=int, default=4)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--kind", choices=("kl", "mse"), default="kl")
    p.add_argument("--out", default="runs/consistency")
    p.add_argument("--extra", default="", help="more foldcnn train flags, quoted")
    args = p.parse_args()
    rows = []
    for w in args.weights:
        out = Path(args.out) / f"{args.task}-f{args.fold}-c{w:g}-{args.kind}"
        if not (out / "run.json").exists():
            cmd = [sys.executable, "-m", "foldcnn", "train", "--task", args.task, "--fold", str(args.fold),
                   "--epochs", str(args.epochs), "--train-size", str(args.train_size), "--consistency", str(w),
                   "--consistency-kind", args.kind, "--out", str(out), "--quiet", *args.extra.split()]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
        run = json.loads((out / "run.json").read_text())
        s, r = run["summary"], run.get("test_regrouping") or {}
        rows.append((w, s["test_top1"], r.get("flip_rate"), r.get("top1_spread"), s["train_seconds"]))
    print(f"\n{args.task} fold={args.fold}, {args.epochs} epochs, {args.train_size} training images, kind {args.kind}")
    print("| consistency weight | test top-1 | flip rate (10 regroupings) | top-1 spread | train s |")
    print("|---|---|---|---|---|")
    for w, top1, flip, spread, secs in rows:
        print(f"| {w:g} | {top1:.2%} | {flip:.2%} | {spread:.2%} | {secs:.0f} |")


if __name__ == "__main__":
    main()

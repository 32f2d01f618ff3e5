"""How much does a folded model's test accuracy depend on which images share a folded input?

    python experiments/lab/grouping_sensitivity.py runs/accuracy/apex-squad-count-f4/checkpoint \
        --task apex-squad-count --test-size 4000 --orders 5

A folded CNN sees f images at once, so each image's logits depend a little on the other f-1
(that is the method). This script evaluates one checkpoint on the same generated test images in
several orders: as generated (what `foldcnn train` reports), sorted by class (about what
`foldcnn eval` on a class-folder tree sees), and `--orders` random permutations. Prints top-1
for each and the spread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.checkpoints import load_checkpoint
from foldcnn.train.loop import evaluate
from foldcnn.train.sources import DataSpec, load_splits


def reordered(ds: ArrayDataset, order: torch.Tensor) -> ArrayDataset:
    return ArrayDataset(ds.images[order], ds.labels[order], ds.classes, ds.meta)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--task", required=True, help="the generated game task the checkpoint was trained on")
    p.add_argument("--test-size", type=int, default=4000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--orders", type=int, default=5, help="random permutations")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    test = load_splits(DataSpec(task=a.task, train_size=1, val_size=1, test_size=a.test_size, seed=a.data_seed)).test
    rows = [("as generated", evaluate(ck.model, test)["top1"]),
            ("sorted by class", evaluate(ck.model, reordered(test, torch.argsort(test.labels, stable=True)))["top1"])]
    for s in range(a.orders):
        perm = torch.from_numpy(np.random.default_rng(s).permutation(len(test)))
        rows.append((f"random order {s}", evaluate(ck.model, reordered(test, perm))["top1"]))
    print(f"{a.checkpoint} (fold {ck.model.fold}), {len(test)} test images of {a.task}, data seed {a.data_seed}:")
    for name, top1 in rows:
        print(f"  {name:<16} {100 * top1:.2f}%")
    values = [100 * t for _, t in rows]
    print(f"  spread           {min(values):.2f}-{max(values):.2f}% ({max(values) - min(values):.2f} points)")


if __name__ == "__main__":
    main()

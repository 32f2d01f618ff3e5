"""Test top-1 of a folded checkpoint per fold slot: did every slot learn, or only one?

    python experiments/lab/per_slot_accuracy.py runs/accuracy/lol-gold-fraction-f4/checkpoint --task lol-gold-fraction

Regenerates the task's test split (same size and data seed as the training run: 4,000 and 0 in
docs/accuracy.md), groups it into folds with the evaluation's fixed random grouping and prints the
accuracy of the images that sat in slot 0, 1, ..., f-1.
"""

from __future__ import annotations

import argparse

import torch

from foldcnn.data.grouping import fold_groups, gather_fold_batch
from foldcnn.fold import unfold_logits
from foldcnn.checkpoints import load_checkpoint
from foldcnn.train.loop import EVAL_GROUP_SEED
from foldcnn.train.sources import DataSpec, load_splits


@torch.no_grad()
def per_slot_top1(model, images: torch.Tensor, labels: torch.Tensor, batch_groups: int = 256) -> list[float]:
    model.eval()
    f = model.fold
    groups = fold_groups(len(images), f, EVAL_GROUP_SEED)
    correct, count = torch.zeros(f), torch.zeros(f)
    for start in range(0, len(groups), batch_groups):
        index = groups[start:start + batch_groups].reshape(-1)
        x, y, mask = gather_fold_batch(images, labels, index, f)
        ok = (unfold_logits(model(x), f).argmax(1) == y) & mask
        slot = torch.arange(len(index)) % f
        for j in range(f):
            correct[j] += ok[slot == j].sum()
            count[j] += mask[slot == j].sum()
    return [float(c / n) for c, n in zip(correct, count)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--task", required=True, help="generated game task the checkpoints were trained on")
    p.add_argument("--test-size", type=int, default=4000)
    p.add_argument("--data-seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    spec = DataSpec(task=a.task, train_size=1, val_size=1, test_size=a.test_size, seed=a.data_seed)
    test = load_splits(spec, progress=False).test
    for path in a.checkpoints:
        model = load_checkpoint(path).model
        slots = per_slot_top1(model, test.images, test.labels)
        print(f"{path}: fold {model.fold}, per-slot test top-1 " + " / ".join(f"{100 * s:.1f}" for s in slots))


if __name__ == "__main__":
    main()

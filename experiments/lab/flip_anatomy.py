"""Which images change class with their fold-mates, and why (docs/accuracy.md "Fold-mates").

    python experiments/lab/flip_anatomy.py runs/t22/fold-apex-squad-count/fold4/checkpoint \
        runs/t22/data/apex-squad-count/test

Classifies a folder of class folders (the test split) with a folded checkpoint in input order
(folds of consecutive images), then in ``--regroupings`` other arrangements of three kinds:

* slot only: the same fold-mates, each fold's images in another random order of its slots;
* mates only: every image keeps its slot, its fold-mates are drawn anew (each slot's images
  shuffled across folds);
* both: a random regrouping (what the flip rate of `foldcnn eval --regroupings` measures).

and reports the flip rate of each (share of images whose class changes at least once), how the
flipped images split into errors and correct answers, and their margins (top-1 minus top-2
probability in input order) against those of the images that never flip.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from foldcnn.checkpoints import load_checkpoint
from foldcnn.data.readers import load_image_folder
from foldcnn.fold import fold_images, unfold_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("folder", help="class folders of test images (DIR/<class>/*.png)")
    p.add_argument("--regroupings", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint(args.checkpoint)
    model, f = ck.model.eval(), ck.model.fold
    ds = load_image_folder(args.folder, classes=ck.class_names)
    n = len(ds) // f * f  # whole folds only: every arrangement then holds the same images
    x, y = ds.images[:n].float() / 255, ds.labels[:n].numpy()
    g = torch.Generator().manual_seed(args.seed)

    @torch.no_grad()
    def logits(order: torch.Tensor) -> torch.Tensor:
        """Per-image logits (in image order) with fold k = images order[f*k : f*k + f]."""
        out = torch.cat([unfold_logits(model(fold_images(x[order[a:a + 1024]], f)), f) for a in range(0, n, 1024)])
        back = torch.empty_like(out)
        back[order] = out
        return back

    base = torch.arange(n)
    ref = logits(base)
    c0 = ref.argmax(1)

    def slot_only() -> torch.Tensor:
        folds = base.view(-1, f)
        return torch.stack([row[torch.randperm(f, generator=g)] for row in folds]).view(-1)

    def mates_only() -> torch.Tensor:
        folds = base.view(-1, f).clone()
        for s in range(f):
            folds[:, s] = folds[torch.randperm(folds.shape[0], generator=g), s]
        return folds.view(-1)

    def both() -> torch.Tensor:
        return torch.randperm(n, generator=g)

    errors = c0.numpy() != y
    probs = torch.softmax(ref, 1).topk(2, 1).values
    margin = (probs[:, 0] - probs[:, 1]).numpy()
    print(f"{args.checkpoint}: fold {f}, {n} images, top-1 in input order {100 * (1 - errors.mean()):.2f}%")
    print("| arrangement | flip rate | flipped that are errors | errors that flip | correct that flip |")
    print("|---|---|---|---|---|")
    flipped_both = None
    for name, make in (("slot only", slot_only), ("mates only", mates_only), ("both (random regrouping)", both)):
        flipped = np.zeros(n, bool)
        for _ in range(args.regroupings):
            flipped |= (logits(make()).argmax(1) != c0).numpy()
        print(f"| {name} | {100 * flipped.mean():.2f}% | {100 * (flipped & errors).sum() / max(1, flipped.sum()):.0f}% | "
              f"{100 * (flipped & errors).sum() / max(1, errors.sum()):.0f}% | "
              f"{100 * (flipped & ~errors).sum() / max(1, (~errors).sum()):.2f}% |")
        flipped_both = flipped
    q = (10, 50, 90)
    print(f"margin (top-1 - top-2 probability), percentiles {q}: flipped {np.percentile(margin[flipped_both], q).round(3)}, "
          f"never flipped {np.percentile(margin[~flipped_both], q).round(3)}")


if __name__ == "__main__":
    main()

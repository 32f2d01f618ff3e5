"""How much a folded model's answers depend on which images share a fold (fold-mates).

A folded model classifies the f images of a fold jointly, so regrouping the same images can
change an image's predicted class. :func:`regrouping_report` classifies the same images in input
order and under ``regroupings`` seeded random orders and reports, per image, whether its class
changed (the flip rate) and, per grouping, the top-1 accuracy (the spread). For fold=1 both are
trivially zero: nothing is folded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from foldcnn.errors import UsageError

__all__ = ["RegroupingReport", "regrouping_report", "summarize_regroupings"]


@dataclass(frozen=True)
class RegroupingReport:
    """``flip_rate``: share of images whose predicted class is not the same under every grouping
    (input order and each random one). ``top1``: accuracy per grouping, input order first (None
    without labels). ``seeds``: the random groupings' seeds."""

    images: int
    fold: int
    seeds: tuple[int, ...]
    flip_rate: float
    top1: tuple[float, ...] | None = None
    flipped: np.ndarray = field(default=None, repr=False)  # bool (N,): images whose class changed

    @property
    def top1_spread(self) -> float | None:
        """max - min top-1 over the groupings (points as a fraction)."""
        return None if self.top1 is None else max(self.top1) - min(self.top1)

    def to_dict(self) -> dict:
        out = {"images": self.images, "fold": self.fold, "regroupings": len(self.seeds), "seeds": list(self.seeds),
               "flip_rate": round(self.flip_rate, 6)}
        if self.top1 is not None:
            out.update({"top1_input_order": round(self.top1[0], 6), "top1_min": round(min(self.top1), 6),
                        "top1_max": round(max(self.top1), 6), "top1_median": round(float(np.median(self.top1)), 6),
                        "top1_spread": round(self.top1_spread, 6), "top1_per_grouping": [round(t, 6) for t in self.top1]})
        return out


def summarize_regroupings(classes, labels=None, *, fold: int, seeds) -> RegroupingReport:
    """Predicted classes (G, N) of the same N images under G groupings (the reference first) ->
    flip rate and per-grouping top-1. Shared by evaluation here and in training."""
    stacked = np.stack([np.asarray(c).reshape(-1) for c in classes])
    y = None if labels is None else np.asarray(labels).reshape(-1)
    if y is not None and len(y) != stacked.shape[1]:
        raise UsageError(f"{len(y)} labels for {stacked.shape[1]} images")
    flipped = (stacked != stacked[0]).any(axis=0)
    top1 = None if y is None else tuple(float((c == y).mean()) for c in stacked)
    return RegroupingReport(images=int(stacked.shape[1]), fold=int(fold), seeds=tuple(seeds),
                            flip_rate=float(flipped.mean()), top1=top1, flipped=flipped)


def regrouping_report(predictor, images, labels=None, *, regroupings: int = 10, seed: int = 0) -> RegroupingReport:
    """Classify ``images`` (N, C, H, W) with ``predictor`` (a foldcnn.infer.Predictor) in input
    order and in ``regroupings`` random orders (seeds ``seed .. seed + regroupings - 1``), the
    same random groupings as a training run's test regroupings (foldcnn.data.grouping.fold_groups)."""
    from foldcnn.data.grouping import fold_groups

    if isinstance(regroupings, bool) or not isinstance(regroupings, int) or regroupings < 1:
        raise UsageError(f"regroupings must be an int >= 1, got {regroupings!r}")
    x = torch.as_tensor(images)
    n = int(x.shape[0])
    if n == 0:
        raise UsageError("no images to regroup")
    y = None if labels is None else np.asarray(labels).reshape(-1)
    if y is not None and len(y) != n:
        raise UsageError(f"{len(y)} labels for {n} images")
    seeds = tuple(range(seed, seed + regroupings))
    base, _ = predictor.predict_arrays(x)
    classes = [base]
    for s in seeds:
        order = fold_groups(n, 1, seed=s).view(-1)  # shuffled, then folded f at a time in that order
        pred, _ = predictor.predict_arrays(x[order])
        back = np.empty(n, np.int64)
        back[order.numpy()] = pred
        classes.append(back)
    return summarize_regroupings(classes, y, fold=predictor.fold, seeds=seeds)

"""Per-image classification metrics from logits (N, K) and labels (N,)."""

from __future__ import annotations

import torch

from foldcnn.errors import UsageError


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None = None,
                           worst: int = 5) -> dict:
    """top-1, top-5, per-class accuracy and the most frequent confusions (true -> predicted)."""
    n, k = logits.shape
    if n == 0:
        raise UsageError("no images to evaluate")
    names = class_names or [str(i) for i in range(k)]
    pred = logits.argmax(1)
    correct = pred == labels
    topk = logits.topk(min(5, k), dim=1).indices
    top5 = (topk == labels[:, None]).any(1)
    per_class, class_images = {}, {}
    counts = torch.bincount(labels, minlength=k)
    hits = torch.bincount(labels[correct], minlength=k)
    for c in range(k):
        if counts[c] > 0:
            per_class[names[c]] = round(hits[c].item() / counts[c].item(), 4)
            class_images[names[c]] = int(counts[c])
    confusion = torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    confusion.fill_diagonal_(0)
    flat = confusion.flatten()
    order = flat.argsort(descending=True)[:worst]
    confusions = [
        {"true": names[i // k], "predicted": names[i % k], "count": int(flat[i])}
        for i in order.tolist() if flat[i] > 0
    ]
    return {
        "images": n,
        "top1": round(correct.float().mean().item(), 5),
        "top5": round(top5.float().mean().item(), 5),
        "per_class": per_class,
        "class_images": class_images,
        "worst_confusions": confusions,
    }


WEAK_POINTS, WEAK_MIN_IMAGES = 10.0, 20


def weak_classes(metrics: dict | None, points: float = WEAK_POINTS, min_images: int = WEAK_MIN_IMAGES,
                 most: int = 5) -> list[dict]:
    """The classes whose accuracy is at least ``points`` below top-1, among those with at least
    ``min_images`` images (fewer make a class's accuracy noise), worst first: a high top-1 over
    many balanced classes can hide one class the model has not learnt (e.g. a catch-all 'other').
    Empty without metrics, or for metrics written before class counts were recorded."""
    metrics = metrics or {}
    counts = metrics.get("class_images") or {}
    weak = [{"class": name, "top1": acc, "images": counts[name]}
            for name, acc in (metrics.get("per_class") or {}).items()
            if counts.get(name, 0) >= min_images and acc <= metrics["top1"] - points / 100]
    return sorted(weak, key=lambda w: w["top1"])[:most]

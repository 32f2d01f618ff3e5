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
    per_class = {}
    counts = torch.bincount(labels, minlength=k)
    hits = torch.bincount(labels[correct], minlength=k)
    for c in range(k):
        if counts[c] > 0:
            per_class[names[c]] = round(hits[c].item() / counts[c].item(), 4)
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
        "worst_confusions": confusions,
    }

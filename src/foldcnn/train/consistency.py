"""Training a folded model not to listen to its fold-mates (ours; the paper has nothing here).

A folded model classifies the f images of a fold jointly, so an image's answer can change with
the other images folded beside it (docs/accuracy.md, "Fold-mates"). The consistency term shows
each training step's images to the model twice, in two different random groupings, and adds the
divergence between an image's two per-image outputs to the loss:

    loss = CE(a) + w * sum_i D(a_i, b_i)         a, b: per-image logits (n, K) of the two groupings

with D the symmetric KL divergence of the softmaxes (``"kl"``), the squared difference of the
logits (``"mse"``), or, one-sided (``"sharp"``), the KL divergence from each grouping's softmax to
the other's sharpened answer held fixed, ``KL(softmax(b / 0.5).detach() || softmax(a))`` plus the
same with a and b swapped: it pulls each answer towards the other's confident one instead of
rewarding two equally unsure answers, which the symmetric KL does (its cost in top-1 at the
table's budgets, docs/accuracy.md). Both groupings keep every image once (the same images, other fold-mates;
padding slots stay padding), so the term is zero exactly when the answers do not depend on
fold-mates (``"sharp"``: when both answers are the same one-hot). It doubles the forward and
backward work of a step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foldcnn.errors import UsageError

__all__ = ["CONSISTENCY_KINDS", "consistency_loss_sum", "regroup_index"]

CONSISTENCY_KINDS = ("kl", "mse", "sharp")
SHARPEN_TEMPERATURE = 0.5  # "sharp": the other grouping's answer, softmax(logits / T), as the target


def regroup_index(index: torch.Tensor, fold: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The same images in other folds: ``index`` (G*f,) of image ids in fold order, -1 = padding
    -> (G*f,) with the valid ids shuffled among the valid slots (padding stays where it is).

    With one fold or fewer than two images there is nothing to regroup: returned as is.
    """
    if index.dim() != 1 or index.numel() % fold:
        raise UsageError(f"index must be 1-D with a multiple of fold={fold} entries, got {tuple(index.shape)}")
    valid = index >= 0
    ids = index[valid]
    if ids.numel() < 2 or index.numel() <= fold:
        return index.clone()
    out = index.clone()
    out[valid] = ids[torch.randperm(ids.numel(), generator=generator)]
    return out


def align_to(ids_a: torch.Tensor, ids_b: torch.Tensor) -> torch.Tensor:
    """Positions in ``ids_b`` of each id of ``ids_a`` (both permutations of the same distinct ids)."""
    order_b = torch.argsort(ids_b)
    return order_b[torch.searchsorted(ids_b[order_b], ids_a)]


def consistency_loss_sum(a: torch.Tensor, b: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Sum over images of the divergence between two per-image logits (n, K) of the same images."""
    if kind not in CONSISTENCY_KINDS:
        raise UsageError(f"consistency kind must be one of {', '.join(CONSISTENCY_KINDS)}, got {kind!r}")
    if a.shape != b.shape:
        raise UsageError(f"the two groupings gave logits of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if kind == "mse":
        return ((a - b) ** 2).sum()
    la, lb = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
    if kind == "sharp":
        ta = F.log_softmax(a.detach() / SHARPEN_TEMPERATURE, dim=1)
        tb = F.log_softmax(b.detach() / SHARPEN_TEMPERATURE, dim=1)
        return F.kl_div(la, tb, log_target=True, reduction="sum") + F.kl_div(lb, ta, log_target=True, reduction="sum")
    # symmetric KL: KL(p_a || p_b) + KL(p_b || p_a), each summed over classes and images
    return (F.kl_div(lb, la, log_target=True, reduction="sum") + F.kl_div(la, lb, log_target=True, reduction="sum"))

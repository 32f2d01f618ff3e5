"""Evaluation of a model on a dataset, per image.

Validation during training folds the images in a fixed random grouping (consecutive frames are
near duplicates, so folds are random groups). The test metrics of a run fold them in input order,
as ``foldcnn eval`` and ``foldcnn predict`` do, so run.json's test top-1 is the number a user gets
from those commands; other random groupings give its spread (:func:`regrouping_metrics`).
Shared by the training loop and distillation (teacher logits).
"""

from __future__ import annotations

import torch

from foldcnn.data.base import ArrayDataset
from foldcnn.data.grouping import fold_groups, gather_fold_batch
from foldcnn.fold import round_batch, unfold_logits
from foldcnn.memory import keep_freed_memory
from foldcnn.models import FoldedCNN
from foldcnn.train.metrics import classification_metrics

__all__ = ["EVAL_GROUP_SEED", "INPUT_ORDER", "evaluate", "predict_logits", "regrouping_metrics"]

EVAL_GROUP_SEED = 1234  # one fixed random grouping for every validation during training
INPUT_ORDER = None  # seed=INPUT_ORDER: image i in fold i // f, as foldcnn eval and predict group


@torch.no_grad()
def predict_logits(model: FoldedCNN, images: torch.Tensor, *, batch_size: int = 1024,
                   seed: int | None = EVAL_GROUP_SEED) -> torch.Tensor:
    """Per-image logits (N, K) on the CPU for uint8 or float images (N, C, H, W).

    Images are grouped into folds in a fixed random order given by ``seed`` (consecutive frames
    are near duplicates), or in input order with ``seed=INPUT_ORDER``; the result is returned in
    input order. The last partial fold is zero-padded and its padded outputs discarded. Runs on
    the model's device.
    """
    was_training = model.training
    model.eval()
    n, fold = images.shape[0], model.fold
    device = next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()  # a 1,024-image batch's activations: reuse pages, do not fault them in per call
    flat = fold_groups(n, fold, seed).view(-1)
    no_labels = torch.zeros(n, dtype=torch.int64)
    step = round_batch(batch_size, fold)
    out = torch.empty(n, model.num_classes)
    for start in range(0, len(flat), step):
        index = flat[start:start + step]
        x, _, mask = gather_fold_batch(images, no_labels, index, fold)
        out[index[mask]] = unfold_logits(model(x.to(device)), fold).float().cpu()[mask]
    model.train(was_training)
    return out


def evaluate(model: FoldedCNN, dataset: ArrayDataset, *, batch_size: int = 1024,
             seed: int | None = EVAL_GROUP_SEED) -> dict:
    """top-1/top-5/per-class metrics of ``model`` on ``dataset``, per image, folded in the grouping
    ``seed`` names (:func:`predict_logits`)."""
    logits = predict_logits(model, dataset.images, batch_size=batch_size, seed=seed)
    return classification_metrics(logits, dataset.labels, dataset.classes)


def regrouping_metrics(model: FoldedCNN, dataset: ArrayDataset, *, regroupings: int = 10, seed: int = 0,
                       batch_size: int = 1024) -> dict:
    """How much the answers depend on fold-mates: ``dataset`` classified in input order (the
    grouping of the test metrics, foldcnn eval and predict) and in ``regroupings`` random
    groupings (seeds ``seed ..``); flip rate (share of images whose class changes) and top-1 per
    grouping. See foldcnn.infer.regrouping; for fold=1 nothing is folded and the flip rate is 0."""
    from foldcnn.infer.regrouping import summarize_regroupings

    seeds = list(range(seed, seed + regroupings))
    classes = [predict_logits(model, dataset.images, batch_size=batch_size, seed=s).argmax(1).numpy()
               for s in (INPUT_ORDER, *seeds)]
    return summarize_regroupings(classes, dataset.labels.numpy(), fold=model.fold, seeds=seeds).to_dict()

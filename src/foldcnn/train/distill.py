"""Distillation from an unfolded teacher (docs/design.md, "Training recipe").

The paper trained folded CIFAR-10 students on the MSE between their per-image logits and the
logits of the unfolded (fold=1) teacher on the same image; KL divergence on
temperature-softened distributions (Hinton et al., 2015) is the usual alternative. Either is
mixed with cross-entropy: ``loss = (1 - a) * CE + a * distill``. The teacher's logits are
computed once per data set before training, as a (N_train, K) tensor indexed by image index.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from foldcnn.checkpoints import WEIGHTS_FILE, load_checkpoint
from foldcnn.data.base import ArrayDataset
from foldcnn.errors import FoldcnnError, UsageError
from foldcnn.models import FoldedCNN
from foldcnn.train.config import DISTILL_KINDS, TrainConfig
from foldcnn.train.evaluation import predict_logits

__all__ = ["DISTILL_KINDS", "TeacherError", "check_teacher_fold", "check_teacher", "load_teacher",
           "teacher_logits", "distill_loss_sum", "step_loss", "teacher_sha256"]


class TeacherError(FoldcnnError, ValueError):
    """The teacher checkpoint cannot teach this student on this data."""


def check_teacher_fold(fold: int, where: str, allow_folded: bool = False) -> None:
    if fold != 1 and not allow_folded:
        raise TeacherError(
            f"the teacher {where} is a folded model (fold={fold}); distill from the unfolded (fold=1) model "
            "of the same task, or pass allow_folded_teacher=True (--allow-folded-teacher) to use it anyway")


def check_teacher(model: FoldedCNN, class_names: list[str], data: ArrayDataset, *, where: str = "teacher",
                  allow_folded: bool = False) -> None:
    """Raise :class:`TeacherError` unless ``model`` classifies exactly the images and classes of ``data``."""
    check_teacher_fold(model.fold, where, allow_folded)
    if model.num_classes != data.num_classes:
        raise TeacherError(f"the teacher {where} has {model.num_classes} classes but the data has "
                           f"{data.num_classes}: a teacher of another task; train a fold=1 model on this data first")
    if list(class_names) != list(data.classes):
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(class_names, data.classes)) if a != b][:3]
        shown = "; ".join(f"label {i}: teacher {a!r}, data {b!r}" for i, a, b in diff)
        raise TeacherError(f"the teacher {where} names its classes differently from the data ({shown}): "
                           "a teacher of another task or another class order")
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise TeacherError(f"the teacher {where} takes images of shape {tuple(model.input_shape)} (C, H, W) but "
                           f"the data has {tuple(data.input_shape)}: a teacher of another task or input size")


def load_teacher(path: str | os.PathLike, data: ArrayDataset, *, allow_folded: bool = False) -> FoldedCNN:
    """Load a checkpoint and check that it can teach on ``data``; returns the model in eval mode."""
    ck = load_checkpoint(path)
    check_teacher(ck.model, ck.class_names, data, where=str(path), allow_folded=allow_folded)
    return ck.model.eval()


def teacher_sha256(path: str | os.PathLike) -> str:
    """sha256 of the teacher's weights file: names the teacher in caches and manifests."""
    h = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def teacher_logits(teacher: FoldedCNN, images: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """fp32 logits (N, K) of the teacher for uint8 images (N, C, H, W), in image order, on the CPU."""
    return predict_logits(teacher, images, batch_size=batch_size).float().cpu()


def distill_loss_sum(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float = 1.0
                     ) -> torch.Tensor:
    """Sum over images of the per-image distillation loss; logits (n, K) each.

    ``mse``: mean over the K logits of (student - teacher)^2 (the paper's loss).
    ``kl``: KL(softmax(teacher / T) || softmax(student / T)) * T^2 (the T^2 keeps gradient
    magnitudes comparable across temperatures).
    """
    if student.shape != teacher.shape:
        raise UsageError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    if kind == "mse":
        return (student - teacher).pow(2).mean(1).sum()
    if kind == "kl":
        t = float(temperature)
        log_s = F.log_softmax(student / t, dim=1)
        log_t = F.log_softmax(teacher / t, dim=1)
        return F.kl_div(log_s, log_t, reduction="sum", log_target=True) * (t * t)
    raise UsageError(f"distillation must be one of mse, kl; got {kind!r}")


def step_loss(logits, y, teacher, cfg: TrainConfig, per_rank_images: float) -> torch.Tensor:
    """(1 - w) * CE + w * distill, summed over this rank's images and divided by the step's
    images per rank, so that DDP's gradient average is the mean over all images of the step."""
    loss = F.cross_entropy(logits, y, reduction="sum")
    if teacher is not None:
        w = cfg.distill_weight
        loss = (1 - w) * loss + w * distill_loss_sum(logits, teacher, cfg.distill, cfg.temperature)
    return loss / per_rank_images

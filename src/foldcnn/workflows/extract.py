"""`foldcnn extract`: the fold-1 slot CNN inside a folded model whose slots never mix.

A folded model trained with ``--cross-slot-decay inf`` holds no weight between different fold
slots, and tying made every slot's weights the same: it is f copies of one narrower CNN side by
side (foldcnn.train.symmetry). Slot 0's block of every layer (the leading rows and columns: image
0 sits in channels [0, C) of the folded input and owns logits [0, K)) is that CNN. Any weight
between slots, or slots that differ, and the model computes something else: refused, with why.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from foldcnn.checkpoints import load_calibration, load_checkpoint, save_checkpoint
from foldcnn.errors import UsageError
from foldcnn.models import FoldedCNN, create_model

__all__ = ["extract_slot_cnn", "slot_state_dict", "write_slot_checkpoint"]

# Widths of a fold-1 build are searched over these roundings (1 = exact int() widths).
_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


def _slot_build(model: FoldedCNN, target: dict[str, torch.Size]) -> FoldedCNN:
    """A fold-1 build of the folded model's architecture whose tensors have the ``target`` shapes."""
    cfg, f = model.config, model.fold
    wm = (cfg.width_mult if cfg.width_mult is not None else math.sqrt(f)) / f
    tried = []
    for cm in _MULTIPLES:
        for w in dict.fromkeys((wm, 1.0)):
            try:
                m = create_model(cfg.name, fold=1, width_mult=w, channel_multiple=cm, **cfg.kwargs)
            except UsageError:
                continue
            shapes = {k: v.shape for k, v in m.state_dict().items()}
            if shapes == target:
                return m
            tried.append(f"width x{w:.3g} rounded to {cm}")
    raise UsageError(f"no fold-1 build of {cfg.name} has the slot widths of this model (tried {', '.join(tried[:4])}, "
                     "...); extract works for models folded by foldcnn's builders")


def slot_state_dict(model: FoldedCNN, atol: float = 0.0) -> dict[str, torch.Tensor]:
    """Slot 0's block of every tensor, after checking the model is f identical CNNs that never mix.

    Raises UsageError naming the first tensor with a weight between slots (larger than ``atol``)
    or with slots that differ."""
    f = model.fold
    if f < 2:
        raise UsageError("this checkpoint is not folded (fold 1): it is already a fold-1 CNN")
    out = {}
    for name, t in model.state_dict().items():
        if t.dim() == 0 or not t.is_floating_point():
            out[name] = t.clone()
            continue
        if t.dim() == 1:  # a bias, a BatchNorm scale or statistic: one group per slot (+ shared channels)
            g = t.shape[0] // f
            groups = t[: f * g].view(f, g)
            if not torch.allclose(groups, groups[:1].expand_as(groups), atol=max(atol, 1e-6), rtol=1e-5):
                raise UsageError(f"{name}: the fold slots hold different values, so the slots are not one CNN")
            out[name] = groups[0].clone()
            continue
        go, gi = t.shape[0] // f, t.shape[1] // f
        w = t[: f * go]  # rows of shared channels feed no slot's logits once their inputs are zero (below)
        for a in range(f):
            rows = w[a * go:(a + 1) * go]
            own = rows[:, a * gi:(a + 1) * gi]
            others = torch.cat([rows[:, : a * gi], rows[:, (a + 1) * gi:]], dim=1)
            if others.numel() and others.abs().max() > atol:
                raise UsageError(f"{name} holds weights between fold slots (largest {others.abs().max():.3g}): "
                                 "each image's answer depends on its fold-mates, so no slot CNN computes it; only "
                                 "a model trained with --cross-slot-decay inf can be extracted")
            if not torch.allclose(own, t[:go, :gi], atol=max(atol, 1e-6), rtol=1e-5):
                raise UsageError(f"{name}: fold slot {a} has other weights than slot 0, so the slots are not one CNN")
        out[name] = t[:go, :gi].clone()
    return out


def extract_slot_cnn(model: FoldedCNN) -> FoldedCNN:
    """The fold-1 CNN of one slot of ``model`` (see module docstring), in eval mode."""
    state = slot_state_dict(model)
    slot = _slot_build(model, {k: v.shape for k, v in state.items()})
    slot.load_state_dict(state)
    return slot.eval()


def write_slot_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, images: int = 64, seed: int = 0) -> dict:
    """Extract from a folded checkpoint, verify on ``images`` random inputs that every image gets the
    same logits from the slot CNN as from the folded model, and save it; returns what was done."""
    ck = load_checkpoint(checkpoint)
    folded = ck.model.eval()
    slot = extract_slot_cnn(folded)
    n = images - images % folded.fold or folded.fold
    x = torch.rand(n, *folded.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        diff = (folded.classify(x) - slot.classify(x)).abs().max().item()
    if diff > 1e-4:
        raise UsageError(f"the extracted slot CNN differs from {checkpoint} by up to {diff:.3g} in a logit; "
                         "its layers are not all slot-separable")
    metrics = {**ck.metrics, "extracted_from": str(checkpoint), "extracted_fold": folded.fold}
    path = save_checkpoint(out_dir, slot, ck.class_names, metrics=metrics, extra=ck.extra,
                           calibration_images=load_calibration(checkpoint))
    return {"checkpoint": str(path), "fold": folded.fold, "width_mult": slot.config.width_mult,
            "channel_multiple": slot.config.channel_multiple, "max_abs_logit_diff": diff,
            "params": sum(p.numel() for p in slot.parameters())}

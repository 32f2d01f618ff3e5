"""Which fold isolation a served model needs (``--isolation auto``).

A folded model's answer for an image may depend on its fold-mates; then a server that fills folds
with other clients' images lets one client change another's answers, and isolation "request"
(each request folded alone, its last fold padded) is the safe choice. A model trained with
cross-slot decay inf (``foldcnn train --cross-slot-decay inf``) has every weight between fold
slots at zero, so an image's logits are a function of its own slot only: folds may be filled
across requests ("none") and every answer equals the isolated one. An unfolded model (fold 1)
has no fold-mates at all.

The checkpoint records how it was trained in ``config.json`` (``extra.train_config``, written by
``foldcnn train`` and ``foldcnn fold``). That record is necessary, not sufficient: layers that
fold-slot tying leaves free (grouped convolutions, concatenations) keep their cross-slot weights,
and an engine may quantize per batch. So the server also probes the loaded model
(:func:`probe_fold_invariance`): one image's probabilities with two sets of random fold-mates,
in every slot, must agree exactly (to 1e-5); if not, "auto" keeps request isolation.
Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["SERVE_ISOLATION", "checkpoint_fold_invariant", "predictor_fold_invariant", "probe_fold_invariance",
           "resolve_isolation"]
PROBE_TOLERANCE = 1e-5

SERVE_ISOLATION = ("auto", "none", "request", "key")


def checkpoint_fold_invariant(path) -> bool:
    """True when the checkpoint at ``path`` was trained with cross-slot decay inf (and tied fold
    slots, which that decay requires), as its ``config.json`` records; False when it says
    otherwise or records nothing."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    train = ((cfg.get("extra") or {}).get("train_config") or {}) if isinstance(cfg, dict) else {}
    decay = train.get("cross_slot_decay")
    return isinstance(decay, (int, float)) and math.isinf(decay) and decay > 0 and bool(train.get("tie_slots"))


def predictor_fold_invariant(predictor) -> bool:
    """Whether ``predictor``'s answers cannot depend on fold-mates: fold 1, an explicit
    ``fold_invariant`` attribute, or the checkpoint it was loaded from (Predictor.from_checkpoint)."""
    if int(predictor.fold) == 1:
        return True
    flag = getattr(predictor, "fold_invariant", None)
    if flag is not None:
        return bool(flag)
    path = getattr(predictor, "checkpoint_dir", None) or getattr(getattr(predictor, "model", None),
                                                                 "checkpoint_dir", None)
    return path is not None and checkpoint_fold_invariant(path)


def probe_fold_invariance(predict_arrays, fold: int, input_shape, seed: int = 0) -> bool:
    """True when an image gets the same probabilities (within PROBE_TOLERANCE) in every slot of a
    fold whatever its fold-mates (two random sets); ``predict_arrays``: uint8 (N, C, H, W) ->
    (indices, probabilities (N, K))."""
    if fold == 1:
        return True
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (1, *input_shape), dtype=np.uint8)
    batches = []
    for _ in range(2):
        mates = rng.integers(0, 256, (fold * fold, *input_shape), dtype=np.uint8)
        mates[np.arange(fold) * fold + np.arange(fold)] = image  # slot j of fold j: the probed image
        batches.append(mates)
    probs = [np.asarray(predict_arrays(b)[1])[np.arange(fold) * fold + np.arange(fold)] for b in batches]
    return all(np.abs(p - probs[0][0]).max() <= PROBE_TOLERANCE for p in probs)


def resolve_isolation(isolation: str, invariant: bool) -> str:
    """The batcher's isolation for a server setting: "auto" is "none" for a fold-invariant model
    and "request" otherwise; the other settings stand."""
    if isolation == "auto":
        return "none" if invariant else "request"
    return isolation

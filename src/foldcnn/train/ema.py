"""Weight averaging: an exponential moving average (EMA) of the weights seen while training.

With ``TrainConfig.ema_decay`` = d > 0 the loop keeps, next to the trained weights, a shadow copy
updated after every optimizer step as ``shadow += (1 - d_t) * (weights - shadow)``, where
``d_t = min(d, (1 + t) / (10 + t))`` after t updates: early in a run the average follows the
weights closely instead of remembering the random start. Validation, the best checkpoint and the
saved model use the averaged weights; the optimizer keeps stepping the trained ones.

Every floating-point entry of the state dict is averaged, BatchNorm running statistics included,
and under fold-slot tying (foldcnn.train.symmetry) the tied blocks are what gets averaged, so the
average is tied too. Integer buffers (BatchNorm's batch counter) are left alone.

Why not ``torch.optim.swa_utils.AveragedModel`` (``python experiments/lab/ema_averagedmodel.py``):
with ``multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True`` it computes another average.
Its decay is constant (no warm-up; ours stays below d until t reaches (10d - 1) / (1 - d): 80 updates
for d = 0.9 and 8,990 for 0.999), its first ``update_parameters`` copies the weights instead of
averaging them, and it averages the integer batch counters too, truncating (40 against the
model's 50 after 50 steps). After 50 Adam steps with d = 0.9 a BatchNorm running variance differs
from ours by 18% of its size. Our warm-up rule written as a ``multi_avg_fn`` (plus one priming
``update_parameters``) does give bit-identical weights, but then the rule is still ours and the
library only replaces the loop over tensors, while adding a second module (a deep copy, its
parametrizations included) and a state of other keys (``module.*``, ``n_averaged``), so train
states saved before (``decay``, ``updates``, ``shadow``) would need a converter to resume.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from foldcnn.errors import UsageError

__all__ = ["WeightAverage"]


class WeightAverage:
    """EMA of ``model``'s floating-point state; see the module docstring."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise UsageError(f"the EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        state = model.state_dict()
        for k, avg in self.shadow.items():
            avg.lerp_(state[k], weight)
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Inside the block ``model`` holds the averaged weights; the trained ones come back after."""
        state = model.state_dict()
        with torch.no_grad():
            kept = {k: state[k].clone() for k in self.shadow}
            for k, avg in self.shadow.items():
                state[k].copy_(avg)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in kept.items():
                    state[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": float(self.decay), "updates": int(self.updates),
                "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
            raise UsageError(f"the saved weight average does not match this model (missing {missing[:4]}, "
                             f"unexpected {extra[:4]})")
        for k, avg in self.shadow.items():
            if shadow[k].shape != avg.shape:
                raise UsageError(f"the saved weight average has {k} of shape {tuple(shadow[k].shape)}, "
                                 f"this model {tuple(avg.shape)}")
            avg.copy_(shadow[k])
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])

"""Fold-slot symmetric training: every fold slot is treated alike, so no slot can win the features.

Observed (docs/accuracy.md): a folded model trained freely learns the image in one fold slot and
leaves the others near chance; whichever slot first finds useful features owns them. The task is
symmetric in the slots (groups are random mixtures, so a cyclic shift of the slots is as likely as
the original order), so the ideal folded model is *equivariant*: shifting the input's fold slots by
one shifts its per-slot outputs by one. This module trains inside exactly that family.

Each hidden width ``w`` is split into ``f`` slot groups of ``g = w // f`` channels (channels
``[a*g, (a+1)*g)`` belong to group ``a``) and ``r = w % f`` shared channels at the end. The input's
groups are the fold slots (``C`` channels each) and the classifier's output groups are the
per-image logits (``K`` each), as the folding contract says. A weight from input group ``b`` to
output group ``a`` is ``B[(b - a) mod f]`` (block-circulant); a weight from any group to a shared
channel is one block ``A``, from a shared channel to any group one block ``C``, shared to shared a
free block ``D``; biases and BatchNorm scales repeat one vector per group. A linear layer after a
flatten sees each channel as ``H*W`` consecutive features and uses the same split.

The tying is a :mod:`torch.nn.utils.parametrize` parametrization of the ordinary ``Conv2d`` and
``Linear`` weights: the model keeps its modules, and :func:`untie_fold_slots_` writes the dense
weights back, so the trained model has exactly the paper's layers, parameters and FLOPs.
It holds the original model's number of weights (``f * (w/f)^2 = w^2 / f``), i.e. no fewer than the
unfolded CNN, and computes with the folded model's full width.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from foldcnn.errors import UsageError

__all__ = ["tie_fold_slots_", "untie_fold_slots_", "has_tied_fold_slots", "slot_split", "plain_state_dict",
           "untiable_layers", "slot_diagonal_init_", "shrink_cross_slot_", "pool_slot_statistics_"]


def slot_split(width: int, fold: int, unit: int = 1) -> tuple[int, int]:
    """(features per slot group, shared features) of a dimension of ``width`` features that come
    in runs of ``unit`` per channel (``H*W`` after a flatten, else 1)."""
    channels = width // unit
    return (channels // fold) * unit, (channels % fold) * unit


class _TiedMatrix(nn.Module):
    """weight (O, I, *k) from blocks B (f, go, gi, *k), A (ro, gi, *k), C (go, ri, *k), D (ro, ri, *k)."""

    def __init__(self, fold: int, out_split: tuple[int, int], in_split: tuple[int, int], channels_last: bool):
        super().__init__()
        self.fold, self.out_split, self.in_split = fold, out_split, in_split
        self.channels_last = channels_last
        f = fold
        self.register_buffer("index", (torch.arange(f)[None, :] - torch.arange(f)[:, None]) % f, persistent=False)

    def forward(self, b, a, c, d):
        f, go, gi = self.fold, self.out_split[0], self.in_split[0]
        k = b.shape[3:]
        blocks = b[self.index]  # (f_out, f_in, go, gi, *k)
        regular = blocks.transpose(1, 2).reshape(f * go, f * gi, *k)
        top = torch.cat([regular, c.repeat(f, *([1] * (c.dim() - 1)))], dim=1)
        bottom = torch.cat([a.repeat(1, f, *([1] * len(k))), d], dim=1)
        weight = torch.cat([top, bottom], dim=0)
        if self.channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
        return weight

    @torch.no_grad()
    def right_inverse(self, w):
        """Blocks that reproduce the first group's row and column of ``w`` (keeps the init's scale)."""
        f, go, gi = self.fold, self.out_split[0], self.in_split[0]
        b = torch.stack([w[:go, j * gi:(j + 1) * gi] for j in range(f)])
        a = w[f * go:, :gi]
        c = w[:go, f * gi:]
        d = w[f * go:, f * gi:]
        return b.clone(), a.clone(), c.clone(), d.clone()


class _TiedVector(nn.Module):
    """vector (O,) from one vector per group (go,) and the shared part (ro,)."""

    def __init__(self, fold: int, split: tuple[int, int]):
        super().__init__()
        self.fold, self.split = fold, split

    def forward(self, regular, shared):
        return torch.cat([regular.repeat(self.fold), shared])

    @torch.no_grad()
    def right_inverse(self, v):
        go = self.split[0]
        return v[:go].clone(), v[self.fold * go:].clone()


def _layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))]


def has_tied_fold_slots(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in _layers(model))


def _concat_fed(model: nn.Module) -> set[str]:
    """Layers of a traced (torch.fx) model whose input passes through a concatenation: the parts'
    slot groups lie side by side, not in the f groups the tying assumes."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return set()
    cat = {torch.cat, torch.concat, torch.concatenate}
    tainted, out = set(), set()
    for n in graph.nodes:
        fed = any(a in tainted for a in n.all_input_nodes)
        if n.op == "call_function" and n.target in cat:
            tainted.add(n)
        elif n.op == "call_module":
            if fed:
                out.add(n.target)
            if fed and not any(True for _ in model.get_submodule(n.target).parameters()):
                tainted.add(n)  # activations and pooling pass the layout on; a weighted layer remixes it
        elif fed:
            tainted.add(n)
    return out


def untiable_layers(model: nn.Module) -> dict[str, str]:
    """Layers fold-slot tying leaves free, with the reason: grouped or depthwise convolutions (their
    channel groups would cut across slots) and, in traced models, layers fed by a concatenation."""
    out = {}
    concat = _concat_fed(model)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            out[name] = f"grouped convolution (groups={m.groups}): fold-slot tying needs groups=1"
        elif any(name == t or name.startswith(t + ".") for t in concat) and isinstance(m, tuple(_TIED_TYPES)):
            out[name] = "its input is a concatenation, whose channels are not in fold-slot groups"
    return out


_TIED_TYPES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _slot_layers(model: nn.Module, fold: int):
    """(layer, out_split, in_split) for each conv and linear of a folded ``model`` that fold-slot
    tying reaches, and (layer, None, None) for each such BatchNorm, in module order."""
    skip = {id(model.get_submodule(n)) for n in untiable_layers(model)}
    previous_width = None
    for m in _layers(model):
        if id(m) in skip:
            previous_width = _out_features(m) or previous_width
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            yield m, None, None
            continue
        if isinstance(m, nn.Conv2d):
            n_in, n_out, unit = m.in_channels, m.out_channels, 1
        else:
            n_in, n_out = m.in_features, m.out_features
            # after a flatten, each of the previous layer's channels is H*W consecutive features
            unit = n_in // previous_width if previous_width and n_in % previous_width == 0 else 1
        yield m, slot_split(n_out, fold), slot_split(n_in, fold, unit)
        previous_width = n_out


def tie_fold_slots_(model: nn.Module, fold: int) -> nn.Module:
    """Parametrize every conv, linear and BatchNorm of a folded ``model`` as fold-slot symmetric.

    In place; returns ``model``. The current weights' first slot group seeds the blocks, so a
    freshly initialized model keeps its initialization's scale. ``fold=1`` changes nothing.
    The layers :func:`untiable_layers` names (grouped or depthwise convolutions, layers fed by a
    concatenation) train untied; the others stay tied.
    """
    if fold <= 1:
        return model
    if has_tied_fold_slots(model):
        raise UsageError("the model's fold slots are already tied")
    for m, out_split, in_split in list(_slot_layers(model, fold)):
        if out_split is None:  # BatchNorm
            if m.affine:
                split = slot_split(m.num_features, fold)
                parametrize.register_parametrization(m, "weight", _TiedVector(fold, split))
                parametrize.register_parametrization(m, "bias", _TiedVector(fold, split))
            continue
        channels_last = m.weight.dim() == 4 and m.weight.is_contiguous(memory_format=torch.channels_last) \
            and not m.weight.is_contiguous()
        tied = _TiedMatrix(fold, out_split, in_split, channels_last)
        parametrize.register_parametrization(m, "weight", tied, unsafe=True)
        if m.bias is not None:
            parametrize.register_parametrization(m, "bias", _TiedVector(fold, out_split))
    return model


@torch.no_grad()
def slot_diagonal_init_(model: nn.Module, fold: int) -> nn.Module:
    """Start each fold slot's channels from its own image only, in place; returns ``model``.

    In every conv and linear that fold-slot tying reaches, the weights from slot group ``b`` to
    slot group ``a != b`` are zeroed and the diagonal blocks scaled by ``sqrt(fan-in before /
    fan-in after)``, so each unit's input keeps its initial variance. The folded model then starts
    as f copies of a narrower original side by side: every slot's logits see their own image from
    the first step, instead of a random mixture of all f that training must first untangle (the
    long flat start at ln K measured in docs/accuracy.md). The zeroed blocks get gradients and
    learn whatever cross-slot mixing helps. Shared channels (widths not divisible by f) keep their
    weights. Call it on fresh weights, before :func:`tie_fold_slots_`; ``fold=1`` changes nothing.
    """
    if fold <= 1:
        return model
    if has_tied_fold_slots(model):
        raise UsageError("slot-diagonal init needs the dense weights: call it before tie_fold_slots_")
    for m, out_split, in_split in list(_slot_layers(model, fold)):
        if out_split is None:
            continue
        go, (gi, ri) = out_split[0], in_split
        if go == 0 or gi == 0:
            continue
        w = m.weight
        slot_out = torch.arange(w.shape[0], device=w.device) // go  # fold and above: shared channels
        slot_in = torch.arange(w.shape[1], device=w.device) // gi
        shared_out, shared_in = slot_out >= fold, slot_in >= fold
        keep = (slot_out[:, None] == slot_in[None, :]) | shared_in[None, :] | shared_out[:, None]
        scale = math.sqrt((fold * gi + ri) / (gi + ri))  # a group row's fan-in before / after
        factor = torch.where(shared_out[:, None], 1.0, scale) * keep
        w.mul_(factor.to(w.dtype).view(*factor.shape, *([1] * (w.dim() - 2))))
    return model


@torch.no_grad()
def shrink_cross_slot_(model: nn.Module, factor: float) -> int:
    """Multiply every weight between different fold slots of a tied ``model`` by ``factor``, in
    place; returns how many layers it reached.

    In each tied conv and linear (:func:`tie_fold_slots_`) these are the circulant blocks
    ``B[1:]`` (input slot ``b`` to output slot ``a != b``) and the blocks ``A`` and ``C`` that pass
    through shared channels (which every slot feeds and reads); the diagonal block ``B[0]`` and the
    shared-to-shared block ``D`` keep their values. ``factor=0`` makes the model ``f`` copies of
    one narrower CNN side by side, each slot's logits a function of its own image alone. Layers
    tying leaves free (:func:`untiable_layers`) are not reached.
    """
    if not 0 <= factor <= 1:
        raise UsageError(f"the cross-slot factor must lie in [0, 1], got {factor}")
    reached = 0
    for m in _layers(model):
        weight = getattr(getattr(m, "parametrizations", None), "weight", None)
        if weight is None or not isinstance(weight[0], _TiedMatrix):
            continue
        b, a, c = weight.original0, weight.original1, weight.original2
        b[1:].mul_(factor)
        a.mul_(factor)
        c.mul_(factor)
        reached += 1
    return reached


@torch.no_grad()
def pool_slot_statistics_(model: nn.Module, fold: int) -> int:
    """Average each BatchNorm's running statistics over the fold slots, in place; returns how
    many BatchNorms it changed.

    Tying makes every weight and BatchNorm affine slot-symmetric, but the running mean and variance
    are buffers, one per channel: each slot's channels average the images that happened to sit in
    that slot, so the f estimates of the same statistic differ a little, and after fusing the slots
    compute slightly different functions: an image's answer then changes with the slot it lands
    in (docs/notebook/2026-12-07-fold-mates-budgets.md, "What flips"). Averaging the f estimates per channel (means with means,
    variances with variances) makes the eval-mode model exactly slot-symmetric. Shared channels and
    BatchNorms tying does not reach keep theirs. ``fold=1`` changes nothing.
    """
    if fold <= 1:
        return 0
    changed = 0
    for m, out_split, _ in list(_slot_layers(model, fold)):
        if out_split is not None or m.running_mean is None:
            continue
        g = slot_split(m.num_features, fold)[0]
        if g == 0:
            continue
        for stat in (m.running_mean, m.running_var):
            groups = stat[:fold * g].view(fold, g)
            groups.copy_(groups.mean(0, keepdim=True).expand_as(groups))
        changed += 1
    return changed


def _out_features(m: nn.Module) -> int | None:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features if isinstance(m, nn.Linear) else None


def untie_fold_slots_(model: nn.Module) -> nn.Module:
    """Write the dense weights of every tied layer back as ordinary parameters, in place."""
    # parametrize keeps the value as a Parameter only if it requires grad, i.e. not under no_grad
    with torch.enable_grad():
        for m in _layers(model):
            if parametrize.is_parametrized(m):
                for name in list(m.parametrizations.keys()):
                    parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state dict ``model`` will have once untied (dense weights, plain keys)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m):
            for tensor in m.parametrizations.keys():
                state[f"{name}.{tensor}" if name else tensor] = getattr(m, tensor).detach().clone()
    return state

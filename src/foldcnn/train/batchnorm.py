"""Train-time BatchNorm, fused away afterwards: the trained model has the paper's architecture.

The paper's game and NoScope CNNs have no normalization layers (docs/design.md, "The paper's models"). Without them,
folded models on our data sit at chance for many epochs (loss stays at ln K: measured in
docs/accuracy.md) while the paper's remedy, a 1500-epoch budget, does not fit a small CPU.
So training inserts a BatchNorm after every convolution and, once training ends, folds each
BatchNorm into the convolution before it. In eval mode a BatchNorm is a per-channel affine map,

    bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta = W'*x + b'

with ``W' = W * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, so the
fused model computes the same function with exactly the original layers, parameter count and
FLOPs; checkpoints, export and inference never see a BatchNorm. The arithmetic is torch's own
(``torch.nn.utils.fusion.fuse_conv_bn_weights``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from foldcnn.errors import UsageError

__all__ = ["ConvBN", "add_train_batchnorm_", "fuse_train_batchnorm_", "has_train_batchnorm"]


class ConvBN(nn.Sequential):
    """A convolution followed by the BatchNorm that training added (fused by fuse_train_batchnorm_)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv, nn.BatchNorm2d(conv.out_channels))


def _children_to_replace(model: nn.Module, kind: type) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if type(child) is kind]


def add_train_batchnorm_(model: nn.Module) -> nn.Module:
    """Wrap every ``nn.Conv2d`` (with a bias) of ``model`` in a :class:`ConvBN`, in place.

    Returns ``model``. A model that already has BatchNorm layers (the CIFAR ResNet) is left as
    it is. The BatchNorm takes the convolution's device and dtype. Calling it twice is an error,
    since a second BatchNorm would not fuse into the first.
    """
    if has_train_batchnorm(model):
        raise UsageError("the model already has train-time BatchNorm layers")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    for parent, name, conv in _children_to_replace(model, nn.Conv2d):
        if conv.bias is None:
            continue
        wrapped = ConvBN(conv)
        wrapped[1].to(device=conv.weight.device, dtype=conv.weight.dtype)
        setattr(parent, name, wrapped)
    return model


def has_train_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, ConvBN) for m in model.modules())


@torch.no_grad()
def _fused(block: ConvBN) -> nn.Conv2d:
    # fuse_conv_bn_weights, not fuse_conv_bn_eval: the latter refuses modules in train mode, and
    # training may end in train mode; the fused function is the eval-mode one either way (it reads
    # the running statistics). The copy keeps the conv's device, dtype, layout and settings.
    conv, bn = block[0], block[1]
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                    bn.eps, bn.weight, bn.bias)
    return fused


def fuse_train_batchnorm_(model: nn.Module) -> nn.Module:
    """Replace every :class:`ConvBN` by one convolution computing the same eval-mode function.

    In place; returns ``model``. Memory format (channels_last) follows the original weights.
    """
    for parent, name, block in _children_to_replace(model, ConvBN):
        fused = _fused(block)
        if block[0].weight.is_contiguous(memory_format=torch.channels_last):
            fused.to(memory_format=torch.channels_last)
        setattr(parent, name, fused)
    return model

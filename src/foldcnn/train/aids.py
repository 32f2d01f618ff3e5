"""Which layers of a folded model the training aids reach: train-time BatchNorm, the zero-init head
and fold-slot tying, for zoo models and for what ``fold_model`` makes of a user's CNN alike.

An aid that cannot apply to a layer (a conv without bias gets no train-time BatchNorm, a grouped
conv is not tied, ...) is left out for that layer and never fails the run; :func:`aid_report` lists
what was left out and why, for the run manifest and the command line to say.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from foldcnn.train.symmetry import untiable_layers

__all__ = ["aid_notes", "aid_report", "batchnorm_skips", "head_layer_name", "zero_init_head_"]


def head_layer_name(model: nn.Module) -> str | None:
    """The layer emitting the logits: in a traced model the Conv2d/Linear the output comes from
    (through parameter-free layers); otherwise the last ``nn.Linear``. None when there is none."""
    graph = getattr(model, "graph", None)
    if isinstance(graph, fx.Graph):
        node = next(n for n in graph.nodes if n.op == "output").args[0]
        while isinstance(node, fx.Node):
            if node.op == "call_module" and isinstance(model.get_submodule(node.target), (nn.Conv2d, nn.Linear)):
                return node.target
            ins = node.all_input_nodes
            if len(ins) != 1:
                break
            node = ins[0]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def zero_init_head_(model: nn.Module) -> str | None:
    """Zero the weights of the model's classifier (see :func:`head_layer_name`), in place; returns its name."""
    name = head_layer_name(model)
    if name is not None:
        torch.nn.init.zeros_(model.get_submodule(name).weight)
    return name


def batchnorm_skips(model: nn.Module) -> dict[str, str]:
    """Convolutions that train-time BatchNorm leaves out, with the reason ({"": ...}: all of them)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return {"": "the model has its own BatchNorm layers"}
    return {name: "conv without bias: a fused BatchNorm would add one and change the architecture"
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is None}


def aid_report(model: nn.Module, *, train_batchnorm: bool, zero_init_head: bool, tie_slots: bool,
               slot_diagonal_init: bool = False) -> dict:
    """For the run manifest: each aid's state and the layers it leaves out (name -> reason)."""
    fold = getattr(model, "fold", 1)
    return {
        "slot_diagonal_init": {"on": slot_diagonal_init and fold > 1},
        "train_batchnorm": {"on": train_batchnorm, "skipped": batchnorm_skips(model) if train_batchnorm else {}},
        "zero_init_head": {"on": zero_init_head, "layer": head_layer_name(model) if zero_init_head else None},
        "tie_slots": {"on": tie_slots and fold > 1,
                      "skipped": untiable_layers(model) if tie_slots and fold > 1 else {}},
    }


def aid_notes(report: dict) -> list[str]:
    """One sentence per aid that left layers out (for stderr)."""
    out = []
    for aid, r in report.items():
        skipped = r.get("skipped") or {}
        if not skipped:
            continue
        if "" in skipped:
            out.append(f"{aid.replace('_', '-')}: not used ({skipped['']})")
            continue
        by_reason: dict[str, list[str]] = {}
        for layer, why in skipped.items():
            by_reason.setdefault(why, []).append(layer)
        for why, layers in by_reason.items():
            shown = ", ".join(layers[:6]) + (f" and {len(layers) - 6} more" if len(layers) > 6 else "")
            out.append(f"{aid.replace('_', '-')}: left out for {shown} ({why})")
    if report["zero_init_head"]["on"] and report["zero_init_head"]["layer"] is None:
        out.append("zero-init-head: not used (no Conv2d/Linear classifier found)")
    return out

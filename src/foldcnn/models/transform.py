"""Fold a CNN the zoo does not know (torch.fx): the FoldedCNNs rule applied to any plain CNN.

``fold_model(model, f, (C, H, W))`` traces ``model`` (images (N, C, H, W) -> logits (N, K)) and
returns its folded architecture with fresh weights: folded inputs (N/f, f*C, H, W) -> folded
logits (N/f, f*K). The layers reading the input take f*C channels, every hidden width c becomes
``scaled_width(c, width_mult, channel_multiple)`` (the zoo's rounding), the head emits f*K, and
kernels, strides, padding, pooling and H x W stay. Each replacement layer is built from the tensor
that actually reaches it in a dummy run of the folded graph, so in_channels / in_features after
concatenations, residual additions and flattens come out right by construction.

Every new layer keeps PyTorch's default initialization for its type (what ``nn.Conv2d(...)``,
``nn.Linear(...)`` give), as the user's own CNN would get it, not the paper's N(0, 0.01) for linear
layers that the zoo models use: on a user CNN with an MLP head the paper's init left the hidden
layer's units near zero and training flat for tens of epochs (docs/accuracy.md).
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
import os
import traceback

import torch
import torch.nn.functional as F
from torch import fx, nn

from foldcnn.errors import FoldcnnError
from foldcnn.fold import check_fold
from foldcnn.models.base import (
    FoldedCNN,
    resolve_channel_multiple,
    resolve_width_mult,
    scaled_width,
)

__all__ = ["FoldError", "FoldedGraphModule", "fold_model"]

# Dummy batch for the shape runs: 2, not 1, so a reshape that drops the batch axis shows up.
_BATCH = 2


class FoldError(FoldcnnError, ValueError):
    """``model`` (or one named layer of it) cannot be folded correctly by :func:`fold_model`."""


def _classes(mod) -> tuple[type, ...]:
    return tuple(c for c in vars(mod).values()
                 if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == mod.__name__)


_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)
_SOFTMAX_FNS = {F.softmax, F.log_softmax, F.softmin, torch.softmax, torch.log_softmax}
# Layers without weights: copied unchanged (they act per channel or per position).
_PARAM_FREE = tuple(
    c for c in _classes(nn.modules.activation) + _classes(nn.modules.pooling)
    + _classes(nn.modules.dropout) + _classes(nn.modules.padding)
    if c not in (nn.MultiheadAttention, nn.PReLU)
) + (nn.Identity, nn.Flatten, nn.Upsample, nn.ChannelShuffle)
_WIDENED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.PReLU)
_REFUSED: list[tuple[tuple[type, ...], str]] = [
    ((nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder,
      nn.TransformerEncoderLayer, nn.TransformerDecoderLayer),
     "attention is not supported: folding widens the channels of conv/linear layers only"),
    ((nn.RNNBase, nn.RNNCellBase), "recurrent layers are not supported"),
    ((nn.Embedding, nn.EmbeddingBag), "embeddings read token ids, not image channels"),
    ((nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
     "only Conv2d is supported (folding stacks images along the channels of 2-D convolutions)"),
]
# Products between activations (attention-like): their shapes are not channel widths.
_REFUSED_FNS = {F.scaled_dot_product_attention, F.multi_head_attention_forward, torch.matmul,
                torch.bmm, torch.mm, torch.baddbmm, torch.einsum, operator.matmul}
_REFUSED_METHODS = {"matmul", "bmm", "mm", "baddbmm", "__matmul__"}
_SHAPE_FNS = {torch.flatten, torch.reshape, torch.squeeze}
_SHAPE_METHODS = {"flatten", "view", "reshape", "squeeze"}


class FoldedGraphModule(fx.GraphModule, FoldedCNN):
    """What :func:`fold_model` returns: the folded graph with the zoo's interface.

    ``forward``: (N/f, f*C, H, W) -> (N/f, f*K); ``classify``: (N, C, H, W), any N -> (N, K).
    Parameter names match the original model's, so at fold=1 its state_dict loads unchanged.
    """

    def __deepcopy__(self, memo):
        res = super().__deepcopy__(memo)  # GraphModule rebuilds from its code: re-attach the interface
        res.set_interface(self.fold, self.num_classes, self.input_shape)
        res.config = self.config  # how to rebuild it (models by import path), frozen: shared
        return res

    def __reduce__(self):
        # GraphModule unpickles as a plain GraphModule; rebuild this class around it (torch.save,
        # multiprocessing and Ray workers pickle the model).
        _, args = super().__reduce__()
        return _unpickle, (*args, type(self).__name__)


def _unpickle(body: dict, import_block: str, class_name: str) -> FoldedGraphModule:
    gm = fx.graph_module.reduce_graph_module(body, import_block)
    res = FoldedGraphModule(gm, gm.graph, class_name)
    _order_like(res, gm)
    res.set_interface(body["fold"], body["num_classes"], body["input_shape"])
    res.config = body.get("config")
    return res


def _where(gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        return f"layer '{n.target}' ({type(gm.get_submodule(n.target)).__name__})"
    t = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", repr(n.target))
    return f"node '{n.name}' ({t})"


def _is_softmax(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), _SOFTMAX_MODULES)
    return (n.op == "call_function" and n.target in _SOFTMAX_FNS) or (
        n.op == "call_method" and n.target in ("softmax", "log_softmax"))


class _Tracer(fx.Tracer):
    """Remembers the submodule being traced, to name the layer when tracing fails."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        try:
            self.stack.append(self.path_of_module(m))
        except NameError:  # a module created inside forward has no name in the model
            self.stack.append(type(m).__name__)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()  # on an exception the failing module stays on top, to be named
        return out


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:
        where = f" in module '{tracer.stack[-1]}'" if tracer.stack else ""
        skip = (os.path.dirname(torch.__file__), __file__)
        user = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(skip)]
        src = f" at {user[-1].filename}:{user[-1].lineno} ({user[-1].line})" if user else ""
        raise FoldError(
            f"cannot trace {type(model).__name__}{where}{src} with torch.fx: {e}. Data-dependent "
            "control flow (if/for/while on tensor values) cannot be folded automatically; "
            "write the folded model by hand (see foldcnn.models for examples)"
        ) from e
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _check_static(gm: fx.GraphModule) -> None:
    """Refuse what cannot be folded before running anything, naming the layer."""
    for n in gm.graph.nodes:
        if n.op == "placeholder" and n is not next(iter(gm.graph.nodes)) and not n.args:
            raise FoldError(f"forward takes a second input '{n.name}'; fold_model folds one image batch")
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            for types, why in _REFUSED:
                if isinstance(m, types):
                    raise FoldError(f"{_where(gm, n)}: {why}")
            if not isinstance(m, _WIDENED + _PARAM_FREE):
                raise FoldError(
                    f"{_where(gm, n)}: unsupported layer type; fold_model rebuilds Conv2d, Linear, "
                    "BatchNorm, GroupNorm, LayerNorm, PReLU and copies activations, pooling, "
                    "dropout, padding and flatten"
                )
        elif n.op == "get_attr" and n.target in dict(gm.named_parameters()):
            raise FoldError(
                f"{_where(gm, n)}: parameter '{n.target}' is used directly (functional conv/linear "
                "or a hand-made weight), so its width cannot be rebuilt; use nn.Conv2d / nn.Linear"
            )
        elif (n.op == "call_function" and n.target in _REFUSED_FNS) or (
                n.op == "call_method" and n.target in _REFUSED_METHODS):
            raise FoldError(f"{_where(gm, n)}: products between activations (attention) are not supported")


def _out_width(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _build(m: nn.Module, x: torch.Tensor, width: int | None, head: bool) -> nn.Module:
    """A fresh ``m`` for the input ``x`` reaching it in the folded graph; ``width`` = new output width."""
    c = x.shape[1] if x.dim() >= 2 else None
    if isinstance(m, nn.Conv2d):
        groups = m.groups
        if groups != 1:
            if head or not groups == m.in_channels == m.out_channels:
                raise FoldError(f"grouped convolution (groups={groups}) is not supported: widened "
                                "channels need not divide into the same groups; only depthwise "
                                "convs (groups == in_channels == out_channels) are")
            groups = width = c  # depthwise: one filter per channel, whatever the width
        return nn.Conv2d(c, width, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                         m.bias is not None, m.padding_mode)
    if isinstance(m, (nn.Linear, nn.LayerNorm)) and x.dim() != 2:
        raise FoldError(f"{type(m).__name__} applied to a tensor of shape {tuple(x.shape)}; only "
                        "(N, features) after a flatten can be widened")
    if isinstance(m, nn.Linear):
        return nn.Linear(c, width, bias=m.bias is not None)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(m)(c, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.GroupNorm):
        if c % m.num_groups:
            raise FoldError(f"widened width {c} is not divisible by num_groups={m.num_groups}; "
                            f"try channel_multiple={m.num_groups}")
        return nn.GroupNorm(m.num_groups, c, m.eps, m.affine)
    if isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1:
            raise FoldError("LayerNorm over several axes is not supported")
        return nn.LayerNorm(c, m.eps, m.elementwise_affine, bias=m.bias is not None)
    if isinstance(m, nn.PReLU):
        return nn.PReLU(1 if m.num_parameters == 1 else c)
    return copy.deepcopy(m)


def _flatten_pattern(n: fx.Node, shapes: dict) -> tuple[int, ...]:
    """Check that reshape node ``n`` flattens each image's values into one axis (plus size-1
    axes), as ``x.view(x.size(0), -1)`` or ``x.view(b, c, 1, 1)`` do; returns the shape after
    the batch axis with -1 for that axis, which stays valid when the channels widen."""
    src, out = shapes[n.args[0]], shapes[n]
    per_image = math.prod(src[1:]) if src and len(src) >= 2 else None
    big = [i for i, d in enumerate(out[1:] if out else ()) if d != 1]
    # Only view/reshape take a shape (flatten and squeeze take dims): a literal batch size there
    # would pass at the dummy batch and break at any other.
    literal = (n.args[1:] if n.target in ("view", "reshape")
               else n.args[1:2] if n.target is torch.reshape else ())
    if len(literal) == 1 and isinstance(literal[0], (tuple, list)):
        literal = literal[0]
    hard_batch = bool(literal) and isinstance(literal[0], int) and literal[0] != -1
    if per_image is None or out[0] != src[0] or hard_batch or len(big) > 1 or (
            big and out[1 + big[0]] != per_image) or (not big and per_image != 1):
        raise FoldError(f"reshape {src} -> {out} is not a per-image flatten like x.view(x.size(0), -1);"
                        " other reshapes hard-code channel counts that folding changes")
    pos = big[0] if big else 0
    return tuple(-1 if i == pos else 1 for i in range(len(out) - 1))


class _Shapes(fx.Interpreter):
    """Runs the original graph once and records each node's output shape (None: not a tensor)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.extra_traceback = False  # our messages already name the node
        self.shapes: dict[fx.Node, tuple[int, ...] | None] = {}

    def run_node(self, n):
        try:
            v = super().run_node(n)
        except Exception as e:
            raise FoldError(f"{_where(self.module, n)}: the original model fails on the given "
                            f"input_shape: {type(e).__name__}: {e}") from e
        self.shapes[n] = tuple(v.shape) if isinstance(v, torch.Tensor) else None
        return v


class _Folder(fx.Interpreter):
    """Runs the graph on a folded dummy input, building each layer from what reaches it."""

    def __init__(self, gm, shapes, head, fold, width_mult, channel_multiple, device, dtype):
        super().__init__(gm)
        self.extra_traceback = False
        self.shapes, self.head, self.fold = shapes, head, fold
        self.wm, self.cm, self.device, self.dtype = width_mult, channel_multiple, device, dtype
        self.modules: dict[str, nn.Module] = {}
        self.reshapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n):
        self.node = n
        try:
            return super().run_node(n)
        except Exception as e:
            msg = str(e) if isinstance(e, FoldError) else f"{type(e).__name__}: {e}"
            hint = "" if isinstance(e, FoldError) else (
                " (each branch must widen by the same rule; one that does not, such as the raw"
                " input added to a conv output or a hard-coded size, cannot be folded)")
            raise FoldError(f"{_where(self.module, n)}: {msg}{hint}") from e

    def call_module(self, target, args, kwargs):
        orig = self.module.get_submodule(target)
        if isinstance(orig, nn.Flatten):
            _flatten_pattern(self.node, self.shapes)
        if target not in self.modules:
            head = target == self.head.target
            width = None
            if isinstance(orig, (nn.Conv2d, nn.Linear)):
                k = _out_width(orig)
                width = self.fold * k if head else scaled_width(k, self.wm, self.cm)
            new = _build(orig, args[0], width, head).to(self.device, self.dtype)
            self.modules[target] = new.eval()  # eval: the dummy run must not touch BN statistics
        return self.modules[target](*args, **kwargs)

    def call_function(self, target, args, kwargs):
        if target is operator.getitem and isinstance(args[0], torch.Tensor):
            raise FoldError("indexing or slicing an activation hard-codes channel positions "
                            "that folding changes; use torch.chunk / torch.split")
        if target in _SHAPE_FNS:
            return self._reshape(args[0])
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target in _SHAPE_METHODS:
            return self._reshape(args[0])
        return super().call_method(target, args, kwargs)

    def _reshape(self, x):
        pattern = self.reshapes[self.node] = _flatten_pattern(self.node, self.shapes)
        return x.reshape(x.shape[0], *pattern)


def _find_head(gm: fx.GraphModule, shapes: dict) -> tuple[fx.Node, int]:
    """The Conv2d/Linear producing the logits, and K; only parameter-free layers may follow it."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node) or shapes.get(out) is None or len(shapes[out]) != 2:
        raise FoldError("the model must return one tensor of logits (N, K)")
    n = out
    while not (n.op == "call_module" and isinstance(gm.get_submodule(n.target), (nn.Conv2d, nn.Linear))):
        if _is_softmax(gm, n):
            raise FoldError(f"{_where(gm, n)}: a softmax over the folded logits would mix the f "
                            "images' scores; return raw logits and apply softmax per image")
        # Tensor inputs other than constants (a temperature buffer): size arithmetic is not data.
        ins = [a for a in n.all_input_nodes if shapes.get(a) is not None and a.op != "get_attr"]
        if n.op == "placeholder" or len(ins) != 1 or (
                n.op == "call_module" and any(True for _ in gm.get_submodule(n.target).parameters())):
            raise FoldError(f"the output is not produced by one Linear or Conv2d layer followed only"
                            f" by activations, pooling, dropout or flatten (reached {_where(gm, n)})")
        n = ins[0]
    k = _out_width(gm.get_submodule(n.target))
    if shapes[out][1] != k:
        raise FoldError(f"{_where(gm, n)} emits {k} values per image but the model returns "
                        f"{shapes[out][1]}; the head's outputs must be the logits one-to-one")
    return n, k


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the dummy run (BatchNorm statistics stay untouched), restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _drop_reshapes(graph: fx.Graph, reshapes: dict, shapes: dict) -> None:
    """Replace each checked reshape by ``x.reshape(x.size(0), *pattern)`` (free of channel counts)."""
    for n, pattern in reshapes.items():
        x = n.args[0]
        with graph.inserting_before(n):
            size = graph.call_method("size", (x, 0))
            new = graph.call_method("reshape", (x, size, *pattern))
        n.replace_all_uses_with(new)
        dead = [a for a in n.all_input_nodes if a is not x]
        graph.erase_node(n)
        while dead:  # the size arithmetic that fed the old reshape (x.size(0), ...): not tensors
            d = dead.pop()
            if not d.users and d.op in ("call_function", "call_method") and shapes.get(d) is None:
                dead += d.all_input_nodes
                graph.erase_node(d)


def _order_like(new: nn.Module, orig: nn.Module) -> None:
    """Submodules in the original's order (GraphModule adds them in call order), so that
    ``parameters()`` and ``state_dict()`` list them in the same order as the original's."""
    rank = {name: i for i, name in enumerate(orig._modules)}
    items = sorted(new._modules.items(), key=lambda kv: rank.get(kv[0], len(rank)))
    new._modules.clear()
    new._modules.update(items)
    for name, child in items:
        if name in orig._modules and child is not None:
            _order_like(child, orig._modules[name])


def fold_model(
    model: nn.Module,
    fold: int,
    input_shape: tuple[int, int, int] | None = None,
    *,
    width_mult: float | None = None,
    channel_multiple: int | None = None,
) -> FoldedGraphModule:
    """The folded architecture of an unfolded CNN, with fresh weights (each layer's PyTorch default
    initialization; a custom initialization in ``model.__init__`` is not replayed).

    ``model`` maps images (N, C, H, W) to logits (N, K); ``input_shape`` is (C, H, W) (default:
    ``model.input_shape``). The result maps (N/f, f*C, H, W) to (N/f, f*K) and has ``fold``,
    ``num_classes`` (K), ``input_shape`` and ``classify``. Hidden widths become
    ``scaled_width(c, width_mult, channel_multiple)`` exactly as in the zoo (defaults: sqrt(fold),
    ``DEFAULT_CHANNEL_MULTIPLE``; ``channel_multiple=1`` is the paper's int truncation).
    ``fold=1`` rebuilds the same architecture. Raises :class:`FoldError` naming the layer that
    cannot be folded (grouped convs, attention, 1-D/3-D convs, RNNs, embeddings, tensor-dependent
    control flow, reshapes other than per-image flattens, a softmax after the head, ...).
    """
    fold = check_fold(fold)
    wm, cm = resolve_width_mult(fold, width_mult), resolve_channel_multiple(channel_multiple)
    input_shape = getattr(model, "input_shape", None) if input_shape is None else input_shape
    if input_shape is None or len(tuple(input_shape)) != 3:
        raise FoldError(f"input_shape must be one image's (C, H, W) (inputs are 4-D (N, C, H, W)), "
                        f"got {input_shape!r}")
    c, h, w = (int(s) for s in input_shape)
    if isinstance(model, FoldedCNN) and model.fold != 1:
        raise FoldError(f"{type(model).__name__} is already folded (fold={model.fold}); "
                        "pass the unfolded model")
    gm = _trace(model)
    _check_static(gm)
    p = next((t for t in model.state_dict().values() if t.is_floating_point()), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.get_default_dtype())
    with torch.no_grad(), _eval_mode(model):
        prop = _Shapes(gm)
        prop.run(torch.zeros(_BATCH, c, h, w, device=device, dtype=dtype))
        head, k = _find_head(gm, prop.shapes)
        folder = _Folder(gm, prop.shapes, head, fold, wm, cm, device, dtype)
        out = folder.run(torch.zeros(_BATCH, fold * c, h, w, device=device, dtype=dtype))
    if tuple(out.shape) != (_BATCH, fold * k):  # by construction; guards the contract
        raise FoldError(f"folded model returns {tuple(out.shape)}, expected (N/f, {fold * k})")
    _drop_reshapes(gm.graph, folder.reshapes, prop.shapes)
    root: dict = dict(folder.modules)
    for n in gm.graph.nodes:
        if n.op == "get_attr":  # buffers and constants: copied, never shared with ``model``
            root[n.target] = copy.deepcopy(folder.fetch_attr(n.target))
    folded = FoldedGraphModule(root, gm.graph, f"Folded{type(model).__name__}")
    _order_like(folded, model)
    folded.set_interface(fold, k, (c, h, w))
    return folded.train(model.training)

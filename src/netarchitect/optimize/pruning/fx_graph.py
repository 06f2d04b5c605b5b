"""Structured pruning of plain ``nn.Module``s through a ``torch.fx`` graph.

The module is traced symbolically and its shapes propagated from ``example_inputs``;
every value carries the channel space of one dimension (its *channel dim*: 1 after a
convolution, the last after a linear layer). Convolutions, linear layers, BatchNorm,
``nn.MultiheadAttention`` (whole heads), element-wise ops, pooling, ``add``/``mul`` (ties)
and ``cat`` along the channel dim are understood; any other op keeps the channels it
touches (a conservative fallback, so tracing never prunes wrongly). Pruned layers are
sliced in place on a copy; ``nn.MultiheadAttention`` with fewer heads of the same width
becomes a :class:`PrunedMultiheadAttention` with the same call signature.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ...spec import NodeSpec
from ._common import PruneError, check_amount, check_round_to
from .dependency import Chan, ChannelGraph, Dim, RuleContext
from .importance import group_scores
from .rules import _conv

__all__ = ["PrunedMultiheadAttention", "plan_module", "prune_module"]

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d,
    nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_PASS_FUNCTIONS = (
    F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.sigmoid, F.tanh, F.dropout, F.leaky_relu,
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu,
    torch.sigmoid, torch.tanh,
)
_PASS_METHODS = ("relu", "sigmoid", "tanh", "contiguous", "clone", "float", "detach")
_REDUCE_METHODS = ("mean", "sum", "amax", "amin")
_TIE_OPS = (operator.add, operator.sub, operator.mul, operator.iadd, torch.add, torch.mul)


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (self- or cross-attention, ``batch_first`` either way) with
    ``num_heads`` heads of ``head_dim`` each, which need not multiply to ``embed_dim``.

    Shapes:
        query ``(L, B, E)`` (``(B, L, E)`` if ``batch_first``) -> ``(output, None)``.
    """

    def __init__(self, mha: nn.MultiheadAttention, in_proj_weight: Tensor,
                 in_proj_bias: Tensor | None, out_weight: Tensor, num_heads: int) -> None:
        super().__init__()
        self.embed_dim, self.batch_first = mha.embed_dim, mha.batch_first
        self.num_heads, self.head_dim, self.dropout = num_heads, mha.head_dim, mha.dropout
        self.in_proj_weight = nn.Parameter(in_proj_weight)
        self.in_proj_bias = None if in_proj_bias is None else nn.Parameter(in_proj_bias)
        self.out_proj = nn.Linear(out_weight.shape[1], mha.embed_dim,
                                  bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            self.out_proj.weight.copy_(out_weight)
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, L, _ = query.shape
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q, k, v = (
            F.linear(t, wi, bi).view(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
            for t, wi, bi in zip((query, key, value), w, b, strict=True)
        )  # (B, H, T, D)
        mask = None if attn_mask is None else _additive(attn_mask, q)
        if mask is not None and mask.dim() == 3:  # (B * H, L, S)
            mask = mask.view(B, self.num_heads, *mask.shape[1:])
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, q)[:, None, None, :]  # (B, 1, 1, S)
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, -1))  # (B, L, E)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive(mask: Tensor, like: Tensor) -> Tensor:
    """torch's boolean masks (True: not allowed) or float masks, as an additive float mask."""
    if mask.dtype != torch.bool:
        return mask
    zeros = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
    return zeros.masked_fill(mask, float("-inf"))


def _args(node: fx.Node) -> list[Any]:
    """A node's positional arguments, untyped (fx's ``Argument`` union is too wide to use)."""
    return list(node.args)


def _kwargs(node: fx.Node) -> dict[str, Any]:
    return dict(node.kwargs)


class _Walker:
    """Assigns channel spaces to the values of a traced graph."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = ChannelGraph()
        #: fx node -> (channels, channel dim), or a list of those for a tuple output
        self.values: dict[Any, Any] = {}
        self.mha: dict[str, Chan] = {}
        self.touched: dict[str, nn.Module] = {}

    def ctx(self, node: fx.Node, module: nn.Module, prefix: str = "") -> RuleContext:
        return RuleContext(self.graph, NodeSpec(node.name, node.op), module, 1, prefix)

    def fresh(self, node: fx.Node, size: int, reason: str | None = None) -> Chan:
        ctx = self.ctx(node, self.gm)
        chan = ctx.space(size)
        if reason:
            ctx.freeze(chan, reason)
        return chan

    @staticmethod
    def shape(node: Any) -> tuple[int, ...] | None:
        meta: Any = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def get(self, node: Any, dim: int) -> Chan | None:
        """The channels of ``node`` along ``dim`` (frozen if it tracks another dim)."""
        value = self.values.get(node) if isinstance(node, fx.Node) else None
        shape = self.shape(node)
        if not isinstance(value, tuple) or shape is None:
            return None
        chan, cdim = value
        if cdim % len(shape) == dim % len(shape):
            return chan
        self.ctx(node, self.gm).freeze(chan, f"{node.name} is used along another dimension")
        return self.fresh(node, shape[dim], f"dimension {dim} of {node.name}")

    def opaque(self, node: fx.Node) -> None:
        """Keep every channel ``node`` reads; its output channels are kept too."""
        for arg in node.all_input_nodes:
            value = self.values.get(arg)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, tuple):
                    self.ctx(node, self.gm).freeze(v[0], f"read by {node.op} {node.target!r}")
        shape = self.shape(node)
        if shape:
            cdim = 1 if len(shape) > 1 else 0
            self.values[node] = (self.fresh(node, shape[cdim], f"output of {node.target!r}"), cdim)

    def walk(self) -> None:
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"_{node.op}", None)
            handler(node) if handler else None

    def _placeholder(self, node: fx.Node) -> None:
        shape = self.shape(node)
        if shape:
            cdim = len(shape) - 1 if len(shape) == 3 else min(1, len(shape) - 1)
            self.values[node] = (self.fresh(node, shape[cdim], "a network input"), cdim)

    def _output(self, node: fx.Node) -> None:
        self.opaque(node)

    def _get_attr(self, node: fx.Node) -> None:
        self.opaque(node)

    def _call_module(self, node: fx.Node) -> None:
        path = str(node.target)
        module = self.gm.get_submodule(path)
        x = _args(node)[0] if _args(node) else None
        if isinstance(module, _PASS_MODULES) and isinstance(self.values.get(x), tuple):
            self.values[node] = self.values[x]  # type: ignore[assignment]
            return
        ctx = self.ctx(node, module, f"{path}.")
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            inp = self.get(x, 1)
            if inp is not None:
                self.values[node] = (_conv(ctx, inp, module, "", None), 1)
                self.touched[path] = module
                return
        if isinstance(module, nn.Linear):
            inp = self.get(x, -1)
            if inp is not None:
                out = ctx.space(module.out_features)
                ctx.label_module("", out, inp)
                self.values[node] = (out, len(self.shape(node) or (0,)) - 1)
                self.touched[path] = module
                return
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            inp = self.get(x, 1)
            if inp is not None:
                ctx.label_module("", inp, None)
                self.values[node] = (inp, 1)
                self.touched[path] = module
                return
        if isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim:
            self._mha(node, module, ctx)
            return
        self.opaque(node)

    def _mha(self, node: fx.Node, mha: nn.MultiheadAttention, ctx: RuleContext) -> None:
        if mha.bias_k is not None or mha.add_zero_attn:
            self.opaque(node)
            return
        heads = ctx.space(mha.num_heads)
        ctx.label("in_proj_weight", Dim(heads * 3, inner=mha.head_dim), None)
        ctx.label("in_proj_bias", Dim(heads * 3, inner=mha.head_dim))
        ctx.label("out_proj.weight", None, Dim(heads, inner=mha.head_dim))
        self.mha[str(node.target)] = heads
        self.opaque(node)
        out = self.fresh(node, mha.embed_dim, "the output of nn.MultiheadAttention")
        self.values[node] = [(out, 2), None]

    def _call_method(self, node: fx.Node) -> None:
        x = _args(node)[0] if _args(node) else None
        if node.target in _PASS_METHODS and isinstance(self.values.get(x), tuple):
            self.values[node] = self.values[x]  # type: ignore[assignment]
        elif not (
            (node.target in _REDUCE_METHODS and self._reduce(node))
            or node.target == "size"
            or self.shape(node) is None
        ):
            self.opaque(node)

    def _call_function(self, node: fx.Node) -> None:
        fn: Any = node.target
        args = _args(node)
        x = args[0] if args else None
        if fn is operator.getitem and isinstance(self.values.get(x), list):
            self.values[node] = self.values[x][args[1]]  # type: ignore[index,assignment]
            if self.values[node] is None:
                self.opaque(node)
            return
        if fn in _PASS_FUNCTIONS and isinstance(self.values.get(x), tuple):
            self.values[node] = self.values[x]  # type: ignore[assignment]
            return
        if fn in _TIE_OPS and self._tie(node):
            return
        if fn is torch.cat and self._cat(node):
            return
        if fn is torch.flatten and self._flatten(node):
            return
        if fn in (torch.mean, torch.sum, torch.amax) and self._reduce(node):
            return
        if self.shape(node) is None and not node.all_input_nodes:
            return
        self.opaque(node)

    def _tie(self, node: fx.Node) -> bool:
        shape = self.shape(node)
        tensors = [a for a in _args(node)[:2] if isinstance(a, fx.Node) and self.shape(a)]
        if shape is None or not tensors:
            return False
        first = self.values.get(tensors[0])
        if not isinstance(first, tuple):
            return False
        first_shape: Any = self.shape(tensors[0])
        cdim = first[1] % len(first_shape) + len(shape) - len(first_shape)
        chans = []
        for t in tensors:
            t_shape: Any = self.shape(t)
            d = cdim - (len(shape) - len(t_shape))
            if d < 0 or t_shape[d] == 1 and shape[cdim] != 1:  # broadcast along channels
                continue
            chan = self.get(t, d)
            if chan is None:
                return False
            chans.append(chan)
        ctx = self.ctx(node, self.gm)
        for c in chans[1:]:
            ctx.tie(chans[0], c)
        self.values[node] = (chans[0], cdim)
        return True

    def _cat(self, node: fx.Node) -> bool:
        parts = _args(node)[0]
        dim = _args(node)[1] if len(_args(node)) > 1 else _kwargs(node).get("dim", 0)
        shape = self.shape(node)
        if shape is None or not isinstance(parts, list | tuple):
            return False
        chans = [self.get(p, dim % len(shape)) for p in parts]
        if any(c is None for c in chans):
            return False
        self.values[node] = (tuple(s for c in chans for s in c), dim % len(shape))  # type: ignore[union-attr]
        return True

    def _reduce(self, node: fx.Node) -> bool:
        """A reduction over dimensions other than the channel dim keeps the channels."""
        x = _args(node)[0]
        value, shape = self.values.get(x), self.shape(x)
        dims = _args(node)[1] if len(_args(node)) > 1 else _kwargs(node).get("dim")
        if not isinstance(value, tuple) or shape is None or dims is None:
            return False
        dims = [d % len(shape) for d in (dims if isinstance(dims, list | tuple) else [dims])]
        cdim = value[1] % len(shape)
        if cdim in dims:
            return False
        keepdim = _kwargs(node).get("keepdim", _args(node)[2] if len(_args(node)) > 2 else False)
        self.values[node] = (value[0], cdim if keepdim else cdim - sum(d < cdim for d in dims))
        return True

    def _flatten(self, node: fx.Node) -> bool:
        x = _args(node)[0]
        start = _args(node)[1] if len(_args(node)) > 1 else _kwargs(node).get("start_dim", 0)
        value, shape = self.values.get(x), self.shape(x)
        if not isinstance(value, tuple) or shape is None or value[1] != start:
            return False
        if any(s != 1 for s in shape[start + 1:]):
            return False
        self.values[node] = value
        return True


def _trace(model: nn.Module, inputs: tuple[Any, ...]) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(model)
        ShapeProp(gm).propagate(*inputs)
    except Exception as exc:  # tracing failures are the user's model, not a bug here
        raise PruneError(
            f"{type(model).__name__}: torch.fx cannot trace it for structured pruning "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return gm


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _resize(module: nn.Module) -> None:
    """Make a sliced layer's size attributes match its tensors."""
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.out_channels = module.weight.shape[0]
        if depthwise:
            module.groups = module.out_channels
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = module.weight.shape[0] if module.weight is not None else len(
            module.running_mean)


def plan_module(
    model: nn.Module, amount: float, inputs: Any, *, criterion: str = "l1", round_to: int = 1
) -> Any:
    """Plan structured pruning of ``amount`` of every prunable group of a plain module
    (``inputs``: example inputs for shape propagation). A :class:`~.structured.PrunePlan`
    with ``spec=None``, whose ``modules`` are the traced layers to resize and whose
    ``heads`` maps each ``nn.MultiheadAttention`` to the heads it keeps."""
    from .structured import PrunePlan, _dim_indices, _planned_keep, _select

    amount = check_amount(amount)
    round_to = check_round_to(round_to)
    if inputs is None:
        raise PruneError(f"{type(model).__name__}: pass example_inputs= to trace it")
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    walker = _Walker(_trace(model, inputs))
    walker.walk()
    graph = walker.graph
    groups = graph.groups()
    if not any(not graph.frozen(r) for r in groups):
        raise PruneError(f"{type(model).__name__}: no prunable dimension was found")
    scores = group_scores(model, graph, criterion)
    kept = {}
    for root in groups:
        size = graph.spaces[root].size
        n = _planned_keep(graph, root, amount, round_to)
        kept[root] = _select(scores.get(root, torch.zeros(size)), n, graph.spaces[root].groups)
    indices = {
        key: {dim: _dim_indices(graph, d, kept) for dim, d in dims.items()}
        for key, dims in graph.labels.items()
    }
    plan = PrunePlan(None, indices)
    plan.modules = list(walker.touched)
    plan.heads = {path: len(kept[graph.find(h[0])]) for path, h in walker.mha.items()}
    return plan


def prune_module(
    model: nn.Module, amount: float, inputs: Any, *, criterion: str = "l1", round_to: int = 1
) -> nn.Module:
    """Structured pruning of a plain module (modified in place: pass a copy); see
    :func:`plan_module`."""
    plan = plan_module(model, amount, inputs, criterion=criterion, round_to=round_to)
    tensors: dict[str, Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    with torch.no_grad():
        for key, dims in plan.indices.items():
            t = tensors[key].detach()
            for dim, idx in dims.items():
                t = t.index_select(dim, idx.to(t.device))
            owner, _, name = key.rpartition(".")
            holder = model.get_submodule(owner)
            if isinstance(getattr(holder, name), nn.Parameter):
                setattr(holder, name, nn.Parameter(t.clone(), tensors[key].requires_grad))
            else:
                setattr(holder, name, t.clone())
    for path in plan.modules:
        _resize(model.get_submodule(path))
    for path, n_heads in plan.heads.items():
        mha: Any = model.get_submodule(path)
        if n_heads != mha.num_heads:
            bias = None if mha.in_proj_bias is None else mha.in_proj_bias.detach()
            new = PrunedMultiheadAttention(
                mha, mha.in_proj_weight.detach(), bias, mha.out_proj.weight.detach(), n_heads
            )
            _set(model, path, new.train(mha.training))
    return model

"""Attention over edges: GAT (Veličković et al. 2018), GATv2 (Brody et al. 2022), the graph
transformer layer (Shi et al. 2021) and a pre-norm graph-transformer block.

Every layer computes per-edge logits ``s_ji``, a softmax over the edges entering each target
``i`` (plus its self-loop where the layer adds one) and ``out_i = Σ_j α_ji · v_j``; outputs
and gradients match PyTorch Geometric's ``GATConv``, ``GATv2Conv`` and ``TransformerConv``.
Self-loops are not concatenated to ``edge_index``: each node's loop is a per-node term of the
softmax, and loops already in ``edge_index`` are masked out (PyG removes them first).

Eager CPU float calls run on an :class:`EdgeLayout` whose edges are sorted by target:
segment sums/maxima are ``segment_reduce`` over CSR offsets and gathers have a sorted
(``segment_reduce``) backward instead of ``index_add`` — several times faster on CPU. Under
``torch.compile``, autocast, on ``meta``/other devices and under dispatch modes
(``count_flops``) the same code runs on ``index_select``/``scatter`` in edge order.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import Example, register_block
from .._factory import (
    LayerType,
    check_choice,
    check_non_negative,
    check_positive_int,
    check_probability,
    example_tensor,
)
from ..basic import Linear
from ..mlp import make_mlp
from ..norm import get_norm_layer
from .checks import GraphInputError
from .conv import example_graph
from .message_passing import resolve_edge_index
from .scatter import CSR, csr_for, scatter, use_index_add

__all__ = [
    "EdgeLayout",
    "GATConv",
    "GATv2Conv",
    "GraphTransformerBlock",
    "TransformerConv",
    "edge_layout",
    "edge_softmax",
]

Device = torch.device | str | None
Dtype = torch.dtype | None
Attention = tuple[Tensor, tuple[Tensor, Tensor]]

_SKIP = {"batch_independence": "message passing couples the nodes (the batch dimension)"}
_FILLS = ("mean", "sum", "max", "min")


def _segment_sum(t: Tensor, offsets: Tensor) -> Tensor:
    return torch.segment_reduce(t, "sum", offsets=offsets, axis=0, unsafe=True)


class _SortedGather(torch.autograd.Function):
    """``t[index]`` whose backward is a segment sum of the gradient sorted by ``index``."""

    @staticmethod
    def forward(
        ctx: Any, t: Tensor, index: Tensor, order: Tensor | None, offsets: Tensor
    ) -> Tensor:
        ctx.order, ctx.offsets = order, offsets
        return t.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        if ctx.order is not None:
            grad = grad.index_select(0, ctx.order)
        return _segment_sum(grad, ctx.offsets), None, None, None


class _HeadCSR:
    """The graph with ``H`` heads as one block-diagonal CSR matrix: row ``i·H + h``, column
    ``j·H + h`` per edge ``j -> i`` (and its transpose), so one sparse kernel serves all heads.
    ``take`` (``take_t``) maps flat ``(E, H)`` values to the matrix's (transpose's) nonzeros."""

    def __init__(self, lay: EdgeLayout, heads: int) -> None:
        n, dev = lay.num_nodes, lay.src.device
        hs = torch.arange(heads, device=dev)
        self.shape = (n * heads, n * heads)
        small = max(n * heads, lay.src.numel() * heads) < 2**31
        self.index_dtype = torch.int32 if small else torch.int64
        self.crow, self.col, place = self._expand(lay.crow, lay.dst, lay.src, heads, hs)
        self.take = torch.empty_like(place).index_copy_(
            0, place, torch.arange(place.numel(), device=dev)
        )
        self.place = place
        src_sorted = lay.src.index_select(0, lay.by_src)
        self.crow_t, self.col_t, place_t = self._expand(
            lay.src_offsets, src_sorted, lay.dst_by_src, heads, hs
        )
        flat = (lay.by_src.unsqueeze(1) * heads + hs).reshape(-1)  # (E·H) flat index, source order
        self.take_t = torch.empty_like(place_t).index_copy_(0, place_t, flat)
        for name in ("crow", "col", "crow_t", "col_t"):
            setattr(self, name, getattr(self, name).to(self.index_dtype))

    @staticmethod
    def _expand(
        crow: Tensor, rows: Tensor, cols: Tensor, heads: int, hs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Expanded ``crow``/``col`` and, per (edge, head) in edge order, its nonzero position."""
        deg = crow[1:] - crow[:-1]
        crow_x = torch.zeros(deg.numel() * heads + 1, dtype=torch.int64, device=crow.device)
        torch.cumsum(deg.repeat_interleave(heads), 0, out=crow_x[1:])
        rank = torch.arange(rows.numel(), device=rows.device) - crow.index_select(0, rows)
        place = (crow_x[:-1].view(-1, heads).index_select(0, rows) + rank.unsqueeze(1)).reshape(-1)
        col = torch.empty_like(place).index_copy_(
            0, place, (cols.unsqueeze(1) * heads + hs).reshape(-1)
        )
        return crow_x, col, place

    def matrix(self, alpha: Tensor, transpose: bool = False) -> Tensor:
        flat = alpha.reshape(-1)
        if transpose:
            return _csr(self.crow_t, self.col_t, flat.index_select(0, self.take_t), self.shape)
        return _csr(self.crow, self.col, flat.index_select(0, self.take), self.shape)


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _SortedAggregate(torch.autograd.Function):
    """``out_i = Σ_{e: dst=i} α_e ⊙ h[src_e]`` as one block-diagonal sparse matmul over heads
    (SpMM forward, SDDMM + transposed SpMM backward): no ``(E, H, C)`` tensor is formed."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, h: Tensor, heads: _HeadCSR) -> Tensor:
        ctx.heads = heads
        ctx.save_for_backward(alpha, h)
        n, nh, c = h.shape
        return torch.sparse.mm(heads.matrix(alpha), h.reshape(n * nh, c)).view(n, nh, c)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        alpha, h = ctx.saved_tensors
        heads: _HeadCSR = ctx.heads
        n, nh, c = h.shape
        grad2 = grad.reshape(n * nh, c).contiguous()
        grad_alpha = grad_h = None
        if ctx.needs_input_grad[0]:  # <grad_i, h_j> at the nonzeros
            sampled = torch.sparse.sampled_addmm(
                heads.matrix(alpha), grad2, h.reshape(n * nh, c).t(), beta=0.0
            )
            grad_alpha = sampled.values().index_select(0, heads.place).view_as(alpha)
        if ctx.needs_input_grad[1]:
            grad_h = torch.sparse.mm(heads.matrix(alpha, transpose=True), grad2).view(n, nh, c)
        return grad_alpha, grad_h, None


class EdgeLayout:
    """The edges of a graph in the order per-edge tensors use, with the segment operations
    of attention: gathers from sources/targets, per-target sums and maxima, aggregation.

    ``sorted=True`` orders edges by target (CSR) and uses ``segment_reduce``; otherwise edges
    keep their order and the operations are ``index_select``/``scatter``.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, *, sorted: bool = False) -> None:
        self.edge_index, self.num_nodes, self.sorted = edge_index, num_nodes, sorted
        self._not_loop: Tensor | None = None
        self._is_loop: Tensor | None = None
        if not sorted:
            self.src, self.dst = edge_index[0], edge_index[1]
            return
        csr: CSR = csr_for(edge_index, num_nodes, num_nodes)
        self.perm, self.crow, self.src = csr.perm, csr.crow, csr.col
        self.dst = torch.repeat_interleave(
            torch.arange(num_nodes, device=edge_index.device), csr.in_degree
        )
        self.by_src = torch.sort(self.src, stable=True).indices  # CSR position, by source
        counts = torch.bincount(self.src, minlength=num_nodes)
        self.src_offsets = torch.zeros(num_nodes + 1, dtype=torch.int64, device=self.src.device)
        torch.cumsum(counts, 0, out=self.src_offsets[1:])
        self.dst_by_src = self.dst.index_select(0, self.by_src)
        self._heads: dict[int, _HeadCSR] = {}

    @property
    def not_loop(self) -> Tensor:
        """``src != dst`` per edge (cached)."""
        if self._not_loop is None:
            self._not_loop = self.src != self.dst
        return self._not_loop

    @property
    def is_loop(self) -> Tensor:
        """``src == dst`` per edge, ``(E, 1)`` (cached)."""
        if self._is_loop is None:
            self._is_loop = (self.src == self.dst).unsqueeze(-1)
        return self._is_loop

    def to_layout(self, t: Tensor) -> Tensor:
        """A per-edge tensor in ``edge_index`` order, in this layout's order."""
        return t.index_select(0, self.perm) if self.sorted else t

    def to_original(self, t: Tensor) -> Tensor:
        """A per-edge tensor in this layout's order, back in ``edge_index`` order."""
        return torch.empty_like(t).index_copy_(0, self.perm, t) if self.sorted else t

    def gather_src(self, t: Tensor) -> Tensor:
        """``t[src_e]`` per edge."""
        if self.sorted:
            return _SortedGather.apply(t, self.src, self.by_src, self.src_offsets)
        return t.index_select(0, self.src)

    def gather_dst(self, t: Tensor) -> Tensor:
        """``t[dst_e]`` per edge."""
        if self.sorted:
            return _SortedGather.apply(t, self.dst, None, self.crow)
        return t.index_select(0, self.dst)

    def segment_sum(self, t: Tensor) -> Tensor:
        """``Σ_{e: dst_e = i} t_e`` per node (0 without incoming edges)."""
        if self.sorted:
            return _segment_sum(t, self.crow)
        return scatter(t, self.dst, self.num_nodes, "sum")

    def segment_max(self, t: Tensor) -> Tensor:
        """``max_{e: dst_e = i} t_e`` per node, without gradient (``-inf`` or 0 when empty)."""
        t = t.detach()
        if self.sorted:
            return torch.segment_reduce(t, "max", offsets=self.crow, axis=0, unsafe=True)
        return scatter(t, self.dst, self.num_nodes, "max")

    def aggregate(self, alpha: Tensor, h: Tensor) -> Tensor:
        """``Σ_{e: dst_e = i} α_e ⊙ h[src_e]``: ``alpha`` ``(E, H)``, ``h`` ``(N, H, C)``."""
        if self.sorted:
            heads = self._heads.get(alpha.shape[1])
            if heads is None:
                heads = self._heads[alpha.shape[1]] = _HeadCSR(self, alpha.shape[1])
            return _SortedAggregate.apply(alpha, h, heads)
        return self.segment_sum(alpha.unsqueeze(-1) * h.index_select(0, self.src))


_LAYOUTS: weakref.WeakKeyDictionary[CSR, EdgeLayout] = weakref.WeakKeyDictionary()


def edge_layout(edge_index: Tensor, num_nodes: int, like: Tensor) -> EdgeLayout:
    """The :class:`EdgeLayout` for ``edge_index`` and features ``like``: target-sorted for eager
    CPU float32/64 calls with edges (cached with the graph's CSR), else in edge order."""
    if edge_index.shape[1] == 0 or use_index_add(like):
        return EdgeLayout(edge_index, num_nodes)
    csr = csr_for(edge_index, num_nodes, num_nodes)
    layout = _LAYOUTS.get(csr)
    if layout is None:
        layout = _LAYOUTS[csr] = EdgeLayout(edge_index, num_nodes, sorted=True)
    return layout


class _Weights(NamedTuple):
    """Unnormalised softmax terms: ``exp`` per edge ``(E, H)`` and loop ``(N, H)``, and the
    per-target normaliser ``(N, H)`` (``α = p / total[dst]``)."""

    p: Tensor
    p_loop: Tensor | None
    total: Tensor

    def alphas(self, layout: EdgeLayout) -> tuple[Tensor, Tensor | None]:
        alpha = self.p / layout.gather_dst(self.total)
        return alpha, None if self.p_loop is None else self.p_loop / self.total


def _edge_weights(layout: EdgeLayout, logits: Tensor, loop: Tensor | None) -> _Weights:
    m = layout.segment_max(logits)
    if loop is not None:
        m = torch.maximum(m, loop.detach())
    p = (logits - layout.gather_dst(m)).exp()
    total = layout.segment_sum(p)
    p_loop = None
    if loop is not None:
        p_loop = (loop - m).exp()
        total = total + p_loop
    # a node without incoming edges has total 0: clamp (PyG adds 1e-16, which is 0 in float16)
    return _Weights(p, p_loop, total.clamp_min(torch.finfo(total.dtype).tiny))


def edge_softmax(
    layout: EdgeLayout, logits: Tensor, loop: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Softmax of ``logits`` ``(E, H)`` over the edges entering each target, with each node's
    self-loop logit ``loop`` ``(N, H)`` as one more entry; returns ``(α_edges, α_loops)``.

    Stable (the per-target maximum, without gradient, is subtracted); ``-inf`` logits (masked
    edges) get weight 0. As PyG: ``exp(s - max) / Σ exp(s - max)`` (a node without edges: 0).
    """
    return _edge_weights(layout, logits, loop).alphas(layout)


def _attend(
    layout: EdgeLayout, w: _Weights, v: Tensor, dropout: float, edge_values: Tensor | None = None
) -> Tensor:
    """``Σ_j α_ji v_j`` (+ ``Σ_j α_ji e_ji``, + the loop's ``α_ii v_i``) ``(N, H, C)``: the
    unnormalised ``p`` is aggregated and the ``(N, H, C)`` sum divided once by the normaliser
    (one pass fewer over the edges than normalising ``α``; dropout commutes with it)."""
    p, p_loop = w.p, w.p_loop
    if dropout > 0:
        p = F.dropout(p, dropout)
        p_loop = None if p_loop is None else F.dropout(p_loop, dropout)
    out = layout.aggregate(p, v)
    if edge_values is not None:
        out = out + layout.segment_sum(p.unsqueeze(-1) * edge_values)
    if p_loop is not None:
        out = out + p_loop.unsqueeze(-1) * v
    return out / w.total.unsqueeze(-1)


# ------------------------------------------------------------------------------- helpers


def _edge_features(
    edge_attr: Tensor | None, edge_index: Tensor, edge_dim: int | None, x: Tensor
) -> Tensor | None:
    """``edge_attr`` checked against ``edge_index`` and ``edge_dim`` (``(E,)`` becomes
    ``(E, 1)``), on ``x``'s device and in its dtype."""
    num_edges = edge_index.shape[1]
    if edge_attr is None:
        if edge_dim is not None and num_edges:
            raise GraphInputError(
                f"edge_attr: required, the layer was built with edge_dim={edge_dim}"
            )
        return None
    if edge_dim is None:
        raise GraphInputError("edge_attr: given, but the layer was built without edge_dim")
    if not isinstance(edge_attr, Tensor) or not edge_attr.is_floating_point():
        raise GraphInputError(f"edge_attr: expected a floating-point tensor, got {edge_attr!r:.60}")
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    if edge_attr.dim() != 2 or tuple(edge_attr.shape) != (num_edges, edge_dim):
        raise GraphInputError(
            f"edge_attr: expected shape ({num_edges}, {edge_dim}), got {tuple(edge_attr.shape)}"
        )
    return edge_attr.to(device=x.device, dtype=x.dtype)


def _loop_edge_attr(
    layout: EdgeLayout, edge_attr: Tensor, keep: Tensor, fill: float | str
) -> Tensor:
    """The self-loops' edge features ``(N, D)``: ``fill`` or a reduction of each node's incoming
    (non-loop) edge features — PyG's ``add_self_loops(fill_value=...)`` after removing loops."""
    n = layout.num_nodes
    if not isinstance(fill, str):
        return edge_attr.new_full((n, edge_attr.shape[1]), float(fill))
    mask = keep.unsqueeze(-1)
    if fill in ("sum", "mean"):
        total = layout.segment_sum(edge_attr * mask)
        if fill == "sum":
            return total
        count = layout.segment_sum(mask.to(edge_attr.dtype)).clamp(min=1)
        return total / count
    sign = 1.0 if fill == "max" else -1.0
    found = layout.segment_sum(mask.to(edge_attr.dtype)) > 0
    best = _masked_max(layout, sign * edge_attr, keep)
    return torch.where(found, sign * best, 0.0)


def _masked_max(layout: EdgeLayout, t: Tensor, keep: Tensor) -> Tensor:
    """Per-target maximum of ``t`` over kept edges, with its gradient (one winner per entry)."""
    masked = t.masked_fill(~keep.unsqueeze(-1), float("-inf"))
    m = layout.segment_max(masked)
    m = torch.where(torch.isfinite(m), m, 0.0)
    hit = (masked == layout.gather_dst(m)) & keep.unsqueeze(-1)
    first = layout.segment_sum(hit.to(t.dtype))  # ties: average the winners
    return layout.segment_sum(torch.where(hit, t, 0.0)) / first.clamp(min=1)


def _heads_out(out: Tensor, concat: bool) -> Tensor:
    """``(N, H, C)`` -> ``(N, H·C)`` (concatenated heads) or ``(N, C)`` (their mean)."""
    return out.flatten(1) if concat else out.mean(dim=1)


def _check_common(in_channels: int, out_channels: int, num_heads: int, dropout: float) -> None:
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    check_positive_int("num_heads", num_heads)
    check_probability("dropout", dropout)


def _check_fill(fill_value: Any) -> None:
    if isinstance(fill_value, str):
        check_choice("fill_value", fill_value, _FILLS)
    elif isinstance(fill_value, bool) or not isinstance(fill_value, (int, float)):
        raise GraphInputError(f"fill_value={fill_value!r} must be a number or one of {_FILLS}")


def _glorot(t: Tensor) -> None:
    """PyG's ``glorot``: uniform in ``±sqrt(6 / (fan_in + fan_out))`` of the last two dims."""
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    nn.init.uniform_(t, -bound, bound)


def _parameter(*shape: int, device: Device, dtype: Dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype))


def _attention_examples(
    extra_edge: dict[str, Any],
    no_edges_skip: str = "without edges the softmax over each node's self-loop is constant 1",
) -> list[Example]:
    ei = example_graph()
    kw = {"in_channels": 8, "out_channels": 4, "num_heads": 2}
    x = (example_tensor(6, 8),)
    fk = {"edge_index": ei}
    edge = {"edge_index": ei, "edge_attr": example_tensor(ei.shape[1], 3, seed=1)}
    return [
        Example(kw, x, _SKIP, fk, "concat"),
        Example({**kw, "concat": False, **extra_edge, "edge_dim": 3}, x, _SKIP, edge, "edges_mean"),
        Example({**kw, "num_heads": 1}, x, {**_SKIP, "gradients": no_edges_skip}, {}, "no_edges"),
    ]


class _EdgeAttention(nn.Module):
    """Shared argument handling and the loop-aware softmax of GAT and GATv2."""

    def __init__(
        self, in_channels: int, out_channels: int, num_heads: int, concat: bool,
        negative_slope: float, dropout: float, add_self_loops: bool, edge_dim: int | None,
        fill_value: float | str,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_common(in_channels, out_channels, num_heads, dropout)
        check_non_negative("negative_slope", negative_slope)
        if edge_dim is not None:
            check_positive_int("edge_dim", edge_dim)
        _check_fill(fill_value)
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.add_self_loops, self.edge_dim, self.fill_value = add_self_loops, edge_dim, fill_value

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, num_heads={self.num_heads}, "
            f"concat={self.concat}, add_self_loops={self.add_self_loops}, edge_dim={self.edge_dim}"
        )

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]  # type: ignore[attr-defined]

    def _finish(
        self, layout: EdgeLayout, logits: Tensor, loop: Tensor | None, keep: Tensor | None,
        h: Tensor, bias: Tensor | None, return_attention_weights: bool,
    ) -> Tensor | Attention:  # fmt: skip
        """Mask existing loops, softmax, dropout, aggregate ``h`` ``(N, H, C)``, combine heads."""
        if keep is not None:
            logits = logits.masked_fill(layout.is_loop, float("-inf"))
        w = _edge_weights(layout, logits, loop)
        out = _attend(layout, w, h, self.dropout if self.training else 0.0)
        out = _heads_out(out, self.concat)
        if bias is not None:
            out = out + bias
        if not return_attention_weights:
            return out
        return out, _attention_weights(layout, *w.alphas(layout), keep)


def _attention_weights(
    layout: EdgeLayout, alpha: Tensor, alpha_loop: Tensor | None, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """PyG's ``(edge_index, α)``: with self-loops, the non-loop edges in order, then one loop
    per node."""
    edge_index, alpha = layout.edge_index, layout.to_original(alpha)
    if alpha_loop is None or keep is None:
        return edge_index, alpha
    keep = layout.to_original(keep)
    loops = torch.arange(layout.num_nodes, device=edge_index.device).expand(2, -1)
    return torch.cat([edge_index[:, keep], loops], 1), torch.cat([alpha[keep], alpha_loop])


def _loop_mask(layout: EdgeLayout, add_self_loops: bool) -> Tensor | None:
    return layout.not_loop if add_self_loops else None


@register_block("gat_conv", kind="graph_conv")
class GATConv(_EdgeAttention):
    """Graph attention (Veličković et al. 2018), as PyG's ``GATConv``:

    ``s_ji = LeakyReLU(a_srcᵀ W x_j + a_dstᵀ W x_i + a_edgeᵀ W_e e_ji)`` per head,
    ``α_ji = softmax_j(s_ji)`` over the edges entering ``i`` (and its self-loop when
    ``add_self_loops``; loops in ``edge_index`` are replaced by it, their edge features by
    ``fill_value``), ``x'_i = ‖_h Σ_j α_ji W x_j`` (``concat``) or the mean over heads, ``+ b``.
    ``dropout`` drops attention weights (edges) in training. Parameter names and shapes are
    PyG's (``lin``, ``att_src``, ``att_dst``, ``lin_edge``, ``att_edge``, ``bias``).

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``edge_attr`` ``(E, edge_dim)``
        -> ``(N, num_heads · out_channels)`` (``concat``) or ``(N, out_channels)``.
        ``return_attention_weights=True`` also returns ``(edge_index, α)`` with ``α`` ``(E', H)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: float | str = "mean",
        bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, num_heads, concat, negative_slope, dropout,
            add_self_loops, edge_dim, fill_value,
        )  # fmt: skip
        factory = {"device": device, "dtype": dtype}
        hc = num_heads * out_channels
        self.lin = Linear(in_channels, hc, bias=False, **factory)
        self.att_src = _parameter(1, num_heads, out_channels, **factory)
        self.att_dst = _parameter(1, num_heads, out_channels, **factory)
        self.lin_edge = Linear(edge_dim, hc, bias=False, **factory) if edge_dim else None
        self.att_edge = _parameter(1, num_heads, out_channels, **factory) if edge_dim else None
        width = hc if concat else out_channels
        self.bias = _parameter(width, **factory) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.lin.weight, self.att_src, self.att_dst, self.att_edge):
            if p is not None:
                _glorot(p)
        if self.lin_edge is not None:
            _glorot(self.lin_edge.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def examples(cls) -> list[Example]:
        return _attention_examples({"fill_value": "max"})

    def _edge_logits(self, edge_attr: Tensor) -> Tensor:
        """``a_edgeᵀ W_e e`` per head: ``W_e`` folded with ``a_edge`` into ``(H, edge_dim)``."""
        assert self.lin_edge is not None and self.att_edge is not None
        w = self.lin_edge.weight.view(self.num_heads, self.out_channels, -1)
        return F.linear(edge_attr, (w * self.att_edge.view(self.num_heads, -1, 1)).sum(1))

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        *,
        return_attention_weights: bool = False,
    ) -> Tensor | Attention:
        n = x.shape[0]
        edge_index = resolve_edge_index(edge_index, x)
        edge_attr = _edge_features(edge_attr, edge_index, self.edge_dim, x)
        hc, nh = self.num_heads * self.out_channels, self.num_heads
        # one matmul gives W x and both attention terms: a_srcᵀ W x = (W_hᵀ a_src,h)ᵀ x
        w = self.lin.weight.view(nh, self.out_channels, -1)
        w_att = torch.cat([(w * a.view(nh, -1, 1)).sum(1) for a in (self.att_src, self.att_dst)])
        y = F.linear(x, torch.cat([self.lin.weight, w_att]))  # (N, H·C + 2H)
        h = y[:, :hc].view(n, nh, self.out_channels)  # (N, H, C)
        a_src, a_dst = y[:, hc : hc + nh], y[:, hc + nh :]  # (N, H)
        layout = edge_layout(edge_index, n, h)
        logits = layout.gather_src(a_src) + layout.gather_dst(a_dst)  # (E, H)
        keep = _loop_mask(layout, self.add_self_loops)
        loop = a_src + a_dst if self.add_self_loops else None
        if edge_attr is not None:
            edge_attr = layout.to_layout(edge_attr)
            logits = logits + self._edge_logits(edge_attr)
            if loop is not None and keep is not None:
                loop_attr = _loop_edge_attr(layout, edge_attr, keep, self.fill_value)
                loop = loop + self._edge_logits(loop_attr)
        logits = F.leaky_relu(logits, self.negative_slope)
        if loop is not None:
            loop = F.leaky_relu(loop, self.negative_slope)
        return self._finish(layout, logits, loop, keep, h, self.bias, return_attention_weights)


@register_block("gatv2_conv", kind="graph_conv")
class GATv2Conv(_EdgeAttention):
    """Dynamic graph attention, GATv2 (Brody et al. 2022), as PyG's ``GATv2Conv``:

    ``s_ji = aᵀ LeakyReLU(W_l x_j + W_r x_i + W_e e_ji)`` per head (the nonlinearity before
    the attention vector makes the ranking of neighbours depend on the query),
    ``x'_i = ‖_h Σ_j α_ji W_l x_j`` (``concat``) or the mean over heads, ``+ b``. Self-loops,
    ``fill_value`` and ``dropout`` as :class:`GATConv`; ``share_weights`` uses ``W_l`` for
    both. Parameter names are PyG's (``lin_l``, ``lin_r``, ``att``, ``lin_edge``, ``bias``).

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``edge_attr`` ``(E, edge_dim)``
        -> ``(N, num_heads · out_channels)`` (``concat``) or ``(N, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: float | str = "mean",
        bias: bool = True,
        share_weights: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, num_heads, concat, negative_slope, dropout,
            add_self_loops, edge_dim, fill_value,
        )  # fmt: skip
        factory = {"device": device, "dtype": dtype}
        hc = num_heads * out_channels
        self.share_weights = share_weights
        self.lin_l = Linear(in_channels, hc, bias=bias, **factory)
        self.lin_r = self.lin_l if share_weights else Linear(in_channels, hc, bias=bias, **factory)
        self.att = _parameter(1, num_heads, out_channels, **factory)
        self.lin_edge = Linear(edge_dim, hc, bias=False, **factory) if edge_dim else None
        width = hc if concat else out_channels
        self.bias = _parameter(width, **factory) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_l, self.lin_r, self.lin_edge):
            if lin is not None:
                _glorot(lin.weight)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
        _glorot(self.att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def examples(cls) -> list[Example]:
        return [
            *_attention_examples({"fill_value": 0.5}),
            Example(
                {"in_channels": 8, "out_channels": 4, "num_heads": 2, "share_weights": True},
                (example_tensor(6, 8),), _SKIP, {"edge_index": example_graph()}, "shared",
            ),
        ]  # fmt: skip

    def _score(self, z: Tensor) -> Tensor:
        return (F.leaky_relu(z, self.negative_slope) * self.att).sum(-1)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        *,
        return_attention_weights: bool = False,
    ) -> Tensor | Attention:
        n, shape = x.shape[0], (x.shape[0], self.num_heads, self.out_channels)
        edge_index = resolve_edge_index(edge_index, x)
        edge_attr = _edge_features(edge_attr, edge_index, self.edge_dim, x)
        x_l = self.lin_l(x).view(shape)  # (N, H, C)
        x_r = x_l if self.share_weights else self.lin_r(x).view(shape)
        layout = edge_layout(edge_index, n, x_l)
        z = layout.gather_src(x_l) + layout.gather_dst(x_r)  # (E, H, C)
        keep = _loop_mask(layout, self.add_self_loops)
        z_loop = x_l + x_r if self.add_self_loops else None
        if edge_attr is not None:
            assert self.lin_edge is not None
            edge_attr = layout.to_layout(edge_attr)
            z = z + self.lin_edge(edge_attr).view(-1, *shape[1:])
            if z_loop is not None and keep is not None:
                loop_attr = _loop_edge_attr(layout, edge_attr, keep, self.fill_value)
                z_loop = z_loop + self.lin_edge(loop_attr).view(shape)
        loop = None if z_loop is None else self._score(z_loop)
        return self._finish(
            layout, self._score(z), loop, keep, x_l, self.bias, return_attention_weights
        )


@register_block("graph_transformer_conv", kind="graph_conv")
class TransformerConv(nn.Module):
    """Graph transformer layer (Shi et al. 2021, "Masked Label Prediction"), as PyG's
    ``TransformerConv``: dot-product attention restricted to the edges,

    ``α_ji = softmax_j(q_iᵀ (k_j + W_e e_ji) / √C)``, ``m_i = Σ_j α_ji (v_j + W_e e_ji)``
    per head (concatenated, or averaged when ``concat=False``), then with ``root_weight`` the skip
    ``r_i = W_s x_i``: ``m_i + r_i``, or with ``beta`` the gate
    ``β = σ(w_βᵀ [m_i, r_i, m_i - r_i])``, ``β r_i + (1 - β) m_i``. No self-loops are added.
    ``dropout`` drops attention weights in training. Parameter names are PyG's.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``edge_attr`` ``(E, edge_dim)``
        -> ``(N, num_heads · out_channels)`` (``concat``) or ``(N, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        _check_common(in_channels, out_channels, num_heads, dropout)
        if edge_dim is not None:
            check_positive_int("edge_dim", edge_dim)
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.concat, self.beta, self.dropout = concat, beta and root_weight, dropout
        self.edge_dim, self.root_weight = edge_dim, root_weight
        factory = {"device": device, "dtype": dtype}
        hc = num_heads * out_channels
        width = hc if concat else out_channels
        self.lin_key = Linear(in_channels, hc, bias=bias, **factory)
        self.lin_query = Linear(in_channels, hc, bias=bias, **factory)
        self.lin_value = Linear(in_channels, hc, bias=bias, **factory)
        self.lin_edge = Linear(edge_dim, hc, bias=False, **factory) if edge_dim else None
        self.lin_skip = Linear(in_channels, width, bias=bias, **factory) if root_weight else None
        self.lin_beta = Linear(3 * width, 1, bias=False, **factory) if self.beta else None

    def reset_parameters(self) -> None:
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip,
                    self.lin_beta):  # fmt: skip
            if lin is not None:
                lin.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, num_heads={self.num_heads}, "
            f"concat={self.concat}, beta={self.beta}, edge_dim={self.edge_dim}"
        )

    @classmethod
    def examples(cls) -> list[Example]:
        unused = "without edges keys, queries and values are unused"
        return [*_attention_examples({"beta": True}, unused),
                Example({"in_channels": 8, "out_channels": 4, "root_weight": False},
                        (example_tensor(6, 8),), _SKIP, {"edge_index": example_graph()},
                        "no_root")]  # fmt: skip

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        *,
        return_attention_weights: bool = False,
    ) -> Tensor | Attention:
        n, shape = x.shape[0], (x.shape[0], self.num_heads, self.out_channels)
        edge_index = resolve_edge_index(edge_index, x)
        edge_attr = _edge_features(edge_attr, edge_index, self.edge_dim, x)
        q, k, v = (lin(x).view(shape) for lin in (self.lin_query, self.lin_key, self.lin_value))
        layout = edge_layout(edge_index, n, q)
        k_j = layout.gather_src(k)  # (E, H, C)
        e = None
        if edge_attr is not None:
            assert self.lin_edge is not None
            e = self.lin_edge(layout.to_layout(edge_attr)).view(-1, *shape[1:])
            k_j = k_j + e
        logits = (layout.gather_dst(q) * k_j).sum(-1) / math.sqrt(self.out_channels)
        w = _edge_weights(layout, logits, None)
        out = _heads_out(
            _attend(layout, w, v, self.dropout if self.training else 0.0, e), self.concat
        )
        if self.lin_skip is not None:
            r = self.lin_skip(x)
            if self.lin_beta is not None:
                b = self.lin_beta(torch.cat([out, r, out - r], dim=-1)).sigmoid()
                out = b * r + (1 - b) * out
            else:
                out = out + r
        if not return_attention_weights:
            return out
        return out, (edge_index, layout.to_original(w.alphas(layout)[0]))


@register_block("graph_transformer_block", kind="graph_conv")
class GraphTransformerBlock(nn.Module):
    """Pre-norm graph-transformer block (Dwivedi & Bresson 2021; GraphGPS's attention half):

    ``x = x + drop(W_o · TransformerConv(norm1(x)))``, ``x = x + mlp(norm2(x))``, with
    attention restricted to the edges (``num_heads`` heads of ``dim // num_heads``, edge
    features via ``edge_dim``, no root weight). Positional encodings come in through ``x``:
    put a ``laplacian_pe``/``random_walk_pe`` block (``mode="concat"`` or ``"project"``) first.

    Shapes:
        ``x`` ``(N, dim)``, ``edge_index`` ``(2, E)``, ``edge_attr`` ``(E, edge_dim)``
        -> ``(N, dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        edge_dim: int | None = None,
        norm_layer: LayerType = "layernorm",
        act_layer: LayerType = "gelu",
        mlp_layer: LayerType = "mlp",
        attn_drop: float = 0.0,
        drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise GraphInputError(f"num_heads={num_heads} does not divide dim={dim}")
        check_probability("drop", drop)
        factory = {"device": device, "dtype": dtype}
        norm = get_norm_layer(norm_layer)
        self.norm1 = norm(dim, **factory)
        self.attn = TransformerConv(
            dim, dim // num_heads, num_heads=num_heads, dropout=attn_drop, edge_dim=edge_dim,
            root_weight=False, **factory,
        )  # fmt: skip
        self.proj = Linear(dim, dim, **factory)
        self.drop = nn.Dropout(drop)
        self.norm2 = norm(dim, **factory)
        self.mlp = make_mlp(
            mlp_layer, dim, mlp_ratio=mlp_ratio, act_layer=act_layer, drop=drop, **factory
        )

    def reset_parameters(self) -> None:
        for m in (self.norm1, self.attn, self.proj, self.norm2, self.mlp):
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()

    @classmethod
    def examples(cls) -> list[Example]:
        ei = example_graph()
        x = (example_tensor(6, 8),)
        edges = {"edge_index": ei, "edge_attr": example_tensor(ei.shape[1], 3, seed=1)}
        return [
            Example({"dim": 8, "num_heads": 2}, x, _SKIP, {"edge_index": ei}, "plain"),
            Example({"dim": 8, "num_heads": 2, "edge_dim": 3}, x, _SKIP, edges, "edges"),
        ]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> Tensor:
        x = x + self.drop(self.proj(self.attn(self.norm1(x), edge_index, edge_attr)))
        return x + self.mlp(self.norm2(x))

"""Graph convolutions: GCN (Kipf & Welling), GraphSAGE (Hamilton et al.), GIN and GINE
(Xu et al.; Hu et al.), numerically matching PyTorch Geometric's layers.

``forward(x, edge_index=None, ...)``: ``x`` ``(N, in_channels)``; ``edge_index`` ``(2, E)``
(row 0 sources, row 1 targets); ``None`` is the graph without edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import Example, register_block
from .._factory import LayerType, check_choice, check_positive_int, example_tensor
from ..basic import Linear
from ..mlp import make_mlp
from .checks import GraphInputError
from .message_passing import MessagePassing, resolve_edge_index
from .scatter import CSR, scatter, spmm

__all__ = ["GCNConv", "GINConv", "GINEConv", "SAGEConv", "example_graph", "gcn_norm"]

Device = torch.device | str | None
Dtype = torch.dtype | None

_SKIP = {"batch_independence": "message passing couples the nodes (the batch dimension)"}


def example_graph(num_nodes: int = 6, seed: int = 0) -> Tensor:
    """A small seeded ``edge_index`` for Examples: multi-edges, a self-loop, an isolated node."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes - 1, (2, 2 * num_nodes), generator=g)
    return torch.cat([ei, ei[:, :2], torch.tensor([[0], [0]])], dim=1)


def _check_edge_weight(edge_weight: Tensor | None, edge_index: Tensor) -> None:
    if edge_weight is not None and tuple(edge_weight.shape) != (edge_index.shape[1],):
        raise GraphInputError(
            f"edge_weight: expected shape ({edge_index.shape[1]},), got {tuple(edge_weight.shape)}"
        )


def _inv_sqrt(deg: Tensor) -> Tensor:
    """``deg^{-1/2}``, 0 where ``deg == 0`` (with a finite gradient there)."""
    zero = deg == 0
    return deg.masked_fill(zero, 1.0).rsqrt().masked_fill(zero, 0.0)


def gcn_norm(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    num_nodes: int,
    *,
    add_self_loops: bool = True,
    improved: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Symmetric normalisation ``D^{-1/2} (A + fill·I) D^{-1/2}`` without copying ``edge_index``.

    Returns ``(w, loop)``: per-edge weights (edges ``i -> i`` get 0: their weight moves into
    the loop term, as PyG's ``add_remaining_self_loops``) and the self-loop weight per node
    (``None`` without self-loops): ``fill`` (2 when ``improved``, else 1) for nodes without
    a loop, else the sum of their loops' weights (PyG keeps an arbitrary one of several).
    No data-dependent shapes: it runs on ``meta`` and under ``torch.compile``.
    """
    src, dst = edge_index[0], edge_index[1]
    w = edge_weight
    if w is None:
        w = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    loop = None
    if add_self_loops:
        is_loop = src == dst
        has_loop = scatter(is_loop.to(w.dtype), src, num_nodes) > 0
        given = scatter(w.masked_fill(~is_loop, 0.0), src, num_nodes)
        loop = torch.where(has_loop, given, 2.0 if improved else 1.0)
        w = w.masked_fill(is_loop, 0.0)
    deg = scatter(w, dst, num_nodes)
    if loop is not None:
        deg = deg + loop
    dinv = _inv_sqrt(deg)
    w = dinv.index_select(0, src) * w * dinv.index_select(0, dst)
    return w, None if loop is None else dinv * loop * dinv


@register_block("gcn_conv", kind="graph_conv")
class GCNConv(MessagePassing):
    """Graph convolution (Kipf & Welling 2017): ``X' = D̂^{-1/2} Â D̂^{-1/2} X W + b``.

    ``Â = A + I`` (``A + 2I`` when ``improved``); existing self-loops keep their weight.
    ``normalize=False`` uses ``A`` as given (no loops added). ``cached=True`` stores the
    normalised adjacency and its sparse structure on the first call: only for a fixed
    graph (transductive learning), as in PyG. Aggregation is one sparse matmul; the
    linear map runs first when it shrinks the features.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``edge_weight`` ``(E,)``
        -> ``(N, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        improved: bool = False,
        cached: bool = False,
        add_self_loops: bool = True,
        normalize: bool = True,
        bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__("sum")
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.improved, self.cached = improved, cached
        self.add_self_loops, self.normalize = add_self_loops, normalize
        self.lin = Linear(in_channels, out_channels, bias=False, device=device, dtype=dtype)
        self.bias = (
            nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype)) if bias else None
        )
        self._cache: tuple[Tensor, Tensor | None, CSR | None] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cache = None

    @classmethod
    def examples(cls) -> list[Example]:
        kw = {"in_channels": 8, "out_channels": 4}
        fk = {"edge_index": example_graph()}
        return [
            Example(kw, (example_tensor(6, 8),), skip=_SKIP, forward_kwargs=fk),
            Example({**kw, "normalize": False}, (example_tensor(6, 8),), _SKIP, fk, "unnormalized"),
        ]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def _weights(
        self, edge_index: Tensor, edge_weight: Tensor | None, n: int, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None, CSR | None]:
        if self._cache is not None:
            return self._cache
        if self.normalize:
            w, loop = gcn_norm(
                edge_index, edge_weight, n,
                add_self_loops=self.add_self_loops, improved=self.improved, dtype=dtype,
            )  # fmt: skip
        else:
            w, loop = edge_weight, None
        if not self.cached:
            return w, loop, None
        w = w.detach() if w is not None else w
        loop = loop.detach() if loop is not None else loop
        csr = CSR(edge_index, n) if edge_index.device.type == "cpu" else None
        self._cache = (w, loop, csr)
        return self._cache

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, edge_weight: Tensor | None = None
    ) -> Tensor:
        n = x.shape[0]
        edge_index = resolve_edge_index(edge_index, x)
        _check_edge_weight(edge_weight, edge_index)
        if edge_weight is not None:
            edge_weight = edge_weight.to(device=x.device, dtype=x.dtype)
        w, loop, csr = self._weights(edge_index, edge_weight, n, x.dtype)

        def aggregate(h: Tensor) -> Tensor:
            out = spmm(edge_index, w, h, n, csr=csr)
            return out if loop is None else out + loop.unsqueeze(-1) * h

        if self.out_channels <= self.in_channels:
            out = aggregate(self.lin(x))
        else:
            out = self.lin(aggregate(x))
        return out if self.bias is None else out + self.bias


@register_block("sage_conv", kind="graph_conv")
class SAGEConv(MessagePassing):
    """GraphSAGE (Hamilton et al. 2017): ``x'_i = W_1 x_i + W_2 · AGG_{j→i} x_j``.

    ``aggr`` is ``mean``, ``max``, ``sum`` or ``min``; ``project=True`` first maps
    neighbours through ``relu(W_p x_j + b)``; ``normalize=True`` L2-normalises the output;
    ``root_weight=False`` drops ``W_1 x_i``. Parameter names follow PyG (``lin_l`` for the
    neighbours with the bias, ``lin_r`` for the root).

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)`` -> ``(N, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        aggr: str = "mean",
        normalize: bool = False,
        root_weight: bool = True,
        project: bool = False,
        bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        check_choice("aggr", aggr, ("mean", "max", "sum", "min"))
        super().__init__(aggr)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.normalize, self.root_weight, self.project = normalize, root_weight, project
        factory = {"device": device, "dtype": dtype}
        self.lin = Linear(in_channels, in_channels, **factory) if project else None
        self.lin_l = Linear(in_channels, out_channels, bias=bias, **factory)
        self.lin_r = (
            Linear(in_channels, out_channels, bias=False, **factory) if root_weight else None
        )

    def reset_parameters(self) -> None:
        for lin in (self.lin, self.lin_l, self.lin_r):
            if lin is not None:
                lin.reset_parameters()

    @classmethod
    def examples(cls) -> list[Example]:
        kw = {"in_channels": 8, "out_channels": 4}
        fk = {"edge_index": example_graph()}
        x = (example_tensor(6, 8),)
        return [
            Example(kw, x, skip=_SKIP, forward_kwargs=fk),
            Example({**kw, "aggr": "max", "project": True, "normalize": True}, x, _SKIP, fk, "max"),
        ]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        edge_index = resolve_edge_index(edge_index, x)
        h = x if self.lin is None else F.relu(self.lin(x))
        linear_aggr = self.aggr in ("mean", "sum")
        if linear_aggr and self.out_channels < self.in_channels:  # AGG(h) W = AGG(h W)
            out = self.propagate(edge_index, F.linear(h, self.lin_l.weight), num_nodes=n)
            if self.lin_l.bias is not None:
                out = out + self.lin_l.bias
        else:
            out = self.lin_l(self.propagate(edge_index, h, num_nodes=n))
        if self.lin_r is not None:
            out = out + self.lin_r(x)
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out


class _GINBase(MessagePassing):
    """``x'_i = h_Θ((1 + ε) x_i + Σ_{j→i} m_ji)``; ``h_Θ`` is an MLP (or ``mlp_module``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None,
        *,
        hidden_channels: int | None,
        mlp_layer: LayerType,
        act_layer: LayerType,
        mlp_module: nn.Module | None,
        eps: float,
        train_eps: bool,
        device: Device,
        dtype: Dtype,
    ) -> None:
        super().__init__("sum")
        check_positive_int("in_channels", in_channels)
        out_channels = out_channels or in_channels
        check_positive_int("out_channels", out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        if mlp_module is None:
            hidden = hidden_channels or out_channels
            mlp_module = make_mlp(
                mlp_layer, in_channels, hidden_dim=hidden, out_dim=out_channels,
                act_layer=act_layer, device=device, dtype=dtype,
            )  # fmt: skip
        self.nn = mlp_module
        self.initial_eps = float(eps)
        eps_t = torch.empty(1, device=device, dtype=dtype)
        if train_eps:
            self.eps = nn.Parameter(eps_t)
        else:
            self.register_buffer("eps", eps_t)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset = getattr(self.nn, "reset_parameters", None)
        if callable(reset):
            reset()
        with torch.no_grad():
            self.eps.fill_(self.initial_eps)

    def _combine(self, aggregated: Tensor, x: Tensor) -> Tensor:
        return self.nn(aggregated + (1 + self.eps) * x)


def _gin_examples(extra: dict, fk: dict) -> list[Example]:
    kw = {"in_channels": 8, "out_channels": 4, **extra}
    x = (example_tensor(6, 8),)
    return [
        Example(kw, x, skip=_SKIP, forward_kwargs=fk),
        Example({**kw, "train_eps": True, "eps": 0.1}, x, _SKIP, fk, "train_eps"),
    ]


@register_block("gin_conv", kind="graph_conv")
class GINConv(_GINBase):
    """Graph isomorphism network layer (Xu et al. 2019): ``h_Θ((1 + ε) x_i + Σ_{j→i} x_j)``.

    ``h_Θ`` is ``make_mlp(mlp_layer, in_channels, hidden_dim=hidden_channels, out_dim=
    out_channels)`` (a two-layer MLP by default), or the given ``mlp_module``. ``ε`` is a
    learnable parameter when ``train_eps``, else a buffer.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)`` -> ``(N, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        hidden_channels: int | None = None,
        mlp_layer: LayerType = "mlp",
        act_layer: LayerType = "relu",
        mlp_module: nn.Module | None = None,
        eps: float = 0.0,
        train_eps: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, hidden_channels=hidden_channels, mlp_layer=mlp_layer,
            act_layer=act_layer, mlp_module=mlp_module, eps=eps, train_eps=train_eps,
            device=device, dtype=dtype,
        )  # fmt: skip

    @classmethod
    def examples(cls) -> list[Example]:
        return _gin_examples({}, {"edge_index": example_graph()})

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        edge_index = resolve_edge_index(edge_index, x)
        return self._combine(spmm(edge_index, None, x, x.shape[0]), x)


@register_block("gine_conv", kind="graph_conv")
class GINEConv(_GINBase):
    """GIN with edge features (Hu et al. 2020):
    ``h_Θ((1 + ε) x_i + Σ_{j→i} relu(x_j + W_e e_ji + b_e))``.

    ``edge_dim`` sets the width of ``edge_attr`` (projected to ``in_channels``); ``None``
    means ``edge_attr`` already has ``in_channels`` features. Edges need ``edge_attr``.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)``, ``edge_attr``
        ``(E, edge_dim)`` -> ``(N, out_channels)``.
    """

    transforms_message = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        edge_dim: int | None = None,
        hidden_channels: int | None = None,
        mlp_layer: LayerType = "mlp",
        act_layer: LayerType = "relu",
        mlp_module: nn.Module | None = None,
        eps: float = 0.0,
        train_eps: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        if edge_dim is not None:
            check_positive_int("edge_dim", edge_dim)
        self.edge_dim = edge_dim
        super().__init__(
            in_channels, out_channels, hidden_channels=hidden_channels, mlp_layer=mlp_layer,
            act_layer=act_layer, mlp_module=mlp_module, eps=eps, train_eps=train_eps,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.lin = (
            None if edge_dim is None else Linear(edge_dim, in_channels, device=device, dtype=dtype)
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "lin", None) is not None:
            self.lin.reset_parameters()

    @classmethod
    def examples(cls) -> list[Example]:
        ei = example_graph()
        attr = example_tensor(ei.shape[1], 3, seed=1)
        return _gin_examples({"edge_dim": 3}, {"edge_index": ei, "edge_attr": attr})

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def message(self, x_j: Tensor, x_i: Tensor | None, edge_attr: Tensor | None) -> Tensor:
        assert edge_attr is not None  # checked in forward
        e = edge_attr if self.lin is None else self.lin(edge_attr)
        return F.relu(x_j + e)

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> Tensor:
        edge_index = resolve_edge_index(edge_index, x)
        if edge_attr is None:
            if edge_index.shape[1]:
                raise GraphInputError("edge_attr: gine_conv needs edge features for its edges")
            edge_attr = x.new_zeros((0, self.edge_dim or self.in_channels))
        edge_attr = edge_attr.to(device=x.device, dtype=x.dtype)
        width = self.edge_dim or self.in_channels
        if edge_attr.dim() != 2 or edge_attr.shape[1] != width:
            raise GraphInputError(
                f"edge_attr: expected shape (E, {width}), got {tuple(edge_attr.shape)}"
            )
        aggregated = self.propagate(edge_index, x, edge_attr=edge_attr, num_nodes=x.shape[0])
        return self._combine(aggregated, x)

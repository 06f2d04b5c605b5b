"""Graph readout and pooling: global sum/mean/max, gated attention readout (Li et al.
2016), top-k pooling (Gao & Ji 2019) and self-attention graph pooling (Lee et al. 2019).

``batch`` ``(N,)`` holds each node's graph id (sorted); ``None`` means one graph.
``num_graphs`` defaults to ``batch.max() + 1`` (pass it to avoid a device sync, and on
``meta``). Readouts give ``(num_graphs, F)``; graphs without nodes read out as 0.
Top-k and SAG pooling change the graph, so they return a :class:`PoolResult` (new ``x``,
``edge_index``, ``edge_attr``, ``batch``, ``perm``, ``score``); a spec node using the block
gets the whole tuple, so inside specs use them only as the last graph-level step. How many
nodes they keep is read from tensor values, so they declare ``data_dependent_control_flow``
(:data:`DATA_DEPENDENT_SHAPE`): ``torch.compile`` breaks the graph there and
``torch.export`` refuses them, as for the adaptive ODE solvers.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...registry import Example, register_block
from .._factory import check_choice, check_positive_int, example_tensor
from ..basic import Linear
from .checks import GraphInputError, check_batch, skip_value_checks
from .conv import GCNConv, example_graph
from .message_passing import resolve_edge_index
from .scatter import degree, scatter, segment_softmax

__all__ = [
    "DATA_DEPENDENT_SHAPE",
    "AttentionReadout",
    "GraphPool",
    "PoolResult",
    "SAGPooling",
    "TopKPooling",
    "filter_adj",
    "global_pool",
    "resolve_batch",
    "topk",
]

Device = torch.device | str | None
Dtype = torch.dtype | None

_SKIP = {
    "batch_independence": "graph pooling couples the nodes of a graph",
    "output_shape": "a readout maps N nodes to num_graphs rows",
}
_TOPK_SKIP = {
    "batch_independence": "graph pooling couples the nodes of a graph",
    "output_shape": "pooling keeps ceil(ratio * n) nodes per graph",
    "meta": "the number of kept nodes depends on the scores (data-dependent shape)",
}


#: Why top-k / SAG pooling cannot be one graph (read by optimize.compile and optimize.export).
DATA_DEPENDENT_SHAPE = (
    "top-k pooling keeps a number of nodes per graph read from tensor values (the graph sizes "
    "in batch; the scores with min_score): torch.compile breaks the graph there (.item(), "
    "nonzero) and torch.export refuses"
)


def resolve_batch(
    batch: Tensor | None, x: Tensor, num_graphs: int | None = None
) -> tuple[Tensor, int]:
    """``(batch, num_graphs)`` validated; ``batch=None`` puts every node in graph 0."""
    n = x.shape[0]
    if batch is None:
        return torch.zeros(
            n, dtype=torch.long, device=x.device
        ), 1 if num_graphs is None else num_graphs
    check_batch(batch, n)
    batch = batch.to(device=x.device, dtype=torch.long)
    if num_graphs is None:
        if skip_value_checks(batch):
            raise GraphInputError(
                "num_graphs: required with a batch vector on meta/while compiling"
            )
        num_graphs = int(batch.max()) + 1 if n else 0
    elif not skip_value_checks(batch) and n and int(batch[-1]) >= num_graphs:
        raise GraphInputError(f"batch: graph id {int(batch[-1])} >= num_graphs={num_graphs}")
    return batch, num_graphs


def global_pool(
    x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None, reduce: str = "mean"
) -> Tensor:
    """Per-graph ``sum``/``mean``/``max`` of node features: ``(N, *)`` -> ``(num_graphs, *)``."""
    check_choice("reduce", reduce, ("sum", "mean", "max"))
    batch, num_graphs = resolve_batch(batch, x, num_graphs)
    return scatter(x, batch, num_graphs, reduce)


@register_block("graph_pool", kind="graph_pool")
class GraphPool(nn.Module):
    """Global graph readout: per-graph ``sum``, ``mean`` or ``max`` of node features.

    Shapes:
        ``x`` ``(N, F)``, ``batch`` ``(N,)`` -> ``(num_graphs, F)``.
    """

    def __init__(self, *, reduce: str = "mean", device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()
        check_choice("reduce", reduce, ("sum", "mean", "max"))
        self.reduce = reduce

    def reset_parameters(self) -> None:
        """Parameter-free."""

    @classmethod
    def examples(cls) -> list[Example]:
        fk = {"batch": torch.tensor([0, 0, 0, 2, 2, 2]), "num_graphs": 3}
        return [
            Example({"reduce": r}, (example_tensor(6, 4),), _SKIP, fk, r)
            for r in ("sum", "mean", "max")
        ]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    def forward(
        self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
    ) -> Tensor:
        return global_pool(x, batch, num_graphs, self.reduce)


@register_block("attention_readout", kind="graph_pool")
class AttentionReadout(nn.Module):
    """Gated global attention readout (Li et al. 2016, GGNN):
    ``r_g = Σ_{i∈g} softmax_{i∈g}(w·x_i + c) · (W x_i + b)``.

    ``out_channels=None`` keeps the features (no ``W``).

    Shapes:
        ``x`` ``(N, in_channels)``, ``batch`` ``(N,)`` -> ``(num_graphs, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        factory = {"device": device, "dtype": dtype}
        self.gate = Linear(in_channels, 1, **factory)
        self.transform = (
            nn.Identity() if out_channels is None else Linear(in_channels, out_channels, **factory)
        )

    def reset_parameters(self) -> None:
        self.gate.reset_parameters()
        if isinstance(self.transform, Linear):
            self.transform.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        fk = {"batch": torch.tensor([0, 0, 1, 1, 1, 3]), "num_graphs": 4}
        return Example({"in_channels": 4, "out_channels": 3}, (example_tensor(6, 4),), _SKIP, fk)

    def forward(
        self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
    ) -> Tensor:
        batch, num_graphs = resolve_batch(batch, x, num_graphs)
        alpha = segment_softmax(self.gate(x), batch, num_graphs)  # (N, 1)
        return scatter(alpha * self.transform(x), batch, num_graphs, "sum")


class PoolResult(NamedTuple):
    """A pooled graph: kept nodes' features and their edges, graph ids and scores."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor | None
    batch: Tensor
    perm: Tensor
    score: Tensor


def _count_graphs(batch: Tensor) -> int:
    """``batch.max() + 1`` (0 without nodes): a device sync, a graph break when compiling."""
    return int(batch.max()) + 1 if batch.numel() else 0


def topk(
    score: Tensor,
    ratio: float,
    batch: Tensor,
    min_score: float | None = None,
    num_graphs: int | None = None,
) -> Tensor:
    """Indices of the kept nodes: per graph the ``ceil(ratio · n_g)`` best (``ratio < 1``) or
    ``min(int(ratio), n_g)`` (``ratio >= 1``) by ``score`` ``(N,)``, grouped by graph, best
    first (PyG's order). With ``min_score``, nodes scoring above ``min(max_g, min_score)``.
    ``num_graphs`` defaults to ``batch.max() + 1``."""
    if num_graphs is None:
        num_graphs = _count_graphs(batch)
    if min_score is not None:
        smax = scatter(score, batch, num_graphs, "max").index_select(0, batch) - 1e-7
        return torch.nonzero(score > smax.clamp(max=min_score)).view(-1)
    n = score.shape[0]
    counts = degree(batch, num_graphs, dtype=torch.long)
    if ratio >= 1:
        k = counts.clamp(max=int(ratio))
    else:
        k = (ratio * counts.to(score.dtype)).ceil().long()
    order = torch.sort(score.detach(), descending=True).indices
    by_graph = torch.sort(batch[order], stable=True)
    ptr = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=score.device) - ptr[by_graph.values]
    return order[by_graph.indices[rank < k[by_graph.values]]]


def filter_adj(
    edge_index: Tensor, edge_attr: Tensor | None, perm: Tensor, num_nodes: int
) -> tuple[Tensor, Tensor | None]:
    """The edges between kept nodes ``perm``, relabelled to positions in ``perm``."""
    new_id = torch.full((num_nodes,), -1, dtype=torch.long, device=perm.device)
    new_id[perm] = torch.arange(perm.shape[0], device=perm.device)
    mapped = new_id[edge_index]
    keep = (mapped >= 0).all(dim=0)
    return mapped[:, keep], None if edge_attr is None else edge_attr[keep]


def _check_ratio(ratio: float) -> None:
    bad = isinstance(ratio, bool) or not isinstance(ratio, (int, float))
    if bad or not (0 < ratio < 1 or (ratio >= 1 and float(ratio).is_integer())):
        raise GraphInputError(f"ratio={ratio!r} must be in (0, 1) or a whole number of nodes >= 1")


class _ScorePool(nn.Module, abc.ABC):
    """Shared forward of top-k style pooling: score, select, gate, filter edges; subclasses
    give the node scores."""

    data_dependent_control_flow = DATA_DEPENDENT_SHAPE

    def __init__(
        self, in_channels: int, ratio: float, min_score: float | None, multiplier: float
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        _check_ratio(ratio)
        self.in_channels = in_channels
        self.ratio, self.min_score, self.multiplier = ratio, min_score, multiplier

    @classmethod
    def example(cls) -> Example:
        inputs, fk = _pool_examples()
        return Example({"in_channels": 4}, inputs, _TOPK_SKIP, fk)

    @abc.abstractmethod
    def _score(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """One raw score per node ``(N,)``."""

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> PoolResult:
        n = x.shape[0]
        edge_index = resolve_edge_index(edge_index, x)
        if batch is None:
            batch, num_graphs = resolve_batch(None, x)
        else:
            check_batch(batch, n)
            batch = batch.to(device=x.device, dtype=torch.long)
            num_graphs = _count_graphs(batch)
        score = self._score(x, edge_index)
        if self.min_score is None:
            score = torch.tanh(score)
        else:
            score = segment_softmax(score, batch, num_graphs)
        perm = topk(score, self.ratio, batch, self.min_score, num_graphs)
        out = x.index_select(0, perm) * score.index_select(0, perm).unsqueeze(-1)
        if self.multiplier != 1:
            out = out * self.multiplier
        ei, ea = filter_adj(edge_index, edge_attr, perm, n)
        return PoolResult(
            out, ei, ea, batch.index_select(0, perm), perm, score.index_select(0, perm)
        )


def _pool_examples() -> tuple[tuple[Tensor, ...], dict]:
    return (example_tensor(6, 4),), {
        "edge_index": example_graph(),
        "batch": torch.tensor([0, 0, 0, 0, 0, 1]),  # no edge joins two graphs
    }


@register_block("topk_pool", kind="graph_pool")
class TopKPooling(_ScorePool):
    """Top-k pooling (Gao & Ji 2019, Graph U-Nets): ``s = tanh(x·p / ‖p‖)``; keep the
    ``ceil(ratio · n_g)`` best nodes of each graph as ``x_i · s_i`` and the edges among them.

    ``min_score`` replaces tanh by a per-graph softmax and keeps nodes above it (Cangea et
    al.). Returns a :class:`PoolResult`.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)`` -> ``x`` ``(N', in_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        ratio: float = 0.5,
        min_score: float | None = None,
        multiplier: float = 1.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(in_channels, ratio, min_score, multiplier)
        self.weight = nn.Parameter(torch.empty(1, in_channels, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)

    def _score(self, x: Tensor, edge_index: Tensor) -> Tensor:
        score = (x * self.weight).sum(dim=-1)
        return score if self.min_score is not None else score / self.weight.norm(p=2, dim=-1)


@register_block("sag_pool", kind="graph_pool")
class SAGPooling(_ScorePool):
    """Self-attention graph pooling (Lee et al. 2019): scores ``s = tanh(GCN(x, A))`` from a
    one-channel :class:`GCNConv`, then top-k selection as :class:`TopKPooling`.

    Shapes:
        ``x`` ``(N, in_channels)``, ``edge_index`` ``(2, E)`` -> ``x`` ``(N', in_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        ratio: float = 0.5,
        min_score: float | None = None,
        multiplier: float = 1.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(in_channels, ratio, min_score, multiplier)
        self.gnn = GCNConv(in_channels, 1, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()

    def _score(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.gnn(x, edge_index).view(-1)

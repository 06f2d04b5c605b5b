"""A small, explicit message-passing base: gather, transform, aggregate.

No signature introspection: :meth:`MessagePassing.propagate` gathers ``x_src[j]`` (and
``x_dst[i]`` when given) per edge ``j -> i``, calls :meth:`MessagePassing.message`,
scales by ``edge_weight`` and aggregates at the targets. Sum/mean aggregation of the
untransformed message runs as one sparse matmul (:func:`~.scatter.spmm`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._factory import check_choice
from .checks import GraphInputError, check_edge_index
from .scatter import scatter, segment_softmax, spmm

__all__ = ["AGGREGATIONS", "MessagePassing", "empty_edge_index", "resolve_edge_index"]

#: Aggregations :class:`MessagePassing` accepts.
AGGREGATIONS = ("sum", "mean", "max", "min", "softmax")


def empty_edge_index(x: Tensor) -> Tensor:
    """A ``(2, 0)`` int64 ``edge_index`` on ``x``'s device (a graph without edges)."""
    return x.new_zeros((2, 0), dtype=torch.long)


def resolve_edge_index(
    edge_index: Tensor | None, x: Tensor, num_nodes: int | None = None
) -> Tensor:
    """``edge_index`` validated against ``num_nodes`` (default ``x.shape[0]``), as int64 on
    ``x``'s device; ``None`` is the empty graph."""
    if edge_index is None:
        return empty_edge_index(x)
    check_edge_index(edge_index, x.shape[0] if num_nodes is None else num_nodes)
    return edge_index.to(device=x.device, dtype=torch.long)


class MessagePassing(nn.Module):
    """Base of message-passing layers: ``out[i] = AGG_{j→i} w_ji · message(x_j, x_i, e_ji)``.

    ``aggr``: ``sum``, ``mean``, ``max``, ``min`` (empty neighbourhoods give 0) or ``softmax``
    (``Σ_j softmax_j(t·m_j) ⊙ m_j`` per channel, PyG's ``SoftmaxAggregation``, ``t=softmax_t``).
    Subclasses override :meth:`message` and set ``transforms_message = True``; otherwise the
    message is ``x_j`` and sum/mean run as a sparse matmul.
    """

    transforms_message = False

    def __init__(self, aggr: str = "sum", *, softmax_t: float = 1.0) -> None:
        super().__init__()
        check_choice("aggr", aggr, AGGREGATIONS)
        self.aggr = aggr
        self.softmax_t = softmax_t

    def message(self, x_j: Tensor, x_i: Tensor | None, edge_attr: Tensor | None) -> Tensor:
        """The message of each edge ``j -> i`` (``(E, *)``); default ``x_j``."""
        return x_j

    def propagate(
        self,
        edge_index: Tensor,
        x_src: Tensor,
        x_dst: Tensor | None = None,
        edge_weight: Tensor | None = None,
        edge_attr: Tensor | None = None,
        num_nodes: int | None = None,
    ) -> Tensor:
        """Aggregate messages along ``edge_index`` (row 0 sources, row 1 targets).

        ``num_nodes`` (targets) defaults to ``x_dst.shape[0]``, else ``x_src.shape[0]``.
        """
        if num_nodes is None:
            num_nodes = (x_src if x_dst is None else x_dst).shape[0]
        src, dst = edge_index[0], edge_index[1]
        if edge_attr is not None and edge_attr.shape[0] != edge_index.shape[1]:
            raise GraphInputError(
                f"edge_attr: {edge_attr.shape[0]} rows for {edge_index.shape[1]} edges"
            )
        if not self.transforms_message and self.aggr in ("sum", "mean"):
            return spmm(edge_index, edge_weight, x_src, num_nodes, self.aggr)
        x_i = None if x_dst is None else x_dst.index_select(0, dst)
        msg = self.message(x_src.index_select(0, src), x_i, edge_attr)
        if edge_weight is not None:
            msg = msg * edge_weight.view(-1, *([1] * (msg.dim() - 1)))
        if self.aggr == "softmax":
            alpha = segment_softmax(msg * self.softmax_t, dst, num_nodes)
            return scatter(alpha * msg, dst, num_nodes, "sum")
        return scatter(msg, dst, num_nodes, self.aggr)

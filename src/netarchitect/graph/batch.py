"""Graphs and mini-batches of graphs: one block-diagonal graph per batch, as PyG batches them.

A :class:`Graph` holds one graph's tensors; :meth:`GraphBatch.from_graphs` concatenates
node and edge tensors, offsets each graph's ``edge_index`` by the nodes before it, and
records which graph each node belongs to (``batch``, sorted) and where each graph starts
(``ptr``, length ``num_graphs + 1``). Graphs with 0 nodes and 0 edges are valid members.
:meth:`GraphBatch.context` is the keyword context of a GNN :class:`~netarchitect.network.Network`
call, so ``model(batch)`` and ``model(batch.x, **batch.context())`` are the same call.

>>> g = Graph(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
>>> b = GraphBatch.from_graphs([g, g])
>>> b.edge_index.tolist(), b.batch.tolist(), b.ptr.tolist()
([[0, 1, 3, 4], [1, 2, 4, 5]], [0, 0, 0, 1, 1, 1], [0, 3, 6])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..layers.graph.checks import GraphInputError, check_batch, check_edge_index, check_finite

__all__ = ["Graph", "GraphBatch", "iterate_batches"]

#: Per-node tensors (split by ``ptr``) and per-edge tensors (split by edge counts).
NODE_KEYS = ("x", "pos")
EDGE_KEYS = ("edge_attr", "edge_weight")
#: The context names a GNN call takes from a graph, in positional order.
CONTEXT_KEYS = ("edge_index", "edge_attr", "edge_weight", "pos", "batch", "num_graphs")


def _empty_edges(device: torch.device | None = None) -> Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def _first_dim(name: str, value: Tensor | None, expected: int, what: str) -> None:
    if value is not None and (value.ndim == 0 or value.shape[0] != expected):
        raise GraphInputError(
            f"{name} has shape {tuple(value.shape)}: expected {expected} rows (one per {what})"
        )


@dataclass
class Graph:
    """One graph: node features ``x`` ``(N, F)``, ``edge_index`` ``(2, E)`` (row 0 sources,
    row 1 targets), optional ``edge_attr`` ``(E, D)``, ``edge_weight`` ``(E,)``, node
    coordinates ``pos`` ``(N, d)`` and a target ``y`` (per node ``(N, ...)`` or per graph).

    ``num_nodes`` defaults to the rows of ``x`` (else of ``pos``, else ``max(edge_index)+1``,
    else 0). The tensors are checked: ``edge_index`` in range, per-node and per-edge rows,
    finite ``pos``.
    """

    x: Tensor | None = None
    edge_index: Tensor | None = None
    edge_attr: Tensor | None = None
    pos: Tensor | None = None
    y: Tensor | None = None
    num_nodes: int | None = None
    edge_weight: Tensor | None = None

    def __post_init__(self) -> None:
        if self.edge_index is None:
            device = next((t.device for t in (self.x, self.pos) if t is not None), None)
            self.edge_index = _empty_edges(device)
        if self.num_nodes is None:
            self.num_nodes = _infer_num_nodes(self.x, self.pos, self.edge_index)
        self.validate()

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1]) if self.edge_index.ndim == 2 else 0

    def validate(self) -> None:
        """Raise :class:`GraphInputError` naming the first inconsistent tensor."""
        n = int(self.num_nodes)  # type: ignore[arg-type]
        check_edge_index(self.edge_index, n)
        for key in NODE_KEYS:
            _first_dim(key, getattr(self, key), n, "node")
        for key in EDGE_KEYS:
            _first_dim(key, getattr(self, key), self.num_edges, "edge")
        if self.pos is not None:
            check_finite(self.pos, "pos")

    def to(self, *args: Any, **kwargs: Any) -> Graph:
        """A copy with every tensor moved/cast as ``Tensor.to`` (dtypes apply to floats only)."""
        return dataclasses.replace(self, **_moved(self, ("x", "edge_index", *EDGE_KEYS, "pos", "y"),
                                                  args, kwargs))

    def to_pyg(self) -> Any:
        """This graph as a ``torch_geometric.data.Data``."""
        from .pyg import graph_to_data

        return graph_to_data(self)


def _as_graph(obj: Any) -> Any:
    """A PyG ``Data`` as a :class:`Graph`; anything else unchanged."""
    if isinstance(obj, Graph):
        return obj
    from .pyg import data_to_graph, is_pyg_data

    return data_to_graph(obj) if is_pyg_data(obj) else obj


def _infer_num_nodes(x: Tensor | None, pos: Tensor | None, edge_index: Tensor) -> int:
    for t in (x, pos):
        if t is not None and t.ndim:
            return int(t.shape[0])
    if edge_index.ndim == 2 and edge_index.numel() and edge_index.device.type != "meta":
        return int(edge_index.max()) + 1
    return 0


def _moved(obj: Any, keys: Sequence[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict:
    """``{key: tensor.to(...)}``; a dtype in ``args``/``kwargs`` casts floating tensors only."""
    out = {}
    for key in keys:
        t = getattr(obj, key)
        if t is None:
            continue
        if t.is_floating_point():
            out[key] = t.to(*args, **kwargs)
        else:
            device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)),
                                               None))
            out[key] = t.to(device) if device is not None else t
    return out


@dataclass
class GraphBatch:
    """A mini-batch of graphs as one block-diagonal graph.

    ``batch`` ``(N,)`` is the (sorted) graph id of each node, ``ptr`` ``(G + 1,)`` the first
    node of each graph, ``y`` the targets concatenated along dim 0 (a scalar per graph
    becomes one row). Build it with :meth:`from_graphs` or :meth:`from_pyg`; pass it to a
    GNN as ``model(batch)``.
    """

    edge_index: Tensor
    batch: Tensor
    ptr: Tensor
    num_graphs: int
    x: Tensor | None = None
    edge_attr: Tensor | None = None
    pos: Tensor | None = None
    y: Tensor | None = None
    edge_weight: Tensor | None = None
    #: rows of ``y`` per graph (``None``: split ``y`` like the nodes); ``y_scalar``: each
    #: graph's ``y`` was a 0-d tensor.
    y_sizes: tuple[int, ...] | None = None
    y_scalar: bool = False

    @property
    def num_nodes(self) -> int:
        return int(self.batch.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph]) -> GraphBatch:
        """Concatenate ``graphs`` (each node's graph id in ``batch``; edges offset); PyG
        ``Data`` objects are accepted too."""
        graphs = [_as_graph(g) for g in graphs]
        if not graphs:
            raise GraphInputError("graphs: cannot batch an empty list of graphs")
        for i, g in enumerate(graphs):
            if not isinstance(g, Graph):
                raise GraphInputError(f"graphs[{i}] is a {type(g).__name__}, not a Graph")
        for key in ("x", "pos", "y", *EDGE_KEYS):
            present = [getattr(g, key) is not None for g in graphs]
            if any(present) and not all(present):
                raise GraphInputError(
                    f"graphs[{present.index(False)}].{key} is None but graphs[{present.index(True)}]"
                    f".{key} is set: every graph of a batch needs the same fields"
                )
        device = graphs[0].edge_index.device
        sizes = torch.tensor([int(g.num_nodes) for g in graphs], dtype=torch.long)  # type: ignore[arg-type]
        ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=ptr[1:])
        edges = [g.edge_index.long() + ptr[i].to(device) for i, g in enumerate(graphs)]
        fields: dict[str, Any] = {
            "edge_index": torch.cat(edges, dim=1),
            "batch": torch.repeat_interleave(torch.arange(len(graphs)), sizes).to(device),
            "ptr": ptr.to(device),
            "num_graphs": len(graphs),
        }
        for key in ("x", "pos", *EDGE_KEYS):
            if getattr(graphs[0], key) is not None:
                fields[key] = torch.cat([getattr(g, key) for g in graphs], dim=0)
        if graphs[0].y is not None:
            ys = [g.y for g in graphs]
            scalar = all(y.ndim == 0 for y in ys)  # type: ignore[union-attr]
            ys = [y.reshape(1) if y.ndim == 0 else y for y in ys]  # type: ignore[union-attr]
            fields["y"] = torch.cat(ys, dim=0)
            fields["y_sizes"] = tuple(int(y.shape[0]) for y in ys)
            fields["y_scalar"] = scalar
        return cls(**fields)

    @classmethod
    def from_pyg(cls, data: Any) -> GraphBatch:
        """A PyG ``Data`` (one graph) or ``Batch`` as a :class:`GraphBatch`."""
        from .pyg import from_pyg

        return from_pyg(data)

    @classmethod
    def coerce(cls, obj: Any) -> GraphBatch:
        """``obj`` as a GraphBatch: a GraphBatch, a :class:`Graph`, a sequence of Graphs or a
        PyG ``Data``/``Batch``."""
        if isinstance(obj, GraphBatch):
            return obj
        if isinstance(obj, Graph):
            return cls.from_graphs([obj])
        if isinstance(obj, (list, tuple)):
            return cls.from_graphs(obj)
        from .pyg import from_pyg, is_pyg_data

        if is_pyg_data(obj):
            return from_pyg(obj)
        raise TypeError(
            f"expected a GraphBatch, Graph, list of Graphs or PyG Data/Batch, got {type(obj).__name__}"
        )

    # ------------------------------------------------------------------ use

    def validate(self) -> None:
        """Raise :class:`GraphInputError` naming the first inconsistent tensor."""
        n = self.num_nodes
        check_edge_index(self.edge_index, n)
        check_batch(self.batch, n)
        _first_dim("ptr", self.ptr, self.num_graphs + 1, "graph, plus one")
        for key in NODE_KEYS:
            _first_dim(key, getattr(self, key), n, "node")
        for key in EDGE_KEYS:
            _first_dim(key, getattr(self, key), self.num_edges, "edge")
        if self.pos is not None:
            check_finite(self.pos, "pos")

    def context(self) -> dict[str, Any]:
        """The GNN call's keyword context: ``edge_index``, ``batch``, ``num_graphs`` and the
        optional ``edge_attr``/``edge_weight``/``pos`` that are set."""
        out = {key: getattr(self, key) for key in CONTEXT_KEYS}
        return {k: v for k, v in out.items() if v is not None}

    def to(self, *args: Any, **kwargs: Any) -> GraphBatch:
        """A copy with every tensor moved/cast as ``Tensor.to`` (dtypes apply to floats only)."""
        keys = ("x", "edge_index", "batch", "ptr", *EDGE_KEYS, "pos", "y")
        return dataclasses.replace(self, **_moved(self, keys, args, kwargs))

    def node_counts(self) -> Tensor:
        """Nodes per graph ``(G,)``."""
        return self.ptr[1:] - self.ptr[:-1]

    def to_graphs(self) -> list[Graph]:
        """The graphs of this batch (edges relabelled from 0 in each graph)."""
        counts = self.node_counts().tolist()
        edge_graph = self.batch[self.edge_index[0]] if self.num_edges else self.batch[:0]
        order = torch.argsort(edge_graph, stable=True)
        edge_counts = torch.bincount(edge_graph, minlength=self.num_graphs).tolist()
        edges = self.edge_index[:, order].split(edge_counts, dim=1)
        per_graph: list[dict[str, Any]] = [
            {"edge_index": e - self.ptr[i], "num_nodes": counts[i]} for i, e in enumerate(edges)
        ]
        for key in NODE_KEYS:
            self._scatter_field(per_graph, key, getattr(self, key), counts)
        for key in EDGE_KEYS:
            value = getattr(self, key)
            self._scatter_field(per_graph, key, None if value is None else value[order],
                                edge_counts)
        if self.y is not None:
            ys = self.y.split(list(self.y_sizes) if self.y_sizes is not None else counts, dim=0)
            for fields, y in zip(per_graph, ys, strict=True):
                fields["y"] = y.reshape(()) if self.y_scalar else y
        return [Graph(**fields) for fields in per_graph]

    @staticmethod
    def _scatter_field(
        per_graph: list[dict[str, Any]], key: str, value: Tensor | None, counts: list[int]
    ) -> None:
        if value is not None:
            for fields, part in zip(per_graph, value.split(counts, dim=0), strict=True):
                fields[key] = part

    def to_pyg(self) -> Any:
        """This batch as a ``torch_geometric.data.Batch``."""
        from .pyg import batch_to_pyg

        return batch_to_pyg(self)


def iterate_batches(
    graphs: Sequence[Graph],
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[GraphBatch]:
    """Mini-batches of ``batch_size`` graphs (a DataLoader for graphs; :class:`Graph` or PyG
    ``Data``); ``shuffle`` draws a permutation from ``generator`` each time the iterator
    is created."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    n = len(graphs)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield GraphBatch.from_graphs([graphs[i] for i in order[start : start + batch_size]])

"""The GNN network kind: a spec-built :class:`~netarchitect.network.Network` over graphs.

Nodes are the batch dimension: a spec declares ``inputs: {x: {shape: [F]}}`` and the
graph arrives as context (``edge_index``, ``edge_attr``, ``edge_weight``, ``pos``,
``batch``, ``num_graphs``). A :class:`GNNNetwork` (``roles: {kind: gnn}``) is called as

- ``model(batch)`` with a :class:`~netarchitect.graph.GraphBatch`, a
  :class:`~netarchitect.graph.Graph` or a PyG ``Data``/``Batch`` (the context the spec
  declares is taken from it);
- ``model(x, edge_index, ...)``: positional values after the inputs bind to the spec's
  ``context`` in its declared order (``model(x, edge_index, batch)`` as in PyG when the
  spec declares ``context: [edge_index, batch]``); or keywords.

Unlike a plain Network, which runs a graph layer without ``edge_index`` as an empty graph,
a GNNNetwork refuses a call without ``edge_index`` (when its spec takes one): forgetting it
would silently turn the GNN into an MLP. The graph is checked once per call (``edge_index``
dtype, shape and range; ``batch`` sorted; finite ``pos``), skipped under ``torch.compile``
and on ``meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import Problem
from ..graph.batch import Graph, GraphBatch
from ..graph.pyg import is_pyg_data
from ..layers.graph.checks import GraphInputError, check_batch, check_edge_index, check_finite
from ..network import Network
from ..registry import register_network_kind
from ..spec import NetworkSpec

__all__ = ["GNNNetwork", "is_graph"]

LEVELS = ("node", "graph")


def is_graph(obj: Any) -> bool:
    """Whether ``obj`` is a graph object a GNN call accepts (GraphBatch, Graph, PyG data)."""
    return isinstance(obj, GraphBatch | Graph) or is_pyg_data(obj)


@register_network_kind("gnn")
class GNNNetwork(Network):
    """A spec-built GNN: :class:`~netarchitect.network.Network` plus graph-aware calls.

    Roles: ``{kind: gnn, level: node | graph}`` (``level``: one output row per node or per
    graph; default ``node``).

    Shapes:
        x: ``(N, F)`` (all nodes of the batch), edge_index: ``(2, E)``, batch: ``(N,)`` ->
        ``(N, C)`` (node level) or ``(num_graphs, C)`` (graph level).
    """

    @classmethod
    def check_roles(cls, spec: NetworkSpec) -> list[Problem]:
        """``roles.level`` is ``node`` or ``graph``."""
        level = spec.roles.get("level", "node")
        if level not in LEVELS:
            return [Problem("roles.level", f"level={level!r} must be one of {LEVELS}")]
        return []

    @property
    def level(self) -> str:
        """``"node"`` or ``"graph"``: what one output row stands for."""
        return str(self.spec.roles.get("level", "node"))

    def _bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        if args and is_graph(args[0]):
            args, kwargs = self._from_graph(args, kwargs)
        n_in = len(self._input_names)
        extra = args[n_in:]
        if len(extra) > len(self._spec.context):
            raise TypeError(
                f"{self._spec.name}: expected at most {n_in} input(s) {self._input_names} and "
                f"{len(self._spec.context)} context value(s) {list(self._spec.context)}, "
                f"got {len(args)} positional arguments"
            )
        for name, value in zip(self._spec.context, extra, strict=False):
            if name in kwargs:
                raise TypeError(f"{self._spec.name}: context {name!r} given twice")
            kwargs[name] = value
        values, context = super()._bind(args[:n_in], kwargs)
        self._check_graph(values, context)
        return values, context

    def _from_graph(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(x,)`` and the declared context of the graph passed as the first argument."""
        if len(args) > 1:
            raise TypeError(
                f"{self._spec.name}: a graph argument carries the whole input; got "
                f"{len(args) - 1} more positional argument(s)"
            )
        graph = GraphBatch.coerce(args[0])
        if graph.x is None:
            raise GraphInputError(f"{self._spec.name}: the graph has no node features x")
        given = {k: v for k, v in graph.context().items() if k in self._spec.context}
        twice = sorted(set(given) & set(kwargs))
        if twice:
            raise TypeError(f"{self._spec.name}: {twice} given both in the graph and as keywords")
        return (graph.x,), {**given, **kwargs}

    def _check_graph(self, values: dict[str, Tensor], context: dict[str, Any]) -> None:
        """Refuse a call without ``edge_index``; check the graph tensors once."""
        if "edge_index" in self._spec.context and context.get("edge_index") is None:
            raise GraphInputError(
                f"{self._spec.name}: edge_index is required: call model(x, edge_index, ...), "
                "model(x, edge_index=...) or model(graph_batch) (an empty graph is "
                "torch.empty(2, 0, dtype=torch.long))"
            )
        x = values[self._input_names[0]]
        if x.device.type == "meta" or torch.compiler.is_compiling():
            return
        num_nodes = x.shape[0]
        if "edge_index" in context:
            check_edge_index(context["edge_index"], num_nodes)
        if "batch" in context:
            check_batch(context["batch"], num_nodes)
        if "pos" in context:
            check_finite(context["pos"], "pos")

    def forward(self, *args: Any, return_nodes: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """``model(graph)`` or ``model(x, *context, **context)`` (see the module docstring)."""
        return super().forward(*args, return_nodes=return_nodes, **kwargs)

    def sample_inputs(
        self, num_nodes: int = 8, *, seed: int = 0, device: torch.device | str = "cpu"
    ) -> tuple[Any, ...]:
        """Positional arguments of a representative call: ``x`` ``(num_nodes, F)`` of
        ``N(0, 1)`` and the spec's context in order: a ring's ``edge_index`` (both
        directions), unit ``edge_weight``, ``pos`` ``N(0, 1)`` in 3-D, ``batch`` of one graph,
        ``num_graphs = 1``; ``None`` for ``edge_attr`` (its width is the layers' business).
        For tools that call ``model(*inputs)`` (``inspect``, ``count_flops``)."""
        g = torch.Generator().manual_seed(seed)
        inp = self._spec.inputs[0]
        idx = torch.arange(num_nodes)
        ring = torch.stack([idx, (idx + 1) % num_nodes])[:, : num_nodes if num_nodes > 1 else 0]
        edge_index = torch.cat([ring, ring.flip(0)], dim=1)
        known: dict[str, Any] = {
            "edge_index": edge_index,
            "edge_weight": torch.ones(edge_index.shape[1]),
            "pos": torch.randn(num_nodes, 3, generator=g),
            "batch": torch.zeros(num_nodes, dtype=torch.long),
            "num_graphs": 1,
        }
        values: list[Any] = [torch.randn(num_nodes, *inp.shape, generator=g)]
        values += [known.get(name) for name in self._spec.context]
        return tuple(v.to(device) if isinstance(v, Tensor) else v for v in values)

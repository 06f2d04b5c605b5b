"""Registered GNNs: named variants of :func:`~netarchitect.models.gnn_builder.gnn` (and the
EGNN regressor), each with a small ``Example`` for the conformance sweep.

References: GCN (Kipf & Welling, 2017: 2 layers, 16 hidden), GAT (Veličković et al., 2018:
8 heads of 8 features), GIN (Xu et al., 2019: 5 layers, 64 hidden, sum readout, jumping
knowledge), a graph transformer (Shi et al., 2021 layers with Laplacian positional
encodings, Dwivedi & Bresson, 2020) and EGNN (Satorras et al., 2021: 4 layers, 64 hidden).
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers._factory import example_tensor
from ..registry import Example, register_model
from .gnn import GNNNetwork
from .gnn_builder import gnn

__all__ = [
    "example_graph",
    "gat_node_classifier",
    "gcn_node_classifier",
    "gin_graph_classifier",
    "graph_transformer_classifier",
]

_MIXES = {"batch_independence": "message passing mixes the nodes of a graph"}
_GRAPH_LEVEL = {
    **_MIXES,
    "output_shape": "one output row per graph (num_graphs), not per node",
}


def example_graph(in_channels: int = 4, *, graphs: int = 2, seed: int = 0) -> tuple[Any, ...]:
    """``(x, edge_index, batch, num_graphs)`` of ``graphs`` small graphs (a 4-ring with a
    chord and an isolated node, then a 3-path): the sweep's example inputs."""
    ring = [[0, 1, 1, 2, 2, 3, 3, 0, 0, 2], [1, 0, 2, 1, 3, 2, 0, 3, 2, 0]]
    path = [[0, 1, 1, 2], [1, 0, 2, 1]]
    sizes = [5 if g % 2 == 0 else 3 for g in range(graphs)]
    edges, start = [], 0
    for g, n in enumerate(sizes):
        edges.append(torch.tensor(ring if g % 2 == 0 else path) + start)
        start += n
    batch = torch.repeat_interleave(torch.arange(graphs), torch.tensor(sizes))
    return example_tensor(start, in_channels, seed=seed), torch.cat(edges, 1), batch, graphs


def _node_example(**kwargs: Any) -> Example:
    x, edge_index, _, _ = example_graph(4)
    return Example({"in_channels": 4, "num_classes": 3, **kwargs}, (x, edge_index), skip=_MIXES)


def _graph_example(**kwargs: Any) -> Example:
    x, edge_index, batch, num_graphs = example_graph(4)
    return Example({"in_channels": 4, "num_classes": 3, **kwargs},
                   (x, edge_index, batch, num_graphs), skip=_GRAPH_LEVEL)


def _variant(defaults: dict[str, Any], overrides: dict[str, Any]) -> GNNNetwork:
    return gnn(**{**defaults, **overrides})


@register_model("gcn_node_classifier",
                example=lambda: _node_example(hidden_channels=8))
def gcn_node_classifier(**kwargs: Any) -> GNNNetwork:
    """GCN node classifier (Kipf & Welling): 2 GCN layers of 16, ReLU, dropout 0.5, head."""
    return _variant({"conv": "gcn", "hidden_channels": 16, "num_layers": 2, "dropout": 0.5,
                     "name": "gcn_node_classifier"}, kwargs)


@register_model("gat_node_classifier",
                example=lambda: _node_example(hidden_channels=8, heads=2))
def gat_node_classifier(**kwargs: Any) -> GNNNetwork:
    """GAT node classifier (Veličković et al.): 2 layers of 8 heads × 8 features, ELU."""
    return _variant({"conv": "gat", "hidden_channels": 64, "heads": 8, "num_layers": 2,
                     "act_layer": "elu", "dropout": 0.6, "name": "gat_node_classifier"}, kwargs)


@register_model("gin_graph_classifier",
                example=lambda: _graph_example(hidden_channels=8, num_layers=2))
def gin_graph_classifier(**kwargs: Any) -> GNNNetwork:
    """GIN graph classifier (Xu et al.): 5 GIN layers of 64, concatenating jumping
    knowledge, sum readout over each graph, head."""
    return _variant({"conv": "gin", "hidden_channels": 64, "num_layers": 5, "level": "graph",
                     "readout": "sum", "jk": "cat", "name": "gin_graph_classifier"}, kwargs)


@register_model("graph_transformer_classifier",
                example=lambda: _graph_example(hidden_channels=8, heads=2, num_layers=2,
                                               pe_dim=2))
def graph_transformer_classifier(**kwargs: Any) -> GNNNetwork:
    """Graph transformer graph classifier: Laplacian positional encodings (8), 4 layers of
    4 heads × 16 features with attention restricted to edges, mean readout, head."""
    return _variant({"conv": "transformer", "hidden_channels": 64, "heads": 4, "num_layers": 4,
                     "level": "graph", "readout": "mean", "pe": "laplacian", "pe_dim": 8,
                     "name": "graph_transformer_classifier"}, kwargs)

"""PyG stays optional and unimported: importing the graph package, building GNNs and calling
them with plain tensors or a GraphBatch never imports ``torch_geometric`` (whose import
pulls in ``transformers``: seconds per process)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import netarchitect as na
import netarchitect.graph, netarchitect.layers.graph, netarchitect.search.graph_task
from netarchitect.graph import Graph, GraphBatch
from netarchitect.models.gnn_models import example_graph
from netarchitect.registry import model_example
for name in ("gcn_node_classifier", "graph_transformer_classifier", "egnn_regressor"):
    ex = model_example(name)
    na.create_model(name, **ex.kwargs, seed=0)(*ex.inputs)
x, edge_index, _, _ = example_graph(4)
model = na.create_model("gcn_node_classifier", in_channels=4, num_classes=3, seed=0)
model(GraphBatch.from_graphs([Graph(x=x[:5], edge_index=edge_index[:, :10])]))
print("torch_geometric" in sys.modules)
"""


def test_graph_package_never_imports_pyg() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr

"""PyG interop: Data/Batch <-> GraphBatch, and any PyG convolution as the ``pyg_conv`` block."""

from __future__ import annotations

import pytest
import torch

from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.graph import Graph, GraphBatch, PygConv, from_pyg, is_pyg_data

pyg_data = pytest.importorskip("torch_geometric.data")
pyg_nn = pytest.importorskip("torch_geometric.nn")


def _graphs() -> list[Graph]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n, e in ((4, 6), (0, 0), (3, 2)):
        edge_index = torch.randint(0, max(n, 1), (2, e), generator=g)
        out.append(Graph(x=torch.randn(n, 3, generator=g), edge_index=edge_index,
                         edge_attr=torch.randn(e, 2, generator=g), pos=torch.randn(n, 2, generator=g),
                         y=torch.tensor([len(out)])))
    return out


def _same_batch(a: GraphBatch, b: GraphBatch) -> None:
    for key in ("x", "edge_index", "edge_attr", "pos", "y", "batch", "ptr"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=0, atol=0, msg=key)
    assert a.num_graphs == b.num_graphs


def test_pyg_batch_equals_our_batch_both_ways():
    ours = GraphBatch.from_graphs(_graphs())
    theirs = pyg_data.Batch.from_data_list([g.to_pyg() for g in _graphs()])
    _same_batch(GraphBatch.from_pyg(theirs), ours)
    _same_batch(from_pyg(ours.to_pyg()), ours)
    assert is_pyg_data(theirs) and not is_pyg_data(ours)
    assert GraphBatch.coerce(theirs).num_graphs == 3
    _same_batch(GraphBatch.from_graphs([g.to_pyg() for g in _graphs()]), ours)  # Data list
    _same_batch(GraphBatch.coerce([g.to_pyg() for g in _graphs()]), ours)
    back = GraphBatch.from_pyg(theirs).to_graphs()
    assert [int(g.y) for g in back] == [0, 1, 2]


def test_pyg_data_is_one_graph():
    data = pyg_data.Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    batch = GraphBatch.coerce(data)
    assert batch.num_graphs == 1 and batch.batch.tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="torch_geometric Data"):
        from_pyg(ours := GraphBatch.from_graphs(_graphs()))
    assert ours.num_graphs == 3


@pytest.mark.parametrize(
    ("conv", "args", "out"),
    [("GCNConv", {}, 5), ("SAGEConv", {"aggr": "max"}, 5), ("GATConv", {"heads": 2}, 10),
     ("TransformerConv", {"heads": 2, "edge_dim": 2}, 10)],
)
def test_pyg_conv_wraps_the_layer_exactly(conv, args, out):
    block = PygConv(3, 5, conv=conv, args=args)
    batch = GraphBatch.from_graphs(_graphs())
    ref = block.conv
    edge_attr = batch.edge_attr if "edge_dim" in args else None
    want = ref(batch.x, batch.edge_index, edge_attr) if edge_attr is not None else ref(
        batch.x, batch.edge_index)
    got = block(batch.x, batch.edge_index, edge_attr)
    torch.testing.assert_close(got, want)
    assert got.shape == (batch.num_nodes, out)
    meta = PygConv(3, 5, conv=conv, args=args, device="meta")
    assert meta(torch.empty(7, 3, device="meta")).shape == (7, out)
    assert block(batch.x).shape == (batch.num_nodes, out)  # no edges: valid


def test_pyg_conv_in_a_spec_builds_and_runs():
    import netarchitect as na

    spec = {
        "name": "pyg_gcn",
        "inputs": {"x": {"shape": [3]}},
        "context": ["edge_index"],
        "nodes": [
            {"id": "c1", "block": "pyg_conv", "params": {"out_channels": 4, "conv": "GATConv",
                                                      "args": {"heads": 2}},
             "context": ["edge_index"]},
            {"id": "c2", "block": "pyg_conv", "params": {"out_channels": 2}, "context": ["edge_index"]},
        ],
        "outputs": ["c2"],
    }
    assert na.infer_shapes(spec)["c1"] == (8,)
    model = na.build(spec, seed=0)
    batch = GraphBatch.from_graphs(_graphs())
    assert model(batch.x, edge_index=batch.edge_index).shape == (batch.num_nodes, 2)


def test_pyg_conv_errors():
    with pytest.raises(SpecError, match="GCNConv") as err:
        PygConv(3, 4, conv="GCNConvv")
    assert err.value.path == "conv"
    with pytest.raises(SpecError, match="not a torch_geometric"):
        PygConv(3, 4, conv="Data")
    with pytest.raises(SpecError, match="args"):
        PygConv(3, 4, conv="GCNConv", args={"no_such_option": 1})
    with pytest.raises(SpecError, match="in_channels"):
        PygConv(0, 4)


def test_missing_pyg_is_a_clear_error(monkeypatch):
    import builtins

    from netarchitect.graph import pyg

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("torch_geometric"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(pyg.importlib, "import_module", lambda name: fake(name))
    with pytest.raises(NetArchitectError, match="pip install"):
        PygConv(3, 4)

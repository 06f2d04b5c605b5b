"""GraphBatch: block-diagonal batching, round trips (empty graphs included), devices, errors."""

from __future__ import annotations

import pytest
import torch

from netarchitect.graph import Graph, GraphBatch, iterate_batches
from netarchitect.layers.graph.checks import GraphInputError


def _graph(n: int, e: int, seed: int, *, y: str = "graph") -> Graph:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, max(n, 1), (2, e), generator=g) if n else torch.empty(2, 0).long()
    target = torch.tensor(seed) if y == "graph" else torch.randint(0, 3, (n,), generator=g)
    return Graph(
        x=torch.randn(n, 3, generator=g),
        edge_index=edge_index,
        edge_attr=torch.randn(e, 2, generator=g),
        pos=torch.randn(n, 3, generator=g),
        y=target,
    )


def _assert_same(a: Graph, b: Graph) -> None:
    assert a.num_nodes == b.num_nodes
    for key in ("x", "edge_index", "edge_attr", "pos", "y", "edge_weight"):
        va, vb = getattr(a, key), getattr(b, key)
        assert (va is None) == (vb is None), key
        if va is not None:
            torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=key)


def test_from_graphs_offsets_edges_and_builds_batch_and_ptr():
    g = Graph(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    b = GraphBatch.from_graphs([g, Graph(x=torch.zeros(0, 2)), g])
    assert b.edge_index.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5]]
    assert b.batch.tolist() == [0, 0, 0, 2, 2, 2]
    assert b.ptr.tolist() == [0, 3, 3, 6]
    assert (b.num_graphs, b.num_nodes, b.num_edges) == (3, 6, 4)
    assert b.node_counts().tolist() == [3, 0, 3]
    assert set(b.context()) == {"edge_index", "batch", "num_graphs"}


@pytest.mark.parametrize("y", ["graph", "node"])
def test_round_trip_with_empty_graphs(y):
    graphs = [_graph(4, 6, 0, y=y), _graph(0, 0, 1, y=y), _graph(1, 0, 2, y=y),
              _graph(5, 9, 3, y=y), _graph(0, 0, 4, y=y)]
    batch = GraphBatch.from_graphs(graphs)
    batch.validate()
    back = batch.to_graphs()
    assert len(back) == len(graphs)
    for a, b in zip(graphs, back, strict=True):
        _assert_same(a, b)


def test_round_trip_of_unsorted_edges_groups_them_by_graph():
    a, b = _graph(3, 4, 0), _graph(2, 3, 1)
    batch = GraphBatch.from_graphs([a, b])
    perm = torch.randperm(batch.num_edges, generator=torch.Generator().manual_seed(0))
    shuffled = GraphBatch(
        x=batch.x, edge_index=batch.edge_index[:, perm], edge_attr=batch.edge_attr[perm],
        batch=batch.batch, ptr=batch.ptr, num_graphs=2, pos=batch.pos,
    )
    graphs = shuffled.to_graphs()
    assert [g.num_edges for g in graphs] == [4, 3]
    assert graphs[1].edge_index.max() < 2


def test_graph_defaults_and_to():
    g = Graph(edge_index=torch.tensor([[0, 4], [1, 2]]))
    assert g.num_nodes == 5 and g.num_edges == 2
    assert Graph().num_nodes == 0 and Graph().edge_index.shape == (2, 0)
    g64 = _graph(3, 2, 0).to(torch.float64)
    assert g64.x.dtype == torch.float64 and g64.edge_index.dtype == torch.long
    batch = GraphBatch.from_graphs([_graph(3, 2, 0)]).to("cpu", dtype=torch.float64)
    assert batch.x.dtype == torch.float64 and batch.batch.dtype == torch.long
    assert GraphBatch.from_graphs([_graph(3, 2, 0)]).to("meta").x.device.type == "meta"


def test_coerce_accepts_graphs_and_refuses_others():
    g = _graph(3, 2, 0)
    assert GraphBatch.coerce(g).num_graphs == 1
    assert GraphBatch.coerce([g, g]).num_graphs == 2
    batch = GraphBatch.from_graphs([g])
    assert GraphBatch.coerce(batch) is batch
    with pytest.raises(TypeError, match="expected a GraphBatch"):
        GraphBatch.coerce("graph")


def test_iterate_batches_covers_every_graph_once_seeded():
    graphs = [_graph(2, 1, i) for i in range(7)]
    sizes = [b.num_graphs for b in iterate_batches(graphs, 3)]
    assert sizes == [3, 3, 1]
    assert [b.num_graphs for b in iterate_batches(graphs, 3, drop_last=True)] == [3, 3]

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return [int(y) for b in iterate_batches(graphs, 3, shuffle=True, generator=gen) for y in b.y]

    assert sorted(order(0)) == list(range(7))
    assert order(0) == order(0) and order(0) != list(range(7))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(graphs, 0))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Graph(x=torch.ones(3, 1), edge_index=torch.tensor([[0], [3]])), "edge_index"),
        (lambda: Graph(x=torch.ones(3, 1), edge_index=torch.tensor([[0], [-1]])), "edge_index"),
        (lambda: Graph(x=torch.ones(3, 1), edge_index=torch.zeros(3, 1).long()), "edge_index"),
        (lambda: Graph(x=torch.ones(3, 1), edge_index=torch.zeros(2, 1)), "edge_index"),
        (lambda: Graph(x=torch.ones(3, 1), pos=torch.ones(2, 3)), "pos"),
        (lambda: Graph(x=torch.ones(2, 1), pos=torch.tensor([[0.0], [float("nan")]])), "pos"),
        (lambda: Graph(x=torch.ones(2, 1), edge_index=torch.tensor([[0], [1]]),
                       edge_attr=torch.ones(2, 1)), "edge_attr"),
        (lambda: GraphBatch.from_graphs([]), "graphs"),
        (lambda: GraphBatch.from_graphs([Graph(x=torch.ones(1, 1)), Graph()]), r"graphs\[1\]\.x"),
        (lambda: GraphBatch.from_graphs(["g"]), r"graphs\[0\]"),
    ],
)
def test_bad_graphs_are_refused_naming_the_argument(make, match):
    with pytest.raises(GraphInputError, match=match):
        make()


def test_unsorted_batch_is_refused():
    b = GraphBatch.from_graphs([_graph(2, 1, 0), _graph(2, 1, 1)])
    bad = GraphBatch(x=b.x, edge_index=b.edge_index, batch=b.batch.flip(0), ptr=b.ptr, num_graphs=2)
    with pytest.raises(GraphInputError, match="batch"):
        bad.validate()
    short = GraphBatch(x=b.x, edge_index=b.edge_index, batch=b.batch, ptr=b.ptr[:2], num_graphs=2)
    with pytest.raises(GraphInputError, match="ptr"):
        short.validate()

"""Readouts and top-k / SAG pooling: per-graph references, PyG parity, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from netarchitect.analysis import count_flops
from netarchitect.layers.graph.checks import GraphInputError
from netarchitect.layers.graph.pooling import (
    DATA_DEPENDENT_SHAPE,
    AttentionReadout,
    GraphPool,
    SAGPooling,
    TopKPooling,
    global_pool,
    topk,
)

pyg = pytest.importorskip("torch_geometric.nn", reason="PyG is the parity reference (dev extra)")

BATCH = torch.tensor([0, 0, 0, 1, 3, 3, 3, 3, 3])  # graph 2 has no nodes
N = BATCH.shape[0]


def _edges() -> torch.Tensor:
    # within-graph edges (graph 0: 0..2, graph 1: 3, graph 3: 4..8), a multi-edge and a loop
    return torch.tensor([[0, 1, 2, 4, 5, 6, 7, 8, 8, 3, 5], [1, 2, 0, 5, 6, 7, 8, 4, 4, 3, 4]])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_global_pool_is_per_graph_reduction(reduce: str) -> None:
    x = torch.randn(N, 4)
    out = GraphPool(reduce=reduce)(x, BATCH, 4)
    for g in range(4):
        sel = x[BATCH == g]
        want = (
            torch.zeros(4)
            if sel.shape[0] == 0
            else getattr(sel, {"sum": "sum", "mean": "mean", "max": "amax"}[reduce])(0)
        )
        assert_close(out[g], want)
    ref = getattr(pyg, f"global_{'add' if reduce == 'sum' else reduce}_pool")(x, BATCH, 4)
    assert_close(out, ref)
    assert_close(global_pool(x, BATCH, reduce=reduce), out)  # num_graphs inferred
    assert_close(
        global_pool(x, None, reduce=reduce),
        global_pool(x, torch.zeros(N, dtype=torch.long), reduce=reduce),
    )


def test_readout_permutation_invariance() -> None:
    x = torch.randn(7, 4)
    perm = torch.randperm(7)
    readout = AttentionReadout(4, 3)
    for module in (GraphPool(reduce="max"), readout):
        assert_close(module(x[perm]), module(x), atol=1e-6, rtol=1e-5)


def test_attention_readout_parity() -> None:
    ours = AttentionReadout(4, 3)
    ref = pyg.aggr.AttentionalAggregation(torch.nn.Linear(4, 1), torch.nn.Linear(4, 3))
    ref.gate_nn.load_state_dict(ours.gate.state_dict())
    ref.nn.load_state_dict(ours.transform.state_dict())
    x = torch.randn(N, 4, requires_grad=True)
    out, want = ours(x, BATCH, 4), ref(x, BATCH, dim_size=4)
    assert_close(out, want)
    g = torch.randn_like(out)
    assert_close(
        torch.autograd.grad(out, [x, *ours.parameters()], g),
        torch.autograd.grad(want, [x, *ref.parameters()], g),
    )
    assert AttentionReadout(4)(x).shape == (1, 4)


def test_bad_batch() -> None:
    x = torch.randn(N, 4)
    with pytest.raises(GraphInputError, match="batch: graph ids must be sorted"):
        global_pool(x, BATCH.flip(0))
    with pytest.raises(GraphInputError, match="batch: length 3"):
        global_pool(x, BATCH[:3])
    with pytest.raises(GraphInputError, match="batch: graph id 3 >= num_graphs=2"):
        global_pool(x, BATCH, 2)
    with pytest.raises(GraphInputError, match="num_graphs: required"):
        global_pool(x.to("meta"), BATCH.to("meta"))
    assert global_pool(x.to("meta"), BATCH.to("meta"), 4).shape == (4, 4)
    assert global_pool(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (0, 4)
    with pytest.raises(ValueError, match="reduce"):
        GraphPool(reduce="prod")


def _check_pool_result(res, ref) -> None:
    x, ei, attr, batch, perm, score = ref
    assert_close(res.x, x)
    assert torch.equal(res.edge_index, ei)
    assert_close(res.edge_attr, attr)
    assert torch.equal(res.batch, batch)
    assert torch.equal(res.perm, perm)
    assert_close(res.score, score)


@pytest.mark.parametrize("ratio", [0.5, 2, 0.3])
@pytest.mark.parametrize("min_score", [None, 0.2])
def test_topk_pooling_parity(ratio: float, min_score: float | None) -> None:
    x, ei, attr = torch.randn(N, 4), _edges(), torch.randn(11, 2)
    ours = TopKPooling(4, ratio=ratio, min_score=min_score, multiplier=2.0)
    ref = pyg.TopKPooling(4, ratio=ratio, min_score=min_score, multiplier=2.0)
    ref.select.weight.data.copy_(ours.weight)
    _check_pool_result(ours(x, ei, attr, BATCH), ref(x, ei, attr, BATCH))


def test_sag_pooling_parity() -> None:
    x, ei = torch.randn(N, 4, requires_grad=True), _edges()
    ours = SAGPooling(4, ratio=0.5)
    ref = pyg.SAGPooling(4, ratio=0.5, GNN=pyg.GCNConv)
    ref.gnn.lin.weight.data.copy_(ours.gnn.lin.weight)
    ref.gnn.bias.data.copy_(ours.gnn.bias)
    res, want = ours(x, ei, None, BATCH), ref(x, ei, None, BATCH)
    _check_pool_result(res, want)
    g = torch.randn_like(res.x)
    assert_close(torch.autograd.grad(res.x, x, g), torch.autograd.grad(want[0], x, g))
    single = ours(x.detach()[:3], ei[:, :3])  # batch=None: one graph
    assert single.x.shape == (2, 4) and single.batch.tolist() == [0, 0]


def test_topk_selection_and_edges() -> None:
    score = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    assert topk(score, 0.5, batch).tolist() == [1, 2, 4, 3]
    assert topk(score, 1, batch).tolist() == [1, 4]
    pool = TopKPooling(3, ratio=0.5)
    res = pool(torch.randn(4, 3), None)  # no edges
    assert res.edge_index.shape == (2, 0) and res.x.shape == (2, 3)


def test_topk_pooling_declares_its_data_dependent_shape() -> None:
    from netarchitect.errors import NetArchitectError
    from netarchitect.optimize.compile import data_dependent_modules, graph_breaks
    from netarchitect.optimize.export import export_program

    x, ei = torch.randn(N, 4), _edges()
    for pool in (TopKPooling(4), SAGPooling(4)):
        assert data_dependent_modules(pool) == {"": DATA_DEPENDENT_SHAPE}
        with pytest.raises(NetArchitectError, match="keeps a number of nodes per graph"):
            export_program(pool, x, ei, None, BATCH)
    pool = TopKPooling(4, min_score=0.1)
    assert graph_breaks(pool, x, ei, None, BATCH)
    torch._dynamo.reset()
    try:  # without fullgraph: breaks where declared, and the result stays right
        _check_pool_result(torch.compile(pool, backend="eager")(x, ei, None, BATCH),
                           pool(x, ei, None, BATCH))
    finally:
        torch._dynamo.reset()


def test_bad_ratio() -> None:
    for bad in (0, -0.5, 1.5, True, "half"):
        with pytest.raises(GraphInputError, match="ratio="):
            TopKPooling(4, ratio=bad)


def test_pool_flops_counted() -> None:
    x = torch.randn(N, 4)
    for module, inputs in (
        (GraphPool(reduce="mean"), {"x": x, "batch": BATCH, "num_graphs": 4}),
        (AttentionReadout(4, 3), {"x": x, "batch": BATCH, "num_graphs": 4}),
        (SAGPooling(4), {"x": x, "edge_index": _edges(), "batch": BATCH}),
    ):
        result = count_flops(module, inputs)
        assert set(result.uncounted) <= {"aten.sort"}  # top-k ranking: no formula for sort yet
        assert result.total_flops > 0


@pytest.mark.parametrize("cls", [GraphPool, AttentionReadout, TopKPooling, SAGPooling])
def test_examples_run_and_reset(cls) -> None:
    from netarchitect.registry import block_examples

    assert cls.example().kwargs == block_examples(cls)[0].kwargs
    for ex in block_examples(cls):
        module = cls(**ex.kwargs)
        module.reset_parameters()
        out = module(*ex.inputs, **ex.forward_kwargs)
        assert (out if isinstance(out, torch.Tensor) else out.x).shape[-1] > 0

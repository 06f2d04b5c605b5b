"""GAT / GATv2 / TransformerConv: PyG parity (outputs, gradients, attention weights) on both
edge layouts, permutation equivariance, softmax normalisation, E = 0, bad inputs, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.layers.graph import attention
from netarchitect.layers.graph.attention import (
    EdgeLayout,
    GATConv,
    GATv2Conv,
    GraphTransformerBlock,
    TransformerConv,
    edge_softmax,
)
from netarchitect.layers.graph.checks import GraphInputError

pyg = pytest.importorskip("torch_geometric.nn", reason="PyG is the parity reference (dev extra)")

N, F_IN, C, EDGE_DIM = 12, 8, 5, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}


def random_graph(num_edges: int = 40, seed: int = 0) -> torch.Tensor:
    """Nodes 10 and 11 isolated; multi-edges; self-loops on nodes 1 and 4 (one doubled)."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N - 2, (2, num_edges), generator=g)
    return torch.cat([ei, ei[:, :5], torch.tensor([[1, 4, 4], [1, 4, 4]])], dim=1)


GRAPHS = {"random": random_graph(), "empty": torch.zeros(2, 0, dtype=torch.long)}
E_RAND = GRAPHS["random"].shape[1]


@pytest.fixture(params=["sorted", "scatter"])
def layout_kind(request, monkeypatch):
    """Run each test on the target-sorted (segment_reduce) and the edge-order (scatter) path."""
    if request.param == "scatter":
        monkeypatch.setattr(attention, "use_index_add", lambda x: True)
    return request.param


def _copy(ours: nn.Module, ref: nn.Module) -> None:
    theirs = ref.state_dict()
    mine = ours.state_dict()
    assert set(mine) <= set(theirs), set(mine) ^ set(theirs)
    ref.load_state_dict(
        {k: mine[k].reshape(v.shape) if k in mine else v for k, v in theirs.items()}
    )


def _compare(ours, ref, x, ei, ea, **kw):
    inputs = [x] if ea is None else [x, ea]
    got = ours(x, ei, ea, return_attention_weights=True, **kw)
    want = ref(x, ei, ea, return_attention_weights=True)
    out, (ei_out, alpha) = got
    assert_close(out, want[0], **TOL)
    assert torch.equal(ei_out, want[1][0])
    assert_close(alpha, want[1][1], **TOL)
    grad = torch.randn_like(out)
    leaves = [*inputs, *ours.parameters()]
    ref_leaves = [*inputs, *(dict(ref.named_parameters())[n] for n, _ in ours.named_parameters())]
    g1 = torch.autograd.grad(out, leaves, grad, allow_unused=True)
    g2 = torch.autograd.grad(want[0], ref_leaves, grad, allow_unused=True)
    for a, b in zip(g1, g2):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            assert_close(a, b, **TOL)


def _inputs(graph: str, edges: bool):
    ei = GRAPHS[graph]
    x = torch.randn(N, F_IN, requires_grad=True)
    ea = torch.randn(ei.shape[1], EDGE_DIM, requires_grad=True) if edges else None
    return x, ei, ea


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("edges", [False, True])
@pytest.mark.parametrize("cls", ["GATConv", "GATv2Conv"])
def test_gat_parity(layout_kind, cls, graph, heads, concat, edges):
    torch.manual_seed(0)
    kw = {"concat": concat, "edge_dim": EDGE_DIM if edges else None}
    ours = getattr(attention, cls)(F_IN, C, num_heads=heads, **kw)
    ref = getattr(pyg, cls)(F_IN, C, heads=heads, **kw)
    _copy(ours, ref)
    _compare(ours, ref, *_inputs(graph, edges))


@pytest.mark.parametrize("fill", ["sum", "max", "min", 0.5])
@pytest.mark.parametrize("cls", ["GATConv", "GATv2Conv"])
def test_gat_fill_values_and_options(layout_kind, cls, fill):
    torch.manual_seed(1)
    kw = {"edge_dim": EDGE_DIM, "fill_value": fill, "negative_slope": 0.1}
    ours = getattr(attention, cls)(F_IN, C, num_heads=2, **kw)
    ref = getattr(pyg, cls)(F_IN, C, heads=2, **kw)
    _copy(ours, ref)
    _compare(ours, ref, *_inputs("random", True))


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        ("GATConv", {"add_self_loops": False}),
        ("GATConv", {"bias": False}),
        ("GATv2Conv", {"add_self_loops": False}),
        ("GATv2Conv", {"share_weights": True}),
        ("GATv2Conv", {"bias": False}),
    ],
)
def test_gat_options_parity(layout_kind, cls, kw):
    torch.manual_seed(2)
    ours = getattr(attention, cls)(F_IN, C, num_heads=2, **kw)
    ref = getattr(pyg, cls)(F_IN, C, heads=2, **kw)
    _copy(ours, ref)
    _compare(ours, ref, *_inputs("random", False))


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"edge_dim": EDGE_DIM},
        {"beta": True},
        {"root_weight": False},
        {"concat": False, "beta": True, "edge_dim": EDGE_DIM},
        {"bias": False},
    ],
)
def test_transformer_parity(layout_kind, graph, heads, kw):
    torch.manual_seed(3)
    ours = TransformerConv(F_IN, C, num_heads=heads, **kw)
    ref = pyg.TransformerConv(F_IN, C, heads=heads, **kw)
    _copy(ours, ref)
    _compare(ours, ref, *_inputs(graph, "edge_dim" in kw))


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv, TransformerConv])
def test_attention_sums_to_one_per_target(layout_kind, cls):
    ei = GRAPHS["random"]
    layer = cls(F_IN, C, num_heads=3)
    _, (ei_out, alpha) = layer(torch.randn(N, F_IN), ei, return_attention_weights=True)
    total = torch.zeros(N, 3).index_add_(0, ei_out[1], alpha)
    has_in = torch.zeros(N, dtype=torch.bool)
    has_in[ei_out[1]] = True
    assert_close(total[has_in], torch.ones_like(total[has_in]))
    assert not total[~has_in].any()
    assert has_in[:10].all() and (cls is not TransformerConv or not has_in[10:].any())


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv, TransformerConv])
def test_permutation_equivariance(layout_kind, cls):
    torch.manual_seed(4)
    layer = cls(F_IN, C, num_heads=2, edge_dim=EDGE_DIM).eval()
    x, ei, ea = _inputs("random", True)
    perm = torch.randperm(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    eperm = torch.randperm(ei.shape[1])
    out = layer(x, ei, ea)
    out_p = layer(x[perm], inv[ei][:, eperm], ea[eperm])
    assert_close(out_p, out[perm], **TOL)


def test_sorted_and_scatter_layouts_agree_and_layout_is_cached():
    ei = GRAPHS["random"]
    h = torch.randn(N, 2, 3)
    a = torch.randn(ei.shape[1], 2)
    fast, slow = EdgeLayout(ei, N, sorted=True), EdgeLayout(ei, N)
    for lay in (fast, slow):
        alpha, _ = edge_softmax(lay, lay.to_layout(a))
        lay.result = (lay.to_original(alpha), lay.aggregate(alpha, h))
    assert_close(fast.result[0], slow.result[0])
    assert_close(fast.result[1], slow.result[1])
    x = torch.randn(N, 4)
    assert attention.edge_layout(ei, N, x) is attention.edge_layout(ei, N, x)
    assert not attention.edge_layout(ei, N, x.bfloat16()).sorted


def test_dropout_drops_attention_in_training_only():
    layer = GATConv(F_IN, C, num_heads=2, dropout=0.5)
    x, ei, _ = _inputs("random", False)
    torch.manual_seed(0)
    a = layer(x, ei)
    torch.manual_seed(1)
    b = layer(x, ei)
    assert not torch.allclose(a, b)
    layer.eval()
    assert_close(layer(x, ei), layer(x, ei))
    t = TransformerConv(F_IN, C, dropout=0.5)
    torch.manual_seed(0)
    assert not torch.allclose(t(x, ei), t(x, ei))


def test_no_edges_gives_the_self_loop_or_zero_message():
    x = torch.randn(N, F_IN)
    gat = GATConv(F_IN, C, num_heads=2)
    assert_close(gat(x), gat.lin(x) + gat.bias)
    t = TransformerConv(F_IN, C, root_weight=False)
    assert not t(x).any()


def test_graph_transformer_block():
    torch.manual_seed(5)
    block = GraphTransformerBlock(16, num_heads=4, edge_dim=EDGE_DIM)
    x, ei, ea = torch.randn(N, 16), GRAPHS["random"], torch.randn(E_RAND, EDGE_DIM)
    out = block(x, ei, ea)
    assert out.shape == (N, 16)
    h = block.norm1(x)
    attn = block.attn(h, ei, ea)
    expected = x + block.proj(attn)
    assert_close(out, expected + block.mlp(block.norm2(expected)))
    with pytest.raises(GraphInputError, match="num_heads=3 does not divide dim=16"):
        GraphTransformerBlock(16, num_heads=3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda m, x, ei: m(x, ei, torch.randn(E_RAND, 2)),
            r"edge_attr: expected shape \(48, 3\), got \(48, 2\)",
        ),
        (lambda m, x, ei: m(x, ei), "edge_attr: required"),
        (
            lambda m, x, ei: m(x, torch.tensor([[0], [12]])),
            r"edge_index\[1\]: index 12 out of range",
        ),
        (lambda m, x, ei: m(x, ei.float()), "edge_index: dtype"),
        (lambda m, x, ei: m(x, ei, torch.ones(E_RAND, 3, dtype=torch.long)), "floating-point"),
    ],
)
@pytest.mark.parametrize("cls", [GATConv, GATv2Conv, TransformerConv])
def test_bad_inputs(cls, call, match):
    layer = cls(F_IN, C, edge_dim=3)
    with pytest.raises(GraphInputError, match=match):
        call(layer, torch.randn(N, F_IN), GRAPHS["random"])


def test_bad_arguments():
    with pytest.raises(GraphInputError, match="edge_attr: given"):
        GATConv(F_IN, C)(torch.randn(N, F_IN), GRAPHS["random"], torch.randn(E_RAND, 3))
    with pytest.raises(SpecError, match="num_heads"):
        GATConv(F_IN, C, num_heads=0)
    with pytest.raises(SpecError, match="fill_value"):
        GATConv(F_IN, C, fill_value="median")
    with pytest.raises(GraphInputError, match="fill_value"):
        GATv2Conv(F_IN, C, fill_value=None)
    with pytest.raises(SpecError, match="dropout"):
        TransformerConv(F_IN, C, dropout=1.0)
    with pytest.raises(SpecError, match="edge_dim"):
        TransformerConv(F_IN, C, edge_dim=0)


def test_one_dimensional_edge_attr_is_one_feature():
    layer = GATConv(F_IN, C, edge_dim=1)
    x, ei = torch.randn(N, F_IN), GRAPHS["random"]
    ea = torch.randn(E_RAND)
    assert_close(layer(x, ei, ea), layer(x, ei, ea.unsqueeze(-1)))


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv, TransformerConv])
def test_count_flops_counts_the_edge_work(cls):
    ei = GRAPHS["random"]
    e, h = ei.shape[1], 2
    layer = cls(F_IN, C, num_heads=h, edge_dim=EDGE_DIM)
    inputs = {"x": torch.randn(N, F_IN), "edge_index": ei, "edge_attr": torch.randn(e, 3)}
    result = count_flops(layer, inputs, backward=True)
    assert not result.uncounted, result.uncounted
    node_macs = N * F_IN * h * C * (1 if cls is GATConv else 2 if cls is GATv2Conv else 4)
    assert result.macs >= node_macs
    assert result.other_flops >= 2 * e * h * C  # weighting and summing the messages
    if cls is not GATConv:  # a per-edge linear map of the edge features
        assert result.macs >= node_macs + e * EDGE_DIM * h * C


@pytest.mark.parametrize(
    "make",
    [
        lambda: GATConv(F_IN, C, edge_dim=2),
        lambda: GATv2Conv(F_IN, C, edge_dim=2),
        lambda: TransformerConv(F_IN, C, beta=True, edge_dim=2),
        lambda: GraphTransformerBlock(8, num_heads=2),
    ],
)
def test_reset_parameters_and_repr(make):
    torch.manual_seed(0)
    layer = make()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.reset_parameters()
    assert layer.state_dict().keys() == before.keys()
    assert "8" in repr(layer)
    assert layer.example().inputs[0].shape[1] == 8

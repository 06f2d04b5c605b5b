"""GCN / SAGE / GIN / GINE: PyG parity (outputs and gradients), equivariance, E = 0, caching,
bad inputs and FLOP counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.analysis import count_flops
from netarchitect.layers.graph.checks import GraphInputError
from netarchitect.layers.graph.conv import GCNConv, GINConv, GINEConv, SAGEConv, gcn_norm
from netarchitect.layers.graph.message_passing import MessagePassing

pyg = pytest.importorskip("torch_geometric.nn", reason="PyG is the parity reference (dev extra)")

N, F_IN, F_OUT, EDGE_DIM = 12, 8, 5, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}


def random_graph(num_edges: int = 40, seed: int = 0) -> torch.Tensor:
    """Nodes 10 and 11 isolated; multi-edges; self-loops on nodes 1 and 4 (one each)."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N - 2, (2, num_edges), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    return torch.cat([ei, ei[:, :5], torch.tensor([[1, 4], [1, 4]])], dim=1)


GRAPHS = {"random": random_graph(), "empty": torch.zeros(2, 0, dtype=torch.long)}


def _leaves(module: nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [*tensors, *(p for p in module.parameters())]


def _compare(
    ours: nn.Module, ref: nn.Module, inputs: list[torch.Tensor], call_ours, call_ref
) -> None:
    out, expected = call_ours(ours), call_ref(ref)
    assert_close(out, expected, **TOL)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, _leaves(ours, *inputs), grad, allow_unused=True)
    want = torch.autograd.grad(expected, _leaves(ref, *inputs), grad, allow_unused=True)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if g is None or w is None:  # a parameter unused by both (E = 0)
            assert (g is None or not g.any()) and (w is None or not w.any())
        else:
            assert_close(g, w, **TOL)


def _x() -> torch.Tensor:
    return torch.randn(N, F_IN, requires_grad=True)


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"improved": True}, {"normalize": False}, {"bias": False}, {"add_self_loops": False}],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("out", [F_OUT, 11])  # transform first / aggregate first
def test_gcn_parity(graph: str, kwargs: dict, weighted: bool, out: int) -> None:
    ei = GRAPHS[graph]
    ours = GCNConv(F_IN, out, **kwargs)
    ref = pyg.GCNConv(F_IN, out, **kwargs)
    ref.lin.weight.data.copy_(ours.lin.weight)
    if ours.bias is not None:
        ref.bias.data.copy_(ours.bias)
    x = _x()
    w = torch.rand(ei.shape[1], requires_grad=True) + 0.1 if weighted else None
    inputs = [x] if w is None else [x, w]
    # PyG ignores improved=True without edge weights (its loops get weight 1): give it ones
    w_ref = torch.ones(ei.shape[1]) if w is None and kwargs.get("improved") else w
    _compare(ours, ref, inputs, lambda m: m(x, ei, w), lambda m: m(x, ei, w_ref))


def test_gcn_cached_reuses_normalisation() -> None:
    ei = GRAPHS["random"]
    conv = GCNConv(F_IN, F_OUT, cached=True)
    x = torch.randn(N, F_IN)
    first = conv(x, ei)
    assert conv._cache is not None
    assert_close(conv(x, ei.clone()), first)
    other = torch.tensor([[0, 1], [1, 0]])
    assert_close(conv(x, other), first)  # cached: the graph is assumed fixed, as in PyG
    conv.reset_parameters()
    assert conv._cache is None
    assert_close(GCNConv(F_IN, F_OUT, cached=False)(x, ei).shape, first.shape)


def test_gcn_norm_multiple_loops_sum() -> None:
    ei = torch.tensor([[0, 0, 1], [0, 0, 0]])
    w, loop = gcn_norm(ei, torch.tensor([1.0, 2.0, 3.0]), 2)
    # node 0: loops 1 + 2 = 3 and edge 1 -> 0 (3): degree 6; node 1: loop fill 1
    assert_close(loop, torch.tensor([3.0 / 6.0, 1.0]))
    assert_close(w, torch.tensor([0.0, 0.0, 3.0 / (6.0**0.5)]))


def _copy_sage(ours: SAGEConv, ref: nn.Module) -> None:
    ref.lin_l.weight.data.copy_(ours.lin_l.weight)
    if ours.lin_l.bias is not None:
        ref.lin_l.bias.data.copy_(ours.lin_l.bias)
    if ours.lin_r is not None:
        ref.lin_r.weight.data.copy_(ours.lin_r.weight)
    if ours.lin is not None:
        ref.lin.weight.data.copy_(ours.lin.weight)
        ref.lin.bias.data.copy_(ours.lin.bias)


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("aggr", ["mean", "max", "sum"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"normalize": True}, {"root_weight": False}, {"project": True}, {"bias": False}],
)
@pytest.mark.parametrize("out", [F_OUT, 11])
def test_sage_parity(graph: str, aggr: str, kwargs: dict, out: int) -> None:
    ei = GRAPHS[graph]
    ours = SAGEConv(F_IN, out, aggr=aggr, **kwargs)
    ref = pyg.SAGEConv(F_IN, out, aggr=aggr, **kwargs)
    _copy_sage(ours, ref)
    x = _x()
    _compare(ours, ref, [x], lambda m: m(x, ei), lambda m: m(x, ei))


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(F_IN, 16), nn.ReLU(), nn.Linear(16, F_OUT))


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("train_eps", [False, True])
def test_gin_parity(graph: str, train_eps: bool) -> None:
    ei = GRAPHS[graph]
    ours = GINConv(F_IN, mlp_module=_mlp(), eps=0.3, train_eps=train_eps)
    ref = pyg.GINConv(copy.deepcopy(ours.nn), eps=0.3, train_eps=train_eps)
    ref.nn.load_state_dict(ours.nn.state_dict())  # PyG re-initialises the given nn
    x = _x()
    _compare(ours, ref, [x], lambda m: m(x, ei), lambda m: m(x, ei))


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("edge_dim", [EDGE_DIM, None])
def test_gine_parity(graph: str, edge_dim: int | None) -> None:
    ei = GRAPHS[graph]
    ours = GINEConv(F_IN, edge_dim=edge_dim, mlp_module=_mlp(), eps=0.1, train_eps=True)
    ref = pyg.GINEConv(copy.deepcopy(ours.nn), eps=0.1, train_eps=True, edge_dim=edge_dim)
    ref.nn.load_state_dict(ours.nn.state_dict())  # PyG re-initialises the given nn
    if edge_dim is not None:
        ref.lin.load_state_dict(ours.lin.state_dict())
    x = _x()
    attr = torch.randn(ei.shape[1], edge_dim or F_IN, requires_grad=True)
    _compare(ours, ref, [x, attr], lambda m: m(x, ei, attr), lambda m: m(x, ei, attr))


def test_gin_default_mlp_and_eps() -> None:
    conv = GINConv(F_IN, F_OUT, hidden_channels=7, train_eps=True, eps=0.5)
    assert isinstance(conv.eps, nn.Parameter) and conv.eps.item() == 0.5
    assert conv.nn.fc1.out_features == 7
    assert conv(torch.randn(N, F_IN), GRAPHS["random"]).shape == (N, F_OUT)
    assert "eps" in dict(GINConv(F_IN).named_buffers())


LAYERS = {
    "gcn": lambda: GCNConv(F_IN, F_OUT),
    "gcn_wide": lambda: GCNConv(F_IN, 11),
    "sage_mean": lambda: SAGEConv(F_IN, F_OUT),
    "sage_max": lambda: SAGEConv(F_IN, F_OUT, aggr="max", project=True),
    "gin": lambda: GINConv(F_IN, F_OUT),
    "gine": lambda: GINEConv(F_IN, F_OUT, edge_dim=EDGE_DIM),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_permutation_equivariance(name: str) -> None:
    layer = LAYERS[name]()
    ei = GRAPHS["random"]
    x = torch.randn(N, F_IN)
    attr = torch.randn(ei.shape[1], EDGE_DIM)
    kw = {"edge_attr": attr} if name == "gine" else {}
    perm = torch.randperm(N)
    inv = torch.argsort(perm)
    out = layer(x, ei, **kw)
    out_p = layer(x[perm], inv[ei], **kw)
    assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
def test_no_edges_is_none_and_valid(name: str) -> None:
    layer = LAYERS[name]()
    x = torch.randn(N, F_IN)
    kw = {"edge_attr": torch.zeros(0, EDGE_DIM)} if name == "gine" else {}
    assert_close(layer(x), layer(x, GRAPHS["empty"], **kw))


@pytest.mark.parametrize("name", list(LAYERS))
def test_bad_edge_index(name: str) -> None:
    layer = LAYERS[name]()
    x = torch.randn(N, F_IN)
    with pytest.raises(GraphInputError, match=r"edge_index\[1\]: index 12 out of range for 12"):
        layer(x, torch.tensor([[0], [12]]))
    with pytest.raises(GraphInputError, match="edge_index: dtype"):
        layer(x, torch.tensor([[0.0], [1.0]]))


def test_bad_edge_features() -> None:
    x, ei = torch.randn(N, F_IN), GRAPHS["random"]
    with pytest.raises(GraphInputError, match="edge_weight: expected shape"):
        GCNConv(F_IN, F_OUT)(x, ei, torch.ones(3))
    gine = GINEConv(F_IN, F_OUT, edge_dim=EDGE_DIM)
    with pytest.raises(GraphInputError, match="edge_attr: gine_conv needs"):
        gine(x, ei)
    with pytest.raises(GraphInputError, match=r"edge_attr: expected shape \(E, 3\)"):
        gine(x, ei, torch.randn(ei.shape[1], 4))
    with pytest.raises(GraphInputError, match="edge_attr: 2 rows"):
        gine(x, ei, torch.randn(2, EDGE_DIM))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="aggr"):
        SAGEConv(4, 4, aggr="softmax")
    with pytest.raises(ValueError, match="in_channels"):
        GCNConv(0, 4)
    with pytest.raises(ValueError, match="edge_dim"):
        GINEConv(4, edge_dim=0)


@pytest.mark.parametrize("aggr", ["sum", "mean", "max", "min", "softmax"])
def test_message_passing_aggregations(aggr: str) -> None:
    class Scaled(MessagePassing):
        transforms_message = True

        def message(self, x_j, x_i, edge_attr):
            return x_j * 2 + (0 if x_i is None else x_i)

    ei = GRAPHS["random"]
    x = torch.randn(N, 3)
    mp = Scaled(aggr)
    out = mp.propagate(ei, x, x_dst=x, edge_weight=torch.ones(ei.shape[1]))
    msgs = x[ei[0]] * 2 + x[ei[1]]
    for i in range(N):
        sel = msgs[ei[1] == i]
        if sel.shape[0] == 0:
            assert not out[i].any()
            continue
        expected = {
            "sum": sel.sum(0),
            "mean": sel.mean(0),
            "max": sel.amax(0),
            "min": sel.amin(0),
            "softmax": (torch.softmax(sel, 0) * sel).sum(0),
        }[aggr]
        assert_close(out[i], expected)
    base = MessagePassing(aggr)
    assert base.message(x, None, None) is x


def test_gcn_flops_closed_form() -> None:
    """Dense part: N·F_in·F_out MACs; aggregation: gather-multiply-add per edge ('other')."""
    ei = GRAPHS["random"]
    e = ei.shape[1]
    x = torch.randn(N, F_IN)
    result = count_flops(GCNConv(F_IN, F_OUT), {"x": x, "edge_index": ei})
    assert result.uncounted == {}
    assert result.macs == N * F_IN * F_OUT
    ops = result.by_operator
    # 3 scatters of E edge scalars (loop flags, loop weights, degree) + E·F_out message sums
    assert ops["aten.index_add"].other_flops == 3 * e + e * F_OUT
    # D^-1/2 w D^-1/2 (2E + 2N), message weights E·F_out, self-loop term N·F_out
    assert ops["aten.mul"].other_flops == 2 * e + 2 * N + e * F_OUT + N * F_OUT
    wide = count_flops(GCNConv(F_IN, 11), {"x": x, "edge_index": ei})
    assert wide.macs == N * F_IN * 11  # aggregate first: messages carry F_in features
    assert wide.by_operator["aten.index_add"].other_flops == 3 * e + e * F_IN


@pytest.mark.parametrize("name", list(LAYERS))
def test_flops_nonzero_forward_and_backward(name: str) -> None:
    layer = LAYERS[name]()
    ei = GRAPHS["random"]
    inputs = {"x": torch.randn(N, F_IN), "edge_index": ei}
    if name == "gine":
        inputs["edge_attr"] = torch.randn(ei.shape[1], EDGE_DIM)
    result = count_flops(layer, inputs, backward=True)
    assert result.uncounted == {}
    assert result.macs > 0 and result.other_flops > 0
    assert result.backward is not None and result.backward.macs > 0


@pytest.mark.parametrize("cls", [GCNConv, SAGEConv, GINConv, GINEConv])
def test_examples_run_and_reset(cls: type[nn.Module]) -> None:
    from netarchitect.registry import block_examples

    assert cls.example().kwargs == block_examples(cls)[0].kwargs
    for ex in block_examples(cls):
        module = cls(**ex.kwargs)
        before = module(*ex.inputs, **ex.forward_kwargs)
        module.reset_parameters()
        assert module(*ex.inputs, **ex.forward_kwargs).shape == before.shape


@pytest.mark.parametrize("name", list(LAYERS))
def test_graph_without_nodes(name: str) -> None:
    layer = LAYERS[name]()
    out = layer(torch.zeros(0, F_IN), torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (0, layer.out_channels)

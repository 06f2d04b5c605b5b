"""EGNN: E(n) equivariance (rotations, reflections, translations) in float64 and float32,
no NaN with coincident points or 8 stacked layers, the packed spec form, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.graph.checks import GraphInputError
from netarchitect.layers.graph.egnn import EGNNLayer

N, F, D = 10, 6, 3
#: float32 bound, relative to the coordinates' scale; measured max here 1.7e-7 (coordinates),
#: 7.6e-6 (features); float64: 6e-14 / 7e-15.
F32_TOL = 2e-5


def graph(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N - 1, (2, 40), generator=g)  # node 9 isolated, multi-edges, loops
    return torch.cat([ei, ei[:, :3]], 1)


def orthogonal(d: int, reflect: bool, dtype) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"coord_update": "tanh", "coord_aggr": "sum"},
        {"coord_update": "none", "aggr": "mean"},
        {"edge_dim": 2},
        {"pos_dim": 2, "out_channels": 4},
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equivariance(kw, reflect, dtype):
    torch.manual_seed(0)
    layer = EGNNLayer(F, **kw).to(dtype).eval()
    d = layer.pos_dim
    h, pos = torch.randn(N, F, dtype=dtype), 3 * torch.randn(N, d, dtype=dtype)
    ea = torch.randn(43, 2, dtype=dtype) if "edge_dim" in kw else None
    ei = graph()
    q, t = orthogonal(d, reflect, dtype), torch.randn(d, dtype=dtype)
    h1, p1 = layer(h, ei, ea, pos=pos)
    h2, p2 = layer(h, ei, ea, pos=pos @ q.T + t)
    tol = 1e-10 if dtype == torch.float64 else F32_TOL
    scale = max(1.0, float(p1.detach().abs().max()))  # float32 rounding grows with the coordinates
    assert_close(p2, p1 @ q.T + t, atol=tol * scale, rtol=0)
    assert_close(h2, h1, atol=tol, rtol=0)
    assert (p1 - pos).abs().max() > 0  # the coordinates moved


def test_permutation_equivariance():
    layer = EGNNLayer(F).eval()
    h, pos, ei = torch.randn(N, F), torch.randn(N, D), graph()
    perm = torch.randperm(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    h1, p1 = layer(h, ei, pos=pos)
    h2, p2 = layer(h[perm], inv[ei], pos=pos[perm])
    assert_close(h2, h1[perm], atol=1e-5, rtol=0)
    assert_close(p2, p1[perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("coord_update", ["normalize", "tanh", "none"])
def test_no_nan_with_coincident_points_and_eight_layers(coord_update):
    torch.manual_seed(0)
    layers = [EGNNLayer(F, coord_update=coord_update) for _ in range(8)]
    for m in layers:  # large coordinate weights: the regime where references diverge
        torch.nn.init.normal_(m.coord_mlp[-1].weight, std=1.0)
    h = torch.randn(N, F, requires_grad=True)
    pos = torch.zeros(N, D, requires_grad=True)  # every point at the origin
    pos2 = torch.cat([torch.zeros(5, D), torch.randn(5, D)]).requires_grad_()  # half coincide
    for p0 in (pos, pos2):
        x, p = h, p0
        for m in layers:
            x, p = m(x, graph(), pos=p)
        (x.square().sum() + p.square().sum()).backward()
        assert torch.isfinite(x).all() and torch.isfinite(p).all()
        grads = [h.grad, p0.grad, *(q.grad for m in layers for q in m.parameters())]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        h.grad = None


def test_packed_form_equals_pair_form_and_keeps_coordinates():
    layer = EGNNLayer(F, 4).eval()
    h, pos, ei = torch.randn(N, F), torch.randn(N, D), graph()
    packed = layer(torch.cat([h, pos], 1), ei)
    h2, p2 = layer.forward_pair(h, pos, ei)
    assert packed.shape == (N, 4 + D)
    assert_close(packed, torch.cat([h2, p2], 1))
    frozen = EGNNLayer(F, update_coords=False).eval()
    assert frozen(h, ei, pos=pos)[1] is pos
    # no edges: features from h alone, coordinates unchanged
    h3, p3 = layer(h, pos=pos)
    assert_close(p3, pos)
    assert h3.shape == (N, 4)


def test_edge_features_are_optional_without_edges():
    """The spec probe calls a layer built with ``edge_dim`` without edges nor ``edge_attr``."""
    layer = EGNNLayer(F, 4, edge_dim=2).eval()
    h, pos = torch.randn(N, F), torch.randn(N, D)
    empty = torch.empty(2, 0, dtype=torch.long)
    h2, p2 = layer(h, empty, pos=pos)
    assert h2.shape == (N, 4)
    assert_close(p2, pos)
    assert_close(layer(h, pos=pos)[0], h2)
    with pytest.raises(GraphInputError, match="edge_attr: required"):
        layer(h, graph(), pos=pos)


def test_residual_only_when_widths_match():
    assert EGNNLayer(F).residual and not EGNNLayer(F, 4).residual


def test_bad_inputs():
    layer = EGNNLayer(F)
    h, pos, ei = torch.randn(N, F), torch.randn(N, D), graph()
    with pytest.raises(GraphInputError, match=r"in_channels \+ pos_dim = 6 \+ 3 = 9"):
        layer(h, ei)
    with pytest.raises(GraphInputError, match=r"pos: expected shape \(10, 3\)"):
        layer(h, ei, pos=pos[:, :2])
    with pytest.raises(GraphInputError, match=r"h: expected shape"):
        layer.forward_pair(h[:, :2], pos, ei)
    bad = pos.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(GraphInputError, match="pos: contains NaN"):
        layer(h, ei, pos=bad)
    with pytest.raises(GraphInputError, match=r"edge_index\[0\]: index 10 out of range"):
        layer(h, torch.tensor([[10], [0]]), pos=pos)
    with pytest.raises(SpecError, match="coord_update"):
        EGNNLayer(F, coord_update="clip")
    with pytest.raises(SpecError, match="norm_eps"):
        EGNNLayer(F, norm_eps=0.0)
    with pytest.raises(SpecError, match="edge_dim"):
        EGNNLayer(F, edge_dim=0)


def test_repr_and_examples():
    assert "pos_dim=3" in repr(EGNNLayer(F))
    assert EGNNLayer.example().inputs[0].shape == (6, 7)
    assert len(EGNNLayer.examples()) == 3

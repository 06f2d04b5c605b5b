"""Residual wrappers, DropPath, DenseBlock, Highway and GatedResidual."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import connections as C
from netarchitect.layers.norm import LayerNorm, RMSNorm


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fn() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.Tanh())


# --- Residual ------------------------------------------------------------------------------------


def test_residual_pre_norm() -> None:
    fn, x = _fn(), _x(2, 3, 8)
    r = C.Residual(fn, dim=8, norm="pre")
    assert_close(r(x), x + fn(r.norm(x)))
    assert isinstance(r.norm, LayerNorm)


def test_residual_post_norm() -> None:
    fn, x = _fn(), _x(2, 3, 8)
    r = C.Residual(fn, dim=8, norm="post", norm_layer="rmsnorm")
    assert isinstance(r.norm, RMSNorm)
    assert_close(r(x), r.norm(x + fn(x)))


def test_residual_sandwich_norm_has_two_norms() -> None:
    fn, x = _fn(), _x(2, 8)
    r = C.Residual(fn, dim=8, norm="sandwich")
    with torch.no_grad():
        r.norm2.weight.fill_(3.0)
    assert r.norm is not r.norm2
    assert_close(r(x), x + r.norm2(fn(r.norm(x))))


def test_residual_without_norm_and_extra_args() -> None:
    class Add(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor, *, z: float = 0.0) -> torch.Tensor:
            return x * y + z

    x = _x(4, 8)
    r = C.Residual(Add(), norm=None)
    assert_close(r(x, 2.0, z=1.0), x + 2 * x + 1)
    assert "norm=None" in repr(r)


def test_residual_layerscale_and_rezero() -> None:
    fn, x = _fn(), _x(2, 8)
    ls = C.Residual(fn, dim=8, norm=None, scale="layerscale", layerscale_init=0.1)
    assert_close(ls(x), x + 0.1 * fn(x))
    rz = C.Residual(fn, dim=8, norm="pre", scale="rezero")
    assert_close(rz(x), x)  # ReZero starts as the identity
    rz(x).sum().backward()
    assert rz.scale.alpha.grad is not None and rz.scale.alpha.grad != 0
    with torch.no_grad():
        rz.scale.alpha.fill_(0.5)
    rz.reset_parameters()
    assert rz.scale.alpha.item() == 0.0


def test_residual_gradients_reach_every_parameter() -> None:
    r = C.Residual(_fn(), dim=8, norm="sandwich", scale="layerscale", drop_path=0.0)
    r(_x(3, 8)).sum().backward()
    for name, p in r.named_parameters():
        assert p.grad is not None, name


def test_residual_drop_path_drops_whole_branch_per_sample() -> None:
    torch.manual_seed(3)
    fn = nn.Linear(8, 8)
    r = C.Residual(fn, norm=None, drop_path=0.5).train()
    x = _x(64, 8)
    y, branch = r(x), fn(x)
    kept = torch.isclose(y, x + 2 * branch, atol=1e-6).all(1)
    dropped = torch.isclose(y, x).all(1)
    assert bool((kept | dropped).all()) and 0 < int(kept.sum()) < 64
    r.eval()
    assert_close(r(x), x + branch)


def test_residual_builds_on_meta() -> None:
    r = C.Residual(
        nn.Linear(8, 8, device="meta"), dim=8, norm="sandwich", scale="layerscale", device="meta"
    )
    assert all(p.device.type == "meta" for p in r.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "middle", "dim": 8}, "norm='middle'"),
        ({"norm": "pre"}, "needs dim="),
        ({"norm": None, "scale": "layerscale"}, "needs dim="),
        ({"norm": None, "scale": "gate"}, "scale='gate'"),
        ({"dim": 0}, "dim=0"),
        ({"dim": 8, "drop_path": 1.0}, r"p=1.0 must be in \[0, 1\)"),
    ],
)
def test_residual_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        C.Residual(_fn(), **kwargs)


def test_residual_rejects_non_module() -> None:
    with pytest.raises(TypeError, match="fn must be an nn.Module"):
        C.Residual(lambda x: x, dim=8)  # type: ignore[arg-type]


# --- DropPath ------------------------------------------------------------------------------------


def test_drop_path_per_sample_scaling_and_eval_identity() -> None:
    torch.manual_seed(0)
    m = C.DropPath(0.25)
    x = torch.ones(1000, 3, 2)
    y = m(x)
    per_sample = y[:, 0, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert torch.equal(y, per_sample.view(-1, 1, 1).expand_as(y))  # whole sample kept or dropped
    assert abs(float(y.mean()) - 1.0) < 0.1  # unbiased in expectation
    assert torch.equal(m.eval()(x), x)
    assert torch.equal(C.DropPath(0.0).train()(x), x)
    assert "p=0.25" in repr(m)


def test_drop_path_bad_probability() -> None:
    with pytest.raises(SpecError, match="p=-0.1"):
        C.DropPath(-0.1)


# --- DenseBlock ----------------------------------------------------------------------------------


def _dense_closed_form(c0: int, layers: int, k: int, bn: int) -> int:
    total = 0
    for i in range(layers):
        c = c0 + i * k
        total += 2 * c + c * bn * k + 2 * bn * k + bn * k * k * 9
    return total


def test_dense_block_shapes_and_parameter_count() -> None:
    m = C.DenseBlock(4, num_layers=3, growth_rate=5, bn_size=2)
    y = m(_x(2, 4, 6, 6))
    assert y.shape == (2, 4 + 3 * 5, 6, 6) and m.out_channels == 19
    assert_close(y[:, :4], _x(2, 4, 6, 6))  # the input passes through unchanged
    assert sum(p.numel() for p in m.parameters()) == _dense_closed_form(4, 3, 5, 2)


def test_dense_block_densenet121_first_block_count() -> None:
    # torchvision densenet121 features.denseblock1: 6 layers, growth 32, bn_size 4, from 64 ch.
    m = C.DenseBlock(64, num_layers=6, growth_rate=32, device="meta")
    assert sum(p.numel() for p in m.parameters()) == 335_040
    assert _dense_closed_form(64, 6, 32, 4) == 335_040


def test_dense_block_matches_reference_layer() -> None:
    m = C.DenseBlock(3, num_layers=2, growth_rate=2, bn_size=2).eval()
    x = _x(1, 3, 4, 4)
    feats = [x]
    for layer in m.layers:
        h = torch.cat(feats, 1)
        h = layer.conv1(torch.relu(layer.norm1(h)))
        feats.append(layer.conv2(torch.relu(layer.norm2(h))))
    assert_close(m(x), torch.cat(feats, 1))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_dense_block_bad_arguments() -> None:
    with pytest.raises(SpecError, match="growth_rate=0"):
        C.DenseBlock(4, num_layers=2, growth_rate=0)
    with pytest.raises(SpecError, match="drop_rate=2"):
        C.DenseBlock(4, num_layers=2, growth_rate=2, drop_rate=2)


def test_dense_block_reset_parameters() -> None:
    m = C.DenseBlock(2, num_layers=1, growth_rate=2)
    with torch.no_grad():
        m.layers[0].norm1.weight.fill_(5.0)
    m.reset_parameters()
    assert_close(m.layers[0].norm1.weight.detach(), torch.ones(2))


# --- Highway -------------------------------------------------------------------------------------


def test_highway_closed_form_and_gate_bias() -> None:
    m = C.Highway(6, gate_bias=-2.0)
    assert_close(m.gate.bias.detach(), torch.full((6,), -2.0))
    x = _x(3, 6)
    h = torch.relu(m.transform(x))
    t = torch.sigmoid(m.gate(x))
    assert_close(m(x), h * t + x * (1 - t))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with torch.no_grad():
        m.gate.bias.zero_()
    m.reset_parameters()
    assert_close(m.gate.bias.detach(), torch.full((6,), -2.0))


def test_highway_closed_gate_carries_input() -> None:
    m = C.Highway(4, gate_bias=-50.0, act_layer="tanh")
    with torch.no_grad():
        m.gate.weight.zero_()
    x = _x(2, 4)
    assert_close(m(x), x)


def test_highway_bad_arguments() -> None:
    with pytest.raises(SpecError, match="in_features=0"):
        C.Highway(0)


# --- GatedResidual -------------------------------------------------------------------------------


def test_gated_residual_closed_form() -> None:
    fn, x = _fn(), _x(3, 8)
    m = C.GatedResidual(fn, dim=8, gate_bias=-1.0)
    assert_close(m(x), x + torch.sigmoid(torch.tensor(-1.0)) * fn(x))  # gate starts constant
    with torch.no_grad():
        m.gate.weight.normal_()
    g = torch.sigmoid(m.gate(x))
    assert_close(m(x), x + g * fn(x))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.reset_parameters()
    assert bool((m.gate.weight == 0).all())


def test_gated_residual_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn must be an nn.Module"):
        C.GatedResidual("fn", dim=8)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="dim=-3"):
        C.GatedResidual(_fn(), dim=-3)

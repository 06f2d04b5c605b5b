"""Squeeze-excitation, ECA and CBAM against hand-written formulas with shared weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import channel_attention as CA
from netarchitect.layers.activation import HardSigmoid
from netarchitect.layers.basic import Identity


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(4))


# --- squeeze-excitation --------------------------------------------------------------------------


def test_se_matches_torchvision_formula() -> None:
    m = CA.SqueezeExcite(16, rd_ratio=0.25)
    x = _x(2, 16, 5, 5)
    s = x.mean((2, 3))  # (B, C)
    w1, b1 = m.mlp.fc1.weight.flatten(1), m.mlp.fc1.bias
    w2, b2 = m.mlp.fc2.weight.flatten(1), m.mlp.fc2.bias
    gate = torch.sigmoid(F.linear(F.relu(F.linear(s, w1, b1)), w2, b2))
    assert_close(m(x), x * gate[:, :, None, None])
    # torchvision SqueezeExcitation(16, 4): two 1x1 convs with bias
    assert sum(p.numel() for p in m.parameters()) == 16 * 4 + 4 + 4 * 16 + 16


def test_se_reduction_sizes() -> None:
    assert CA.SqueezeExcite(64).rd_channels == 4  # 1/16 by default
    assert CA.SqueezeExcite(8).rd_channels == 1  # never below one channel
    assert CA.SqueezeExcite(64, rd_channels=10).rd_channels == 10
    # MobileNetV3: make_divisible(72 // 4, 8) == 24
    assert CA.SqueezeExcite(72, rd_ratio=0.25, rd_divisor=8).rd_channels == 24
    mv3 = CA.SqueezeExcite(16, rd_ratio=0.25, rd_divisor=8, gate_layer="hardsigmoid")
    assert isinstance(mv3.gate, HardSigmoid) and mv3.rd_channels == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rd_ratio": 0}, "rd_ratio=0"),
        ({"rd_channels": 0}, "rd_channels=0"),
        ({"rd_divisor": 0}, "rd_divisor=0"),
    ],
)
def test_se_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        CA.SqueezeExcite(16, **kwargs)
    with pytest.raises(SpecError, match="in_channels=0"):
        CA.SqueezeExcite(0)


# --- ECA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "k"), [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5)])
def test_eca_kernel_size_formula(channels: int, k: int) -> None:
    # k = |log2(C)/2 + 1/2| rounded to odd, from the paper (C=64 -> 3, C=256 -> 5)
    assert CA.eca_kernel_size(channels) == k
    assert CA.ECA(channels).conv.kernel_size == (k,)


def test_eca_matches_manual_conv() -> None:
    m = CA.ECA(16, kernel_size=5)
    x = _x(2, 16, 4, 4)
    s = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C)
    w = torch.sigmoid(F.conv1d(s, m.conv.weight, padding=2)).squeeze(1)
    assert_close(m(x), x * w[:, :, None, None])
    assert m.conv.bias is None and sum(p.numel() for p in m.parameters()) == 5
    # any number of spatial dims
    assert m(_x(2, 16, 7)).shape == (2, 16, 7)


def test_eca_bad_arguments() -> None:
    with pytest.raises(SpecError, match="kernel_size=0"):
        CA.ECA(16, kernel_size=0)


# --- CBAM ----------------------------------------------------------------------------------------


def test_cbam_matches_manual_formula() -> None:
    m = CA.CBAM(8, rd_ratio=0.25, spatial_kernel_size=3).eval()
    with torch.no_grad():
        m.spatial_norm.running_mean.fill_(0.1)
        m.spatial_norm.running_var.fill_(2.0)
    x = _x(2, 8, 6, 6)

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return m.mlp.fc2(F.relu(m.mlp.fc1(v)))

    ch = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    y = x * ch
    maps = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
    conv = F.conv2d(maps, m.spatial_conv.weight, padding=1)
    sp = torch.sigmoid((conv - 0.1) / torch.sqrt(torch.tensor(2.0 + 1e-5)))
    assert_close(m(x), y * sp)
    assert m.spatial_conv.bias is None


def test_cbam_without_norm_uses_conv_bias() -> None:
    m = CA.CBAM(8, rd_channels=2, norm_layer=None, mlp_bias=False)
    assert m.spatial_conv.bias is not None and isinstance(m.spatial_norm, Identity)
    assert m.mlp.fc1.bias is None
    m(_x(1, 8, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(SpecError, match="spatial_kernel_size=0"):
        CA.CBAM(8, spatial_kernel_size=0)


# --- factory and reset ---------------------------------------------------------------------------


def test_get_channel_attn_layer() -> None:
    assert CA.get_channel_attn_layer("se") is CA.SqueezeExcite
    assert CA.get_channel_attn_layer("ECA") is CA.ECA
    assert CA.get_channel_attn_layer("cbam") is CA.CBAM
    assert CA.get_channel_attn_layer(None) is Identity
    with pytest.raises(ValueError, match="did you mean 'eca'"):
        CA.get_channel_attn_layer("eac")


@pytest.mark.parametrize("cls", [CA.SqueezeExcite, CA.ECA, CA.CBAM])
def test_reset_parameters_reinitialises(cls: type[nn.Module]) -> None:
    m = cls(16)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    m.reset_parameters()
    assert all(not bool((p == 7.0).all()) for p in m.parameters() if p.dim() > 1)

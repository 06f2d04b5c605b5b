"""Global, GeM, adaptive, windowed and blur pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import pooling as P


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(6))


# --- global pooling ------------------------------------------------------------------------------


def test_global_pool_types() -> None:
    x = _x(2, 3, 4, 5)
    avg, mx = x.mean((2, 3)), x.amax((2, 3))
    assert_close(P.GlobalPool()(x), F.adaptive_avg_pool2d(x, 1).flatten(1))
    assert_close(P.GlobalPool(pool_type="max")(x), F.adaptive_max_pool2d(x, 1).flatten(1))
    assert_close(P.GlobalPool(pool_type="avgmax")(x), (avg + mx) / 2)
    cat = P.GlobalPool(pool_type="catavgmax")
    assert_close(cat(x), torch.cat([avg, mx], 1))
    assert cat.feature_multiplier() == 2 and P.GlobalPool().feature_multiplier() == 1


def test_global_pool_keepdims_and_any_rank() -> None:
    assert P.GlobalPool(flatten=False)(_x(2, 3, 4, 5)).shape == (2, 3, 1, 1)
    assert P.GlobalPool(flatten=False)(_x(2, 3, 7)).shape == (2, 3, 1)
    assert P.GlobalPool()(_x(2, 3, 2, 2, 2)).shape == (2, 3)
    assert "catavgmax" in repr(P.GlobalPool(pool_type="catavgmax"))
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        P.GlobalPool()(_x(2, 3))
    with pytest.raises(SpecError, match="pool_type='sum'"):
        P.GlobalPool(pool_type="sum")


def test_gem_closed_form_limits_and_gradient() -> None:
    x = _x(2, 3, 4, 4).abs() + 0.1
    m = P.GeM()
    expected = x.pow(3).mean((2, 3)).pow(1 / 3)
    assert_close(m(x), expected)
    m(x).sum().backward()
    assert m.p.grad is not None and m.p.grad.abs() > 0
    assert_close(P.GeM(p=1.0)(x), x.mean((2, 3)))
    assert_close(P.GeM(p=50.0)(x), x.amax((2, 3)), atol=0.0, rtol=0.06)  # >= 16^(-1/50)·max
    assert P.GeM(flatten=False)(x).shape == (2, 3, 1, 1)


def test_gem_fixed_p_is_a_buffer() -> None:
    m = P.GeM(p=2.0, learnable=False)
    assert not list(m.parameters()) and "p" in dict(m.named_buffers())
    with torch.no_grad():
        m.p.fill_(5.0)
    m.reset_parameters()
    assert m.p.item() == 2.0
    assert "p=2.0" in repr(m)
    for bad, match in [({"p": 0}, "p=0"), ({"eps": 0}, "eps=0")]:
        with pytest.raises(SpecError, match=match):
            P.GeM(**bad)


# --- adaptive and windowed -----------------------------------------------------------------------


def test_adaptive_and_window_pools_match_torch() -> None:
    x = _x(2, 3, 7, 9)
    assert_close(P.AdaptiveAvgPool2d(output_size=(2, 3))(x), F.adaptive_avg_pool2d(x, (2, 3)))
    assert_close(P.AdaptiveMaxPool2d(output_size=2)(x), F.adaptive_max_pool2d(x, 2))
    assert_close(P.MaxPool2d(kernel_size=3, stride=2, padding=1)(x), F.max_pool2d(x, 3, 2, 1))
    assert_close(P.AvgPool2d(kernel_size=2)(x), F.avg_pool2d(x, 2))
    assert isinstance(P.MaxPool2d(kernel_size=2), nn.MaxPool2d)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (lambda: P.AdaptiveAvgPool2d(output_size=0), "output_size=0"),
        (lambda: P.AdaptiveMaxPool2d(output_size=(2, -1)), "output_size=-1"),
        (lambda: P.MaxPool2d(kernel_size=0), "kernel_size=0"),
        (lambda: P.MaxPool2d(kernel_size=2, stride=0), "stride=0"),
        (lambda: P.AvgPool2d(kernel_size=3, padding=2), "padding=2 must be between 0 and"),
        (lambda: P.BlurPool(3, pad_mode="mirror"), "pad_mode='mirror'"),
        (lambda: P.BlurPool(3, filter_size=0), "filter_size=0"),
        (lambda: P.BlurPool(0), "in_channels=0"),
    ],
)
def test_bad_arguments(ctor, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ctor()


# --- BlurPool ------------------------------------------------------------------------------------


def test_binomial_filter() -> None:
    assert_close(
        P.binomial_filter(3), torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]).double() / 16
    )
    assert_close(P.binomial_filter(1), torch.ones(1, 1).double())
    assert_close(P.binomial_filter(5).sum(), torch.tensor(1.0).double())


def test_blurpool_matches_manual_depthwise_conv() -> None:
    m = P.BlurPool(3, filter_size=4)
    x = _x(2, 3, 8, 8)
    f = P.binomial_filter(4).float().expand(3, 1, 4, 4)
    expected = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="reflect"), f, stride=2, groups=3)
    assert_close(m(x), expected)
    assert m(x).shape == (2, 3, 4, 4)
    assert not list(m.parameters()) and "filt" not in m.state_dict()  # fixed, non-persistent


def test_blurpool_preserves_constants_and_degenerates_to_subsampling() -> None:
    const = torch.full((1, 2, 6, 6), 3.0)
    assert_close(P.BlurPool(2)(const), torch.full((1, 2, 3, 3), 3.0))
    assert_close(P.BlurPool(2, pad_mode="replicate")(const), torch.full((1, 2, 3, 3), 3.0))
    x = _x(1, 2, 6, 6)
    assert_close(P.BlurPool(2, filter_size=1)(x), x[..., ::2, ::2])
    zeros = P.BlurPool(2, pad_mode="zeros")(const)
    assert zeros[0, 0, 0, 0] < 3.0  # zero padding darkens the border
    assert "pad_mode='zeros'" in repr(P.BlurPool(2, pad_mode="zeros"))


def test_blurpool_meta_and_reset() -> None:
    m = P.BlurPool(4, device="meta", dtype=torch.float16)
    assert m.filt.device.type == "meta" and m.filt.dtype == torch.float16
    real = m.to_empty(device="cpu")
    real.reset_parameters()
    assert_close(real.filt[0, 0].double(), P.binomial_filter(3), atol=1e-3, rtol=0)

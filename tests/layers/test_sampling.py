"""Down- and up-sampling blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import sampling as S


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(7))


# --- ConvDownsample ------------------------------------------------------------------------------


def test_conv_downsample_patchify_default() -> None:
    m = S.ConvDownsample(4, 8)
    assert m.conv.kernel_size == (2, 2) and m.conv.padding == (0, 0) and m.conv.bias is not None
    x = _x(2, 4, 8, 8)
    assert_close(m(x), F.conv2d(x, m.conv.weight, m.conv.bias, stride=2))


def test_conv_downsample_overlapping_with_norm() -> None:
    m = S.ConvDownsample(4, 8, kernel_size=3, stride=2, norm_layer="batchnorm2d", act_layer="relu")
    assert m.conv.padding == (1, 1) and m.conv.bias is None
    assert m(_x(2, 4, 8, 8)).shape == (2, 8, 4, 4)
    assert S.ConvDownsample(4, 4, stride=4)(_x(1, 4, 8, 8)).shape == (1, 4, 2, 2)
    with pytest.raises(SpecError, match="stride=0"):
        S.ConvDownsample(4, 8, stride=0)


# --- PatchMerging --------------------------------------------------------------------------------


def _swin_reference(x: torch.Tensor, norm: nn.Module, reduction: nn.Module) -> torch.Tensor:
    """Transcription of torchvision's _patch_merging_pad + PatchMerging.forward."""
    h, w, _ = x.shape[-3:]
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    x0, x1 = x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :]
    x2, x3 = x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]
    return reduction(norm(torch.cat([x0, x1, x2, x3], -1)))


@pytest.mark.parametrize("hw", [(4, 6), (5, 3)])
def test_patch_merging_matches_swin(hw: tuple[int, int]) -> None:
    m = S.PatchMerging(4)
    with torch.no_grad():
        m.norm.weight.normal_()
    x = _x(2, *hw, 4)
    y = m(x)
    assert y.shape == (2, (hw[0] + 1) // 2, (hw[1] + 1) // 2, 8)
    assert_close(y, _swin_reference(x, m.norm, m.reduction))
    assert m.reduction.bias is None
    assert sum(p.numel() for p in m.parameters()) == 16 * 8 + 2 * 16  # Swin-T stage 1 -> 2 form


def test_patch_merging_out_dim_norm_and_errors() -> None:
    m = S.PatchMerging(3, out_dim=5, norm_layer="rmsnorm")
    assert m(_x(1, 2, 2, 3)).shape == (1, 1, 1, 5)
    m.reset_parameters()
    with pytest.raises(ValueError, match=r"channels-last \(B, H, W, 3\)"):
        m(_x(1, 3, 2, 2))
    with pytest.raises(SpecError, match="out_dim=0"):
        S.PatchMerging(3, out_dim=0)


# --- pixel shuffle / interpolation ---------------------------------------------------------------


def test_pixel_shuffle_roundtrip_and_space_to_depth() -> None:
    x = _x(2, 3, 4, 6)
    down = S.PixelUnshuffle(downscale_factor=2)
    up = S.PixelShuffle(upscale_factor=2)
    d = down(x)
    assert d.shape == (2, 12, 2, 3)
    assert_close(d[:, 0:4, 0, 0].reshape(2, 2, 2), x[:, 0, 0:2, 0:2])  # a 2x2 block of channel 0
    assert torch.equal(up(d), x)
    with pytest.raises(SpecError, match="upscale_factor=0"):
        S.PixelShuffle(upscale_factor=0)
    with pytest.raises(SpecError, match="downscale_factor=-2"):
        S.PixelUnshuffle(downscale_factor=-2)


def test_upsample_modes() -> None:
    x = _x(1, 2, 3, 3)
    assert_close(S.Upsample()(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    bil = S.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    assert_close(bil(x), expected)
    assert S.Upsample(scale_factor=1.5)(x).shape == (1, 2, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale_factor": 0}, "scale_factor=0"),
        ({"mode": "area51"}, "mode='area51'"),
        ({"mode": "nearest", "align_corners": True}, "align_corners=True only applies"),
    ],
)
def test_upsample_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        S.Upsample(**kwargs)


# --- transposed convolution ----------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "k"), [(2, 2), (2, 3), (2, 4), (3, 3), (3, 5), (4, 7)])
def test_conv_transpose_upsample_exact_scale(scale: int, k: int) -> None:
    m = S.ConvTransposeUpsample(3, 5, scale_factor=scale, kernel_size=k)
    assert m(_x(2, 3, 4, 5)).shape == (2, 5, 4 * scale, 5 * scale)


def test_conv_transpose_upsample_matches_functional() -> None:
    m = S.ConvTransposeUpsample(3, 2)
    x = _x(1, 3, 3, 3)
    assert_close(m(x), F.conv_transpose2d(x, m.conv.weight, m.conv.bias, stride=2))
    normed = S.ConvTransposeUpsample(3, 2, norm_layer="batchnorm2d", act_layer="relu")
    assert normed.conv.bias is None and bool((normed(x) >= 0).all())
    normed.reset_parameters()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale_factor": 3, "kernel_size": 2}, "kernel_size=2 must be >= scale_factor=3"),
        ({"scale_factor": 0}, "scale_factor=0"),
        ({"kernel_size": 0}, "kernel_size=0"),
    ],
)
def test_conv_transpose_upsample_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        S.ConvTransposeUpsample(3, 2, **kwargs)

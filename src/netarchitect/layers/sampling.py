"""Down- and up-sampling: strided conv, Swin patch merging, pixel (un)shuffle, interpolation,
transposed convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    LayerType,
    ParameterFree,
    check_choice,
    check_positive_int,
    example_tensor,
    reset_children,
)
from .activation import get_act_layer
from .basic import Linear
from .conv_blocks import ConvNormAct
from .norm import get_norm_layer

__all__ = [
    "ConvDownsample",
    "ConvTransposeUpsample",
    "PatchMerging",
    "PixelShuffle",
    "PixelUnshuffle",
    "Upsample",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("conv_downsample")
class ConvDownsample(ConvNormAct):
    """Strided-convolution downsampling: ``act(norm(conv_{k, stride}(x)))``.

    ``kernel_size`` defaults to ``stride`` (non-overlapping patches, as between
    ConvNeXt stages); norm and act default to none. Padding is
    ``(kernel_size - 1) // 2``, so sizes divisible by ``stride`` shrink exactly.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 2,
        kernel_size: int | None = None,
        norm_layer: LayerType = None,
        act_layer: LayerType = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        check_positive_int("stride", stride)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=stride if kernel_size is None else kernel_size,
            stride=stride,
            norm_layer=norm_layer,
            act_layer=act_layer,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 4, "out_channels": 8}, (example_tensor(2, 4, 8, 8),))


@register_block("patch_merging")
class PatchMerging(nn.Module):
    """Swin Transformer patch merging (Liu et al., 2021), channels-last.

    Each 2×2 neighbourhood is concatenated to ``4C`` channels in the order
    ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]`` (as in Swin and
    torchvision), normalised, and reduced by a bias-free linear map to ``out_dim``
    (default ``2C``). Odd ``H``/``W`` are zero-padded at the bottom/right first.

    Shapes:
        input ``(B, H, W, dim)`` -> output ``(B, ceil(H/2), ceil(W/2), out_dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        norm_layer: LayerType = "layernorm",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        out_dim = 2 * dim if out_dim is None else out_dim
        check_positive_int("out_dim", out_dim)
        factory = {"device": device, "dtype": dtype}
        self.dim, self.out_dim = dim, out_dim
        self.norm = get_norm_layer(norm_layer)(4 * dim, **factory)
        self.reduction = Linear(4 * dim, out_dim, bias=False, **factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"PatchMerging expects channels-last (B, H, W, {self.dim}) input, "
                f"got shape {tuple(x.shape)}"
            )
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))  # (B, H + H%2, W + W%2, C)
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1
        )  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 4}, (example_tensor(2, 6, 5, 4),))


@register_block("pixel_shuffle")
class PixelShuffle(ParameterFree, nn.PixelShuffle):
    """Depth-to-space (Shi et al., 2016): ``(B, C·r², H, W) -> (B, C, H·r, W·r)``.

    Shapes:
        input ``(B, C·r², H, W)`` -> output ``(B, C, H·r, W·r)`` with ``r = upscale_factor``.
    """

    def __init__(
        self, *, upscale_factor: int = 2, device: Device = None, dtype: Dtype = None
    ) -> None:
        check_positive_int("upscale_factor", upscale_factor)
        super().__init__(upscale_factor)

    @classmethod
    def example(cls) -> Example:
        return Example({"upscale_factor": 2}, (example_tensor(2, 8, 3, 3),))


@register_block("pixel_unshuffle")
class PixelUnshuffle(ParameterFree, nn.PixelUnshuffle):
    """Space-to-depth, the inverse of :class:`PixelShuffle`.

    Shapes:
        input ``(B, C, H·r, W·r)`` -> output ``(B, C·r², H, W)`` with ``r = downscale_factor``.
    """

    def __init__(
        self, *, downscale_factor: int = 2, device: Device = None, dtype: Dtype = None
    ) -> None:
        check_positive_int("downscale_factor", downscale_factor)
        super().__init__(downscale_factor)

    @classmethod
    def example(cls) -> Example:
        return Example({"downscale_factor": 2}, (example_tensor(2, 3, 4, 6),))


_LINEAR_MODES = ("linear", "bilinear", "bicubic", "trilinear")


@register_block("upsample")
class Upsample(ParameterFree, nn.Upsample):
    """Interpolation upsampling by ``scale_factor`` (``mode``: nearest, nearest-exact,
    bilinear, bicubic, linear, trilinear); ``align_corners`` only for the linear modes.

    Shapes:
        input ``(B, C, *spatial)`` -> output ``(B, C, *(spatial · scale_factor))``.
    """

    def __init__(
        self,
        *,
        scale_factor: float = 2.0,
        mode: str = "nearest",
        align_corners: bool | None = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        if not (isinstance(scale_factor, (int, float)) and scale_factor > 0):
            raise SpecError(f"scale_factor={scale_factor!r} must be a positive number")
        check_choice("mode", mode, ("nearest", "nearest-exact") + _LINEAR_MODES)
        if align_corners is not None and mode not in _LINEAR_MODES:
            raise SpecError(f"align_corners={align_corners} only applies to linear modes")
        super().__init__(scale_factor=scale_factor, mode=mode, align_corners=align_corners)

    @classmethod
    def example(cls) -> Example:
        return Example({"mode": "bilinear"}, (example_tensor(2, 3, 4, 4),))


@register_block("conv_transpose_upsample")
class ConvTransposeUpsample(nn.Module):
    """Learned upsampling by a transposed convolution, ``act(norm(convT(x)))``.

    ``stride = scale_factor`` and ``kernel_size`` (default ``scale_factor``, must be
    ``>=`` it) with padding ``ceil((k - s) / 2)`` and the output padding that makes
    the output exactly ``scale_factor`` times larger.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H·s, W·s)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        scale_factor: int = 2,
        kernel_size: int | None = None,
        norm_layer: LayerType = None,
        act_layer: LayerType = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("scale_factor", scale_factor)
        k = scale_factor if kernel_size is None else kernel_size
        check_positive_int("kernel_size", k)
        if k < scale_factor:
            raise SpecError(f"kernel_size={k} must be >= scale_factor={scale_factor}")
        padding = (k - scale_factor + 1) // 2
        factory = {"device": device, "dtype": dtype}
        make_norm = get_norm_layer(norm_layer)
        self.conv = nn.ConvTranspose2d(
            in_channels,
            out_channels,
            k,
            stride=scale_factor,
            padding=padding,
            output_padding=scale_factor + 2 * padding - k,
            bias=make_norm is get_norm_layer(None),
            **factory,
        )
        self.norm = make_norm(out_channels, **factory)
        self.act = get_act_layer(act_layer)(**factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        return self.act(self.norm(self.conv(x)))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 4, "out_channels": 3, "kernel_size": 3}
        return Example(kwargs, (example_tensor(2, 4, 3, 3),))

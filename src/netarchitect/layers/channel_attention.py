"""Channel (and spatial) attention for CNN feature maps: squeeze-excitation, ECA, CBAM.

``get_channel_attn_layer`` resolves ``"se"``, ``"eca"``, ``"cbam"`` or ``"none"`` (or a
class / partial) into a constructor ``ctor(channels, *, device=None, dtype=None)``,
which is how the efficient conv blocks accept an attention type.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    LayerType,
    check_positive_int,
    example_tensor,
    make_divisible,
    reset_children,
    resolve_layer,
)
from .activation import get_act_layer
from .basic import Conv1d, Conv2d, Identity
from .norm import get_norm_layer

__all__ = [
    "CBAM",
    "CHANNEL_ATTN_LAYERS",
    "ECA",
    "SqueezeExcite",
    "eca_kernel_size",
    "get_channel_attn_layer",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


def _reduced_channels(
    in_channels: int, rd_ratio: float, rd_channels: int | None, rd_divisor: int
) -> int:
    check_positive_int("in_channels", in_channels)
    if rd_channels is not None:
        check_positive_int("rd_channels", rd_channels)
        return rd_channels
    if not rd_ratio > 0:
        raise SpecError(f"rd_ratio={rd_ratio!r} must be > 0")
    check_positive_int("rd_divisor", rd_divisor)
    if rd_divisor > 1:
        return make_divisible(in_channels * rd_ratio, rd_divisor)
    return max(1, round(in_channels * rd_ratio))


class _ChannelMLP(nn.Module):
    """The bottleneck ``fc2(act(fc1(s)))`` of 1×1 convolutions shared by SE and CBAM."""

    def __init__(
        self, channels: int, rd: int, act_layer: LayerType, bias: bool, factory: dict
    ) -> None:
        super().__init__()
        self.fc1 = Conv2d(channels, rd, kernel_size=1, bias=bias, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.fc2 = Conv2d(rd, channels, kernel_size=1, bias=bias, **factory)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(s)))


@register_block("squeeze_excite")
class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): ``x ⊙ gate(W₂ act(W₁ avgpool(x)))``.

    The bottleneck width is ``rd_channels`` or ``round(in_channels · rd_ratio)``
    (rounded to a multiple of ``rd_divisor`` when it is > 1, as in MobileNetV3).
    Same layout (``fc1``/``fc2`` 1×1 convs with bias) as torchvision's
    ``SqueezeExcitation``.

    Shapes:
        input ``(B, C, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.rd_channels = _reduced_channels(in_channels, rd_ratio, rd_channels, rd_divisor)
        self.mlp = _ChannelMLP(in_channels, self.rd_channels, act_layer, True, factory)
        self.gate = get_act_layer(gate_layer)(**factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.mlp(s))

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 8, "rd_ratio": 0.25}, (example_tensor(2, 8, 4, 4),))


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size: the odd number nearest ``|log2(C) / gamma + b / gamma|``."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_block("eca")
class ECA(nn.Module):
    """Efficient channel attention (Wang et al., 2020).

    ``x ⊙ gate(conv1d_k(avgpool(x)))``: a 1-D convolution (no bias) across the
    pooled channel vector, with ``k = eca_kernel_size(in_channels, gamma, b)``
    unless ``kernel_size`` is given.

    Shapes:
        input ``(B, C, *spatial)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        b: float = 1.0,
        gate_layer: LayerType = "sigmoid",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        if kernel_size is None:
            kernel_size = eca_kernel_size(in_channels, gamma, b)
        check_positive_int("kernel_size", kernel_size)
        factory = {"device": device, "dtype": dtype}
        self.conv = Conv1d(1, 1, kernel_size=kernel_size, bias=False, **factory)
        self.gate = get_act_layer(gate_layer)(**factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, x.dim()))
        s = x.mean(spatial).unsqueeze(1)  # (B, 1, C)
        w = self.gate(self.conv(s)).squeeze(1)  # (B, C)
        return x * w.view(w.shape + (1,) * len(spatial))  # (B, C, 1, 1)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 16}, (example_tensor(2, 16, 4, 4),))


@register_block("cbam")
class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al., 2018): channel then spatial attention.

    Channel: ``x ← x ⊙ gate(mlp(avgpool(x)) + mlp(maxpool(x)))`` (shared MLP).
    Spatial: ``x ← x ⊙ gate(norm(conv_k([mean_c(x); max_c(x)])))`` with a ``k×k``
    convolution from 2 maps to 1 (no bias; BatchNorm as in the paper's code).

    Shapes:
        input ``(B, C, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        spatial_kernel_size: int = 7,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        norm_layer: LayerType = "batchnorm2d",
        mlp_bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        rd = _reduced_channels(in_channels, rd_ratio, rd_channels, 1)
        check_positive_int("spatial_kernel_size", spatial_kernel_size)
        make_norm = get_norm_layer(norm_layer)
        self.mlp = _ChannelMLP(in_channels, rd, act_layer, mlp_bias, factory)
        self.spatial_conv = Conv2d(
            2, 1, kernel_size=spatial_kernel_size, bias=make_norm is Identity, **factory
        )
        self.spatial_norm = make_norm(1, **factory)
        self.gate = get_act_layer(gate_layer)(**factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)  # (B, C, 1, 1)
        x = x * self.gate(self.mlp(avg) + self.mlp(mx))
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, H, W)
        return x * self.gate(self.spatial_norm(self.spatial_conv(maps)))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "rd_ratio": 0.25, "spatial_kernel_size": 3}
        return Example(kwargs, (example_tensor(2, 8, 5, 5),))


#: Names accepted by :func:`get_channel_attn_layer`.
CHANNEL_ATTN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "none": Identity,
    "se": SqueezeExcite,
    "squeeze_excite": SqueezeExcite,
    "eca": ECA,
    "cbam": CBAM,
}


def get_channel_attn_layer(attn_layer: LayerType) -> Callable[..., nn.Module]:
    """Resolve a channel-attention type (name, class, partial, ``None``) into a constructor."""
    return resolve_layer(attn_layer, CHANNEL_ATTN_LAYERS, kind="channel attention")

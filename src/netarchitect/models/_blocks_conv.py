"""Convolutional blocks the CNN families need in specs beyond the layer library: DenseNet's
transition and MobileNetV3's inverted residual (whose squeeze-excitation is plain data)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layers._factory import (
    LayerType,
    check_non_negative,
    check_positive_int,
    example_tensor,
    reset_children,
)
from ..layers.activation import get_act_layer
from ..layers.basic import Conv2d
from ..layers.channel_attention import SqueezeExcite
from ..layers.conv_blocks import InvertedResidual
from ..layers.norm import get_norm_layer
from ..layers.pooling import AvgPool2d
from ..registry import Example, register_block

__all__ = ["DenseTransition", "MobileNetV3Block"]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("dense_transition")
class DenseTransition(nn.Module):
    """DenseNet transition (Huang et al., 2017): ``avgpool_2(conv1x1(act(norm(x))))``.

    The 1×1 convolution (no bias) compresses ``in_channels`` to ``out_channels``
    (DenseNet-BC halves them); the 2×2 average pool halves the resolution.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / 2, W / 2)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm = get_norm_layer(norm_layer)(in_channels, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.conv = Conv2d(in_channels, out_channels, kernel_size=1, bias=False, **factory)
        self.pool = AvgPool2d(kernel_size=2, stride=2)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.act(self.norm(x))))

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 8, "out_channels": 4}, (example_tensor(2, 8, 6, 6),))


@register_block("mobilenetv3_block")
class MobileNetV3Block(InvertedResidual):
    """MobileNetV3 bottleneck (Howard et al., 2019), torchvision layout.

    An :class:`~netarchitect.layers.conv_blocks.InvertedResidual` expanding to
    ``hidden_channels`` (no expansion conv when equal to ``in_channels``), whose
    squeeze-excitation (``se_ratio > 0``) has ``make_divisible(hidden · se_ratio, 8)``
    channels, a ReLU and a hard-sigmoid gate.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        act_layer: LayerType = "hardswish",
        norm_layer: LayerType = "batchnorm2d",
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        check_positive_int("in_channels", in_channels)
        check_positive_int("hidden_channels", hidden_channels)
        check_non_negative("se_ratio", se_ratio)
        if hidden_channels < in_channels:
            raise SpecError(
                f"hidden_channels={hidden_channels} must be >= in_channels={in_channels}"
            )
        se_layer = None
        if se_ratio > 0:
            se_layer = functools.partial(
                SqueezeExcite, rd_ratio=se_ratio, rd_divisor=8, gate_layer="hardsigmoid"
            )
        super().__init__(
            in_channels,
            out_channels,
            stride=stride,
            kernel_size=kernel_size,
            expand_ratio=hidden_channels / in_channels,
            se_layer=se_layer,
            norm_layer=norm_layer,
            act_layer=act_layer,
            drop_path=drop_path,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "out_channels": 8, "hidden_channels": 24, "se_ratio": 0.25}
        return Example(kwargs, (example_tensor(2, 8, 6, 6),))

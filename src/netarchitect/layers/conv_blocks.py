"""Convolutional and efficient blocks: ConvNormAct, depthwise-separable, MBConv, Fused-MBConv,
ResNet BasicBlock / Bottleneck and the ConvNeXt block.

Layouts (and submodule names of the ResNet blocks) follow torchvision, so
parameter counts match its reference blocks exactly.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable

import torch
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    LayerType,
    check_divides,
    check_non_negative,
    check_positive_int,
    example_tensor,
    make_divisible,
    reset_children,
)
from .activation import get_act_layer
from .basic import Conv2d, Identity, Linear
from .channel_attention import SqueezeExcite, get_channel_attn_layer
from .connections import DropPath
from .norm import LayerNorm, LayerScale, get_norm_layer

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvNeXtBlock",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "FusedMBConv",
    "InvertedResidual",
    "make_divisible",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("conv_norm_act")
class ConvNormAct(nn.Module):
    """``act(norm(conv(x)))``: the basic CNN unit.

    The convolution has no bias when a norm follows (``bias=None``), and
    ``padding=None`` keeps the size at stride 1 (``dilation · (k - 1) // 2``).

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        make_norm = get_norm_layer(norm_layer)
        self.conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=make_norm is Identity if bias is None else bias,
            **factory,
        )
        self.norm = make_norm(out_channels, **factory)
        self.act = get_act_layer(act_layer)(**factory)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 3, "out_channels": 8, "stride": 2}
        return Example(kwargs, (example_tensor(2, 3, 8, 8),), name="stride2")

    @classmethod
    def examples(cls) -> list[Example]:
        """Strided, grouped + dilated, and depthwise (groups = channels) convolutions."""
        x = example_tensor(2, 8, 9, 9)
        return [
            cls.example(),
            Example({"in_channels": 8, "out_channels": 12, "groups": 4, "dilation": 2},
                    (x,), name="grouped_dilated"),
            Example({"in_channels": 8, "out_channels": 8, "groups": 8, "kernel_size": 5,
                     "act_layer": "silu"}, (x,), name="depthwise"),
        ]


def _se_module(
    channels: int,
    in_channels: int,
    se_ratio: float,
    se_layer: LayerType,
    act_layer: LayerType,
    factory: dict,
) -> nn.Module:
    """SE sized from the block input (EfficientNet) or an explicit attention type."""
    check_non_negative("se_ratio", se_ratio)
    if se_layer is not None and se_ratio > 0:
        raise SpecError(f"pass either se_ratio={se_ratio} or se_layer={se_layer!r}, not both")
    if se_ratio > 0:
        rd = max(1, int(in_channels * se_ratio))
        return SqueezeExcite(channels, rd_channels=rd, act_layer=act_layer, **factory)
    return get_channel_attn_layer(se_layer)(channels, **factory)


def _hidden_channels(in_channels: int, expand_ratio: float) -> int:
    if not (isinstance(expand_ratio, (int, float)) and expand_ratio >= 1):
        raise SpecError(f"expand_ratio={expand_ratio!r} must be a number >= 1")
    return round(in_channels * expand_ratio)


def _zero_norm_weight(norm: nn.Module) -> None:
    weight = getattr(norm, "weight", None)
    if weight is not None:
        with torch.no_grad():
            weight.zero_()


class _SkipBlock(nn.Module, abc.ABC):
    """Base of blocks that add their input back (with stochastic depth) when shapes allow."""

    has_skip: bool

    def _init_skip(self, in_channels: int, out_channels: int, stride: int, drop_path: float):
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path)

    @abc.abstractmethod
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch (each block defines it)."""

    def reset_parameters(self) -> None:
        reset_children(self)

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so a residual block starts as the identity
        (used by the ``zero_last_in_residual`` init rule; no-op without a skip)."""
        if self.has_skip:
            _zero_norm_weight(self.last_norm())

    def last_norm(self) -> nn.Module:
        """The norm that closes the branch."""
        return self.conv_pwl.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return x + self.drop_path(y) if self.has_skip else y


@register_block("depthwise_separable_conv")
class DepthwiseSeparableConv(_SkipBlock):
    """Depthwise-separable convolution (MobileNetV1; EfficientNet's DS block).

    ``pw(se(dw(x)))``: a ``k×k`` depthwise ConvNormAct, optional squeeze-excitation,
    then a 1×1 pointwise conv + norm (+ act with ``pw_act``); residual with
    stochastic depth when ``stride == 1``, ``in == out`` and ``residual``.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_ratio: float = 0.0,
        se_layer: LayerType = None,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        pw_act: bool = False,
        residual: bool = True,
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        self._init_skip(in_channels, out_channels, stride, drop_path)
        self.has_skip = self.has_skip and residual
        factory = {"device": device, "dtype": dtype}
        layers = {"norm_layer": norm_layer, **factory}
        self.conv_dw = ConvNormAct(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            groups=in_channels,
            act_layer=act_layer,
            **layers,
        )
        self.se = _se_module(in_channels, in_channels, se_ratio, se_layer, act_layer, factory)
        self.conv_pw = ConvNormAct(
            in_channels,
            out_channels,
            kernel_size=1,
            act_layer=act_layer if pw_act else None,
            **layers,
        )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.se(self.conv_dw(x)))

    def last_norm(self) -> nn.Module:
        return self.conv_pw.norm

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "out_channels": 8, "se_ratio": 0.25}
        return Example(kwargs, (example_tensor(2, 8, 6, 6),))


@register_block("inverted_residual")
class InvertedResidual(_SkipBlock):
    """MobileNetV2 inverted residual / MBConv (Sandler et al., 2018; Tan & Le, 2019).

    1×1 expansion to ``round(in · expand_ratio)`` channels (skipped when the ratio is
    1), ``k×k`` depthwise conv with ``stride``, optional squeeze-excitation
    (``se_ratio`` sizes it from ``in_channels`` as EfficientNet does; or pass
    ``se_layer``), then a linear 1×1 projection + norm. Residual with stochastic
    depth when ``stride == 1`` and ``in == out``.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        dilation: int = 1,
        expand_ratio: float = 6.0,
        se_ratio: float = 0.0,
        se_layer: LayerType = None,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu6",
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        self._init_skip(in_channels, out_channels, stride, drop_path)
        factory = {"device": device, "dtype": dtype}
        layers = {"norm_layer": norm_layer, **factory}
        hidden = _hidden_channels(in_channels, expand_ratio)
        self.conv_pw: nn.Module = Identity()
        if hidden != in_channels:
            self.conv_pw = ConvNormAct(
                in_channels, hidden, kernel_size=1, act_layer=act_layer, **layers
            )
        self.conv_dw = ConvNormAct(
            hidden,
            hidden,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            groups=hidden,
            act_layer=act_layer,
            **layers,
        )
        self.se = _se_module(hidden, in_channels, se_ratio, se_layer, act_layer, factory)
        self.conv_pwl = ConvNormAct(hidden, out_channels, kernel_size=1, act_layer=None, **layers)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "out_channels": 8, "expand_ratio": 2, "se_ratio": 0.25}
        kwargs["act_layer"] = "silu"  # EfficientNet's MBConv
        return Example(kwargs, (example_tensor(2, 8, 6, 6),), name="mbconv_se")

    @classmethod
    def examples(cls) -> list[Example]:
        """EfficientNet's MBConv with SE, and a strided block that widens (no skip)."""
        strided = {"in_channels": 8, "out_channels": 16, "expand_ratio": 4, "stride": 2}
        return [cls.example(), Example(strided, (example_tensor(2, 8, 7, 7),), name="stride2")]


@register_block("fused_mbconv")
class FusedMBConv(_SkipBlock):
    """Fused-MBConv (EfficientNetV2, Tan & Le, 2021): MBConv with expansion + depthwise fused.

    ``expand_ratio != 1``: ``k×k`` ConvNormAct (``in → in·ratio``, ``stride``), optional SE,
    linear 1×1 projection + norm. ``expand_ratio == 1``: one ``k×k`` ConvNormAct
    ``in → out``. Residual with stochastic depth when ``stride == 1`` and ``in == out``.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 4.0,
        se_ratio: float = 0.0,
        se_layer: LayerType = None,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "silu",
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        self._init_skip(in_channels, out_channels, stride, drop_path)
        factory = {"device": device, "dtype": dtype}
        layers = {"norm_layer": norm_layer, **factory}
        hidden = _hidden_channels(in_channels, expand_ratio)
        fused = expand_ratio != 1
        self.conv_exp = ConvNormAct(
            in_channels,
            hidden if fused else out_channels,
            kernel_size=kernel_size,
            stride=stride,
            act_layer=act_layer,
            **layers,
        )
        se_channels = hidden if fused else out_channels
        self.se = _se_module(se_channels, in_channels, se_ratio, se_layer, act_layer, factory)
        self.conv_pwl: nn.Module = Identity()
        if fused:
            self.conv_pwl = ConvNormAct(
                hidden, out_channels, kernel_size=1, act_layer=None, **layers
            )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.se(self.conv_exp(x)))

    def last_norm(self) -> nn.Module:
        return self.conv_exp.norm if isinstance(self.conv_pwl, Identity) else self.conv_pwl.norm

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "out_channels": 8, "expand_ratio": 2}
        return Example(kwargs, (example_tensor(2, 8, 6, 6),))


class _ResNetBlock(nn.Module, abc.ABC):
    """Shared parts of BasicBlock / Bottleneck: projection shortcut, stochastic depth,
    zero-init of the last norm, and ``act(branch(x) + shortcut(x))``."""

    last_norm: str

    def _init_common(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: LayerType,
        act_layer: LayerType,
        drop_path: float,
        zero_init_last: bool,
        factory: dict,
    ) -> tuple[Callable[..., nn.Module], Callable[..., nn.Module]]:
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        make_norm, make_act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        self._conv_bias = make_norm is Identity  # a norm's shift replaces the conv bias
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                Conv2d(
                    in_channels, out_channels, kernel_size=1, stride=stride,
                    bias=self._conv_bias, **factory,
                ),
                make_norm(out_channels, **factory),
            )
        self.drop_path = DropPath(drop_path)
        self._zero_last = zero_init_last
        return make_norm, make_act

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as (act of) its shortcut."""
        _zero_norm_weight(getattr(self, self.last_norm))

    def _apply_zero_init_last(self) -> None:
        if self._zero_last:
            self.zero_init_last()

    def reset_parameters(self) -> None:
        reset_children(self)
        self._apply_zero_init_last()

    @abc.abstractmethod
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch (each block defines it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.drop_path(self.branch(x)) + shortcut)


@register_block("basic_block")
class BasicBlock(_ResNetBlock):
    """ResNet basic block (He et al., 2016), torchvision layout.

    ``act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))`` with two 3×3 convs
    (stride on the first) and a 1×1 conv + norm projection shortcut when the
    stride or the width changes. ``groups``/``base_width`` must stay 1/64 (as in
    torchvision); ``zero_init_last`` zeroes ``bn2.weight`` so the block starts as
    the identity.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    expansion = 1
    last_norm = "bn2"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        drop_path: float = 0.0,
        zero_init_last: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise SpecError(
                f"BasicBlock supports only groups=1 and base_width=64, got groups={groups}, "
                f"base_width={base_width} (use Bottleneck for ResNeXt / wide variants)"
            )
        factory = {"device": device, "dtype": dtype}
        make_norm, make_act = self._init_common(
            in_channels, out_channels, stride, norm_layer, act_layer, drop_path,
            zero_init_last, factory,
        )  # fmt: skip
        conv3 = functools.partial(
            Conv2d, kernel_size=3, dilation=dilation, bias=self._conv_bias, **factory
        )
        self.conv1 = conv3(in_channels, out_channels, stride=stride)
        self.bn1 = make_norm(out_channels, **factory)
        self.conv2 = conv3(out_channels, out_channels)
        self.bn2 = make_norm(out_channels, **factory)
        self.act = make_act(**factory)
        self._apply_zero_init_last()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 4, "out_channels": 8, "stride": 2}
        return Example(kwargs, (example_tensor(2, 4, 8, 8),))


@register_block("bottleneck")
class Bottleneck(_ResNetBlock):
    """ResNet bottleneck block, torchvision "v1.5" layout (stride on the 3×3 conv).

    ``planes = out_channels / expansion`` and the inner width is
    ``int(planes · base_width / 64) · groups`` (ResNeXt: ``groups=32, base_width=4``;
    wide ResNet: ``base_width=128``). Branch: 1×1 → 3×3 (stride, groups) → 1×1,
    each followed by a norm, with ``act`` in between and after the addition.
    ``zero_init_last`` zeroes ``bn3.weight``.
    torchvision's ``Bottleneck(inplanes=256, planes=64)`` is ``Bottleneck(256, 256)``.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H / stride, W / stride)``.
    """

    last_norm = "bn3"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        expansion: int = 4,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        drop_path: float = 0.0,
        zero_init_last: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        make_norm, make_act = self._init_common(
            in_channels, out_channels, stride, norm_layer, act_layer, drop_path,
            zero_init_last, factory,
        )  # fmt: skip
        for name, value in [
            ("groups", groups),
            ("base_width", base_width),
            ("expansion", expansion),
        ]:
            check_positive_int(name, value)
        check_divides("expansion", expansion, "out_channels", out_channels)
        self.expansion = expansion
        width = int(out_channels // expansion * (base_width / 64.0)) * groups
        if width < 1:
            raise SpecError(f"base_width={base_width} gives an inner width of 0 channels")
        self.width = width
        self.conv1 = Conv2d(in_channels, width, kernel_size=1, bias=self._conv_bias, **factory)
        self.bn1 = make_norm(width, **factory)
        self.conv2 = Conv2d(
            width,
            width,
            kernel_size=3,
            stride=stride,
            dilation=dilation,
            groups=groups,
            bias=self._conv_bias,
            **factory,
        )
        self.bn2 = make_norm(width, **factory)
        self.conv3 = Conv2d(width, out_channels, kernel_size=1, bias=self._conv_bias, **factory)
        self.bn3 = make_norm(out_channels, **factory)
        self.act = make_act(**factory)
        self._apply_zero_init_last()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "out_channels": 16, "stride": 2, "groups": 2}
        return Example(kwargs, (example_tensor(2, 8, 6, 6),), name="stride2_groups")

    @classmethod
    def examples(cls) -> list[Example]:
        """Strided grouped projection block, and an identity-shortcut ResNeXt block."""
        resnext = {"in_channels": 32, "out_channels": 32, "groups": 4, "base_width": 16}
        return [cls.example(), Example(resnext, (example_tensor(2, 32, 5, 5),), name="resnext")]


@register_block("convnext_block")
class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al., 2022).

    ``x + drop_path(γ ⊙ fc2(act(fc1(norm(dwconv_k(x))))))``: a ``k×k`` depthwise conv
    (with bias), then channels-last LayerNorm (eps 1e-6), an MLP of width
    ``mlp_ratio · C`` with GELU, and LayerScale ``γ`` (``layerscale_init``; ``None``
    disables it).

    Shapes:
        input ``(B, in_channels, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        layerscale_init: float | None = 1e-6,
        drop_path: float = 0.0,
        norm_layer: LayerType = functools.partial(LayerNorm, eps=1e-6),  # noqa: B008
        act_layer: LayerType = "gelu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0):
            raise SpecError(f"mlp_ratio={mlp_ratio!r} must be a positive number")
        factory = {"device": device, "dtype": dtype}
        hidden = int(mlp_ratio * in_channels)
        self.conv_dw = Conv2d(
            in_channels, in_channels, kernel_size=kernel_size, groups=in_channels, **factory
        )
        self.norm = get_norm_layer(norm_layer)(in_channels, **factory)
        self.fc1 = Linear(in_channels, hidden, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.fc2 = Linear(hidden, in_channels, **factory)
        self.ls: nn.Module = Identity()
        if layerscale_init is not None:
            self.ls = LayerScale(in_channels, init_value=layerscale_init, **factory)
        self.drop_path = DropPath(drop_path)

    def reset_parameters(self) -> None:
        reset_children(self)

    def zero_init_last(self) -> None:
        """Zero the output projection so the block starts as the identity."""
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.ls(self.fc2(self.act(self.fc1(self.norm(y)))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))  # (B, C, H, W)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 8, "kernel_size": 3, "layerscale_init": 0.1}
        return Example(kwargs, (example_tensor(2, 8, 5, 5),))

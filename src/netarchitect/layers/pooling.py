"""Pooling: global (avg / max / avg+max / GeM), adaptive, windowed, and anti-aliased BlurPool."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import ParameterFree, check_choice, check_positive_int, example_tensor

__all__ = [
    "POOL_TYPES",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "BlurPool",
    "GeM",
    "GlobalPool",
    "MaxPool2d",
    "binomial_filter",
]

Device = torch.device | str | None
Dtype = torch.dtype | None

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax")


def _spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    if x.dim() < 3:
        raise ValueError(f"pooling expects (B, C, *spatial) input, got shape {tuple(x.shape)}")
    return tuple(range(2, x.dim()))


def _pooled(x: torch.Tensor, pooled: torch.Tensor, flatten: bool) -> torch.Tensor:
    """``(B, C)`` when flattening, else ``(B, C, 1, ..., 1)`` matching ``x``'s rank."""
    return pooled if flatten else pooled.view(pooled.shape + (1,) * (x.dim() - 2))


@register_block("global_pool")
class GlobalPool(ParameterFree, nn.Module):
    """Global pooling over all spatial positions.

    ``pool_type``: ``"avg"``, ``"max"``, ``"avgmax"`` (``(avg + max) / 2``) or
    ``"catavgmax"`` (``[avg; max]``, doubling the channels).

    Shapes:
        input ``(B, C, *spatial)`` -> ``(B, C')`` with ``flatten`` else ``(B, C', 1, ..., 1)``;
        ``C' = 2C`` for ``"catavgmax"``, else ``C``.
    """

    def __init__(
        self,
        *,
        pool_type: str = "avg",
        flatten: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_choice("pool_type", pool_type, POOL_TYPES)
        self.pool_type, self.flatten = pool_type, flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = _spatial_dims(x)
        if self.pool_type == "avg":
            y = x.mean(dims)
        elif self.pool_type == "max":
            y = x.amax(dims)
        elif self.pool_type == "avgmax":
            y = 0.5 * (x.mean(dims) + x.amax(dims))
        else:
            y = torch.cat([x.mean(dims), x.amax(dims)], 1)  # (B, 2C)
        return _pooled(x, y, self.flatten)

    def feature_multiplier(self) -> int:
        """Output channels per input channel (2 for ``"catavgmax"``)."""
        return 2 if self.pool_type == "catavgmax" else 1

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}"

    @classmethod
    def example(cls) -> Example:
        return Example({"pool_type": "catavgmax"}, (example_tensor(2, 4, 5, 5),))


@register_block("gem")
class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al., 2018): ``(mean(clamp(x, eps)^p))^(1/p)``.

    ``p = 1`` is average pooling, ``p → ∞`` max pooling; ``p`` is learnable unless
    ``learnable=False``.

    Shapes:
        input ``(B, C, *spatial)`` -> ``(B, C)`` with ``flatten`` else ``(B, C, 1, ..., 1)``.
    """

    def __init__(
        self,
        *,
        p: float = 3.0,
        eps: float = 1e-6,
        learnable: bool = True,
        flatten: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if not (isinstance(p, (int, float)) and p > 0):
            raise SpecError(f"p={p!r} must be a positive number")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise SpecError(f"eps={eps!r} must be a positive number")
        self.p_init, self.eps, self.flatten = float(p), eps, flatten
        p_tensor = torch.empty((), device=device, dtype=dtype)
        if learnable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.p.fill_(self.p_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp(min=self.eps).pow(self.p).mean(_spatial_dims(x)).pow(1.0 / self.p)
        return _pooled(x, y, self.flatten)

    def extra_repr(self) -> str:
        return f"p={self.p_init}, eps={self.eps}, flatten={self.flatten}"

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 4, 5, 5),))


@register_block("adaptive_avgpool2d")
class AdaptiveAvgPool2d(ParameterFree, nn.AdaptiveAvgPool2d):
    """Average pooling to a fixed ``output_size`` (int or ``(H, W)``).

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C, *output_size)``.
    """

    def __init__(
        self,
        *,
        output_size: int | tuple[int, int] = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        _check_sizes("output_size", output_size)
        super().__init__(output_size)

    @classmethod
    def example(cls) -> Example:
        return Example({"output_size": 2}, (example_tensor(2, 3, 5, 5),))


@register_block("adaptive_maxpool2d")
class AdaptiveMaxPool2d(ParameterFree, nn.AdaptiveMaxPool2d):
    """Max pooling to a fixed ``output_size`` (int or ``(H, W)``).

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C, *output_size)``.
    """

    def __init__(
        self,
        *,
        output_size: int | tuple[int, int] = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        _check_sizes("output_size", output_size)
        super().__init__(output_size)

    @classmethod
    def example(cls) -> Example:
        return Example({"output_size": (2, 3)}, (example_tensor(2, 3, 6, 6),))


def _check_sizes(name: str, value: int | tuple[int, ...]) -> None:
    if not isinstance(value, int | tuple | list):
        raise SpecError(f"{name}={value!r} must be an integer or a list of integers")
    for v in (value,) if isinstance(value, int) else value:
        check_positive_int(name, v)


def _check_window(kernel_size: int, stride: int | None, padding: int) -> None:
    _check_sizes("kernel_size", kernel_size)
    if stride is not None:
        _check_sizes("stride", stride)
    k = kernel_size if isinstance(kernel_size, int) else min(kernel_size)
    p = padding if isinstance(padding, int) else max(padding)
    if not 0 <= p <= k // 2:
        raise SpecError(f"padding={padding} must be between 0 and kernel_size // 2 = {k // 2}")


@register_block("maxpool2d")
class MaxPool2d(ParameterFree, nn.MaxPool2d):
    """Windowed max pooling (``stride`` defaults to ``kernel_size``).

    Shapes:
        input ``(B, C, H, W)`` -> ``(B, C, H', W')``, ``H' = floor((H + 2p - k) / s) + 1``.
    """

    def __init__(
        self,
        *,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        dilation: int = 1,
        ceil_mode: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        _check_window(kernel_size, stride, padding)
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}
        return Example(kwargs, (example_tensor(2, 3, 8, 8),))


@register_block("avgpool2d")
class AvgPool2d(ParameterFree, nn.AvgPool2d):
    """Windowed average pooling (``stride`` defaults to ``kernel_size``).

    Shapes:
        input ``(B, C, H, W)`` -> ``(B, C, H', W')``, ``H' = floor((H + 2p - k) / s) + 1``.
    """

    def __init__(
        self,
        *,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        _check_window(kernel_size, stride, padding)
        super().__init__(
            kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"kernel_size": 2}, (example_tensor(2, 3, 8, 8),))


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter ``b bᵀ / sum`` with ``b_k = C(size - 1, k)``."""
    check_positive_int("filter_size", size)
    b = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    f = torch.outer(b, b)
    return f / f.sum()


@register_block("blurpool")
class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang, 2019, "Making convolutional networks shift-invariant").

    Each channel is blurred with a fixed binomial ``filter_size × filter_size`` filter
    (a non-persistent buffer) and subsampled by ``stride``; the input is padded by
    ``(filter_size - 1) / 2`` (``pad_mode``: reflect, replicate or zeros).

    Shapes:
        input ``(B, in_channels, H, W)`` -> ``(B, in_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        filter_size: int = 3,
        stride: int = 2,
        pad_mode: str = "reflect",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("filter_size", filter_size)
        check_positive_int("stride", stride)
        check_choice("pad_mode", pad_mode, ("reflect", "replicate", "zeros"))
        self.in_channels, self.filter_size, self.stride = in_channels, filter_size, stride
        self.pad_mode = pad_mode
        lo = (filter_size - 1) // 2
        self.padding = (lo, filter_size - 1 - lo) * 2  # (left, right, top, bottom)
        shape = (in_channels, 1, filter_size, filter_size)
        self.register_buffer(
            "filt", torch.empty(shape, device=device, dtype=dtype), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.filt.copy_(binomial_filter(self.filter_size).expand_as(self.filt))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.filter_size > 1:
            mode = "constant" if self.pad_mode == "zeros" else self.pad_mode
            x = F.pad(x, self.padding, mode=mode)
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.in_channels)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, filter_size={self.filter_size}, stride={self.stride}, "
            f"pad_mode={self.pad_mode!r}"
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 3}, (example_tensor(2, 3, 8, 8),))

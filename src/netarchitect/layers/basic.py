"""Basic layers usable from specs: linear, 1-D/2-D convolution, dropout, flatten, identity.

They subclass the ``torch.nn`` layers (so ``isinstance(m, nn.Conv2d)`` and the
fused kernels keep working) and add the block contract: keyword-only
hyper-parameters, argument validation and an ``example()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    MAX_SIZE,
    ParameterFree,
    check_choice,
    check_divides,
    check_positive_int,
    check_probability,
    example_tensor,
)
from ._linear_kernel import linear

__all__ = [
    "Conv1d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Identity",
    "Linear",
    "check_conv_args",
    "check_sizes",
    "same_padding",
]

IntOrTuple = int | tuple[int, ...]


def same_padding(kernel_size: IntOrTuple, dilation: IntOrTuple = 1) -> IntOrTuple:
    """Symmetric padding ``dilation * (k - 1) // 2`` that keeps size at stride 1 for odd ``k``."""
    if isinstance(kernel_size, int) and isinstance(dilation, int):
        return dilation * (kernel_size - 1) // 2
    n = len(kernel_size) if not isinstance(kernel_size, int) else len(dilation)  # type: ignore[arg-type]
    ks = (kernel_size,) * n if isinstance(kernel_size, int) else tuple(kernel_size)
    ds = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
    return tuple(d * (k - 1) // 2 for k, d in zip(ks, ds))


def check_sizes(name: str, value: Any, ndim: int, *, minimum: int = 1) -> None:
    """Raise ``SpecError`` unless ``value`` is an int or ``ndim`` ints, each in
    ``[minimum, MAX_SIZE]``."""
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(values, tuple | list) and len(values) == ndim and all(
        isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= MAX_SIZE for v in values
    )
    if not ok:
        raise SpecError(
            f"{name}={value!r} must be an integer in [{minimum}, {MAX_SIZE:,}] or a list of {ndim}"
        )


def check_conv_args(
    in_channels: int,
    out_channels: int,
    kernel_size: Any,
    groups: int,
    padding_mode: str,
    *,
    ndim: int,
    stride: Any = 1,
    dilation: Any = 1,
    padding: Any = 0,
) -> None:
    """The arguments of an ``ndim``-D convolution (channels, sizes, groups, padding)."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    check_sizes("kernel_size", kernel_size, ndim)
    check_sizes("stride", stride, ndim)
    check_sizes("dilation", dilation, ndim)
    if not (padding in ("same", "valid") or padding is None):
        check_sizes("padding", padding, ndim, minimum=0)
    if padding == "same" and stride not in (1, (1,) * ndim, [1] * ndim):
        raise SpecError(f"padding='same' needs stride 1, got stride={stride!r}")
    check_positive_int("groups", groups)
    check_divides("groups", groups, "in_channels", in_channels)
    check_divides("groups", groups, "out_channels", out_channels)
    check_choice("padding_mode", padding_mode, ("zeros", "reflect", "replicate", "circular"))


class _BatchedConv:
    """Convolutions in specs always see a batch: refuse the unbatched reading of an input."""

    _ndim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self._ndim + 2:
            raise ValueError(
                f"{type(self).__name__} expects (B, C, {self._ndim} spatial dims), got shape "
                f"{tuple(x.shape)}"
            )
        return super().forward(x)  # type: ignore[misc]


@register_block("linear")
class Linear(nn.Linear):
    """Affine map ``y = x Wᵀ + b``.

    Shapes:
        input ``(*, in_features)`` -> output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 8, "out_features": 4}, (example_tensor(2, 8),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)  # few-row inference: the faster kernel


@register_block("conv1d")
class Conv1d(_BatchedConv, nn.Conv1d):
    """1-D convolution; ``padding=None`` keeps the length at stride 1 (odd kernels).

    Shapes:
        input ``(B, in_channels, L)`` -> output ``(B, out_channels, L')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int = 1,
        padding: int | str | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_conv_args(in_channels, out_channels, kernel_size, groups, padding_mode, ndim=1,
                        stride=stride, dilation=dilation, padding=padding)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation) if padding is None else padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )

    _ndim = 1

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 4, "out_channels": 6, "kernel_size": 3}
        return Example(kwargs, (example_tensor(2, 4, 10),))


@register_block("conv2d")
class Conv2d(_BatchedConv, nn.Conv2d):
    """2-D convolution; ``padding=None`` keeps the size at stride 1 (odd kernels).

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H', W')`` with
        ``H' = floor((H + 2p - d(k - 1) - 1) / s) + 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple | str | None = None,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_conv_args(in_channels, out_channels, kernel_size, groups, padding_mode, ndim=2,
                        stride=stride, dilation=dilation, padding=padding)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation) if padding is None else padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2}
        return Example(kwargs, (example_tensor(2, 4, 8, 8),))


@register_block("dropout")
class Dropout(ParameterFree, nn.Dropout):
    """Element-wise dropout with probability ``p`` (identity in eval mode).

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        inplace: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_probability("p", p, allow_one=True)
        super().__init__(p=p, inplace=inplace)

    @classmethod
    def example(cls) -> Example:
        return Example({"p": 0.25}, (example_tensor(2, 8),))


@register_block("flatten")
class Flatten(ParameterFree, nn.Flatten):
    """Flatten dimensions ``start_dim..end_dim`` into one.

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C*H*W)`` with the defaults.
    """

    def __init__(
        self,
        *,
        start_dim: int = 1,
        end_dim: int = -1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(start_dim=start_dim, end_dim=end_dim)

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 3, 4, 4),))


@register_block("identity", kind="norm", aliases=("none",))
@register_block("identity", kind="act", aliases=("none", "linear"))
class Identity(ParameterFree, nn.Identity):
    """Returns its input; accepts and ignores any constructor arguments (a "none" layer).

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 8),))

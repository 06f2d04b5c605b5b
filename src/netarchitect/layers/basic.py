"""Basic layers usable from specs: linear, 1-D/2-D convolution, dropout, flatten, identity.

They subclass the ``torch.nn`` layers (so ``isinstance(m, nn.Conv2d)`` and the
fused kernels keep working) and add the block contract: keyword-only
hyper-parameters, argument validation and an ``example()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import Example, register_block
from ._factory import (
    ParameterFree,
    check_choice,
    check_divides,
    check_positive_int,
    check_probability,
    example_tensor,
)

__all__ = ["Conv1d", "Conv2d", "Dropout", "Flatten", "Identity", "Linear", "same_padding"]

IntOrTuple = int | tuple[int, ...]


def same_padding(kernel_size: IntOrTuple, dilation: IntOrTuple = 1) -> IntOrTuple:
    """Symmetric padding ``dilation * (k - 1) // 2`` that keeps size at stride 1 for odd ``k``."""
    if isinstance(kernel_size, int) and isinstance(dilation, int):
        return dilation * (kernel_size - 1) // 2
    n = len(kernel_size) if not isinstance(kernel_size, int) else len(dilation)  # type: ignore[arg-type]
    ks = (kernel_size,) * n if isinstance(kernel_size, int) else tuple(kernel_size)
    ds = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
    return tuple(d * (k - 1) // 2 for k, d in zip(ks, ds))


def _check_conv(
    in_channels: int, out_channels: int, kernel_size: IntOrTuple, groups: int, padding_mode: str
) -> None:
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    for k in (kernel_size,) if isinstance(kernel_size, int) else kernel_size:
        check_positive_int("kernel_size", k)
    check_positive_int("groups", groups)
    check_divides("groups", groups, "in_channels", in_channels)
    check_divides("groups", groups, "out_channels", out_channels)
    check_choice("padding_mode", padding_mode, ("zeros", "reflect", "replicate", "circular"))


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


@register_block("conv1d")
class Conv1d(nn.Conv1d):
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
        _check_conv(in_channels, out_channels, kernel_size, groups, padding_mode)
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
        kwargs = {"in_channels": 4, "out_channels": 6, "kernel_size": 3}
        return Example(kwargs, (example_tensor(2, 4, 10),))


@register_block("conv2d")
class Conv2d(nn.Conv2d):
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
        _check_conv(in_channels, out_channels, kernel_size, groups, padding_mode)
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

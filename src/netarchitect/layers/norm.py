"""Normalisation layers and the ``get_norm_layer`` factory.

Every norm is built as ``ctor(num_features_or_dim, *, device=None, dtype=None, **kw)``;
the first argument is ``in_channels`` for channels-first norms (batch, group,
instance, LayerNorm2d) and ``dim`` for last-dimension norms (layer, RMS, scale,
LayerScale, DyT), so specs can fill it from the input shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Example, layer_table, register_block
from ._factory import (
    LayerType,
    check_divides,
    check_non_negative,
    check_positive_int,
    example_tensor,
    resolve_layer,
)

__all__ = [
    "NORM_LAYERS",
    "BatchNorm1d",
    "BatchNorm2d",
    "DyT",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "LayerNorm2d",
    "LayerScale",
    "RMSNorm",
    "ScaleNorm",
    "get_norm_layer",
]

Device = torch.device | str | None


def _check_eps(eps: Any) -> None:
    check_non_negative("eps", eps)


class _BatchNormMixin:
    def _init_bn(
        self,
        base: type[nn.modules.batchnorm._BatchNorm],
        in_channels: int,
        eps: float,
        momentum: float | None,
        affine: bool,
        track_running_stats: bool,
        device: Device,
        dtype: torch.dtype | None,
    ) -> None:
        check_positive_int("in_channels", in_channels)
        _check_eps(eps)
        base.__init__(
            self,  # type: ignore[arg-type]
            in_channels,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )


@register_block("batchnorm1d", kind="norm")
class BatchNorm1d(_BatchNormMixin, nn.BatchNorm1d):
    """Batch normalisation (Ioffe & Szegedy, 2015) over channel dim 1 of 2-D/3-D input.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias`` with batch statistics in
    training (updating running averages) and running statistics in eval.

    Shapes:
        input ``(B, C)`` or ``(B, C, L)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self._init_bn(
            nn.BatchNorm1d, in_channels, eps, momentum, affine, track_running_stats, device, dtype
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 4}, (example_tensor(3, 4, 5),))


@register_block("batchnorm2d", kind="norm", aliases=("batchnorm",))
class BatchNorm2d(_BatchNormMixin, nn.BatchNorm2d):
    """Batch normalisation over channel dim 1 of 4-D input (see :class:`BatchNorm1d`).

    Shapes:
        input ``(B, C, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self._init_bn(
            nn.BatchNorm2d, in_channels, eps, momentum, affine, track_running_stats, device, dtype
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 4}, (example_tensor(3, 4, 5, 5),))


@register_block("layernorm", kind="norm")
class LayerNorm(nn.LayerNorm):
    """Layer normalisation (Ba et al., 2016) over the last dimension.

    ``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` (biased variance).

    Shapes:
        input ``(*, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-5,
        affine: bool = True,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("dim", dim)
        _check_eps(eps)
        super().__init__(
            dim, eps=eps, elementwise_affine=affine, bias=bias, device=device, dtype=dtype
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8}, (example_tensor(2, 3, 8),))


@register_block("layernorm2d", kind="norm")
class LayerNorm2d(LayerNorm):
    """Channels-first LayerNorm: normalises dim 1 (``C``) of ``(B, C, *)`` input at each position.

    Equal to ``nn.LayerNorm(C)`` applied to the input with channels moved last (ConvNeXt).

    Shapes:
        input ``(B, C, H, W)`` (any number of trailing dims) -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        eps: float = 1e-5,
        affine: bool = True,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, eps=eps, affine=affine, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)  # (B, C, H, W)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 4}, (example_tensor(2, 4, 3, 3),))


def _default_groups(channels: int, limit: int = 32) -> int:
    """The largest divisor of ``channels`` that is at most ``limit``."""
    return max(g for g in range(1, min(limit, channels) + 1) if channels % g == 0)


@register_block("groupnorm", kind="norm")
class GroupNorm(nn.GroupNorm):
    """Group normalisation (Wu & He, 2018): LayerNorm within each of ``num_groups`` channel groups.

    ``num_groups=None`` picks the largest divisor of ``in_channels`` up to 32.

    Shapes:
        input ``(B, C, *)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_groups: int | None = None,
        eps: float = 1e-5,
        affine: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("in_channels", in_channels)
        _check_eps(eps)
        if num_groups is None:
            num_groups = _default_groups(in_channels)
        check_positive_int("num_groups", num_groups)
        check_divides("num_groups", num_groups, "in_channels", in_channels)
        super().__init__(
            num_groups, in_channels, eps=eps, affine=affine, device=device, dtype=dtype
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 8, "num_groups": 4}, (example_tensor(2, 8, 3, 3),))


@register_block("instancenorm", kind="norm", aliases=("instancenorm1d", "instancenorm2d"))
class InstanceNorm(nn.Module):
    """Instance normalisation (Ulyanov et al., 2016) for any number of spatial dims.

    Each ``(sample, channel)`` is normalised over its spatial positions; equal to
    ``nn.InstanceNorm1d/2d/3d`` for 3-D/4-D/5-D input.

    Shapes:
        input ``(B, C, *spatial)`` with at least one spatial dim -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        _check_eps(eps)
        self.num_features, self.eps, self.momentum = in_channels, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.empty(in_channels, **factory))
            self.bias = nn.Parameter(torch.empty(in_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.empty(in_channels, **factory))
            self.register_buffer("running_var", torch.empty(in_channels, **factory))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
        if self.running_mean is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[1] != self.num_features:
            raise ValueError(
                f"InstanceNorm expects (B, {self.num_features}, *spatial) input, "
                f"got shape {tuple(x.shape)}"
            )
        use_input_stats = self.training or not self.track_running_stats
        return F.instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_input_stats,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 4, "affine": True}, (example_tensor(2, 4, 5, 5),))


@register_block("rmsnorm", kind="norm")
class RMSNorm(nn.RMSNorm):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019) over the last dimension.

    ``y = x / sqrt(mean(x²) + eps) * weight``.

    Shapes:
        input ``(*, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-6,
        affine: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("dim", dim)
        _check_eps(eps)
        super().__init__(dim, eps=eps, elementwise_affine=affine, device=device, dtype=dtype)

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8}, (example_tensor(2, 3, 8),))


@register_block("scalenorm", kind="norm")
class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, 2019): ``y = g * x / max(||x||₂, eps)`` over the last dim.

    ``g`` is one learnable scalar initialised to ``sqrt(dim)``.

    Shapes:
        input ``(*, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-5,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        _check_eps(eps)
        self.dim, self.eps = dim, eps
        self.scale = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, math.sqrt(self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps)
        return x * (self.scale / norm)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8}, (example_tensor(2, 3, 8),))


class _PerChannel(nn.Module):
    """Base of per-channel affine-like layers acting on the last dimension."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        self.dim = dim

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8}, (example_tensor(2, 3, 8),))


@register_block("layerscale", kind="norm")
class LayerScale(_PerChannel):
    """LayerScale (Touvron et al., 2021, CaiT): ``y = gamma ⊙ x`` with ``gamma = init_value``.

    Shapes:
        input ``(*, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        *,
        init_value: float = 1e-5,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim)
        self.init_value = float(init_value)
        self.gamma = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"{self.dim}, init_value={self.init_value}"


@register_block("dyt", kind="norm")
class DyT(_PerChannel):
    """Dynamic Tanh (Zhu et al., 2025): ``y = gamma ⊙ tanh(alpha · x) + beta``.

    A normalisation-free replacement for LayerNorm: ``alpha`` is one learnable scalar
    (initialised to ``alpha_init``), ``gamma``/``beta`` per channel (ones/zeros).

    Shapes:
        input ``(*, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        *,
        alpha_init: float = 0.5,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim)
        self.alpha_init = float(alpha_init)
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.empty((), **factory))
        self.gamma = nn.Parameter(torch.empty(dim, **factory))
        self.beta = nn.Parameter(torch.empty(dim, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, self.alpha_init)
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.gamma + self.beta

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init}"


#: Names accepted by :func:`get_norm_layer` (``_``/``-``/case are ignored when looking up).
#: Names accepted by :func:`get_norm_layer` (``register_block(..., kind="norm")``).
NORM_LAYERS = layer_table("norm")


def get_norm_layer(norm_layer: LayerType) -> Callable[..., nn.Module]:
    """Resolve a normalisation type into a constructor.

    ``norm_layer`` is a name from :data:`NORM_LAYERS` (``"none"``/``None`` give
    :class:`Identity`), a class or a ``functools.partial``. The result is called as
    ``ctor(num_features_or_dim, *, device=None, dtype=None, **kw)``.

    >>> get_norm_layer("rmsnorm")(64, eps=1e-6)
    RMSNorm((64,), eps=1e-06, elementwise_affine=True)
    """
    return resolve_layer(norm_layer, NORM_LAYERS, kind="norm")

"""Skip connections: residual wrappers, stochastic depth, dense, highway and gated residuals.

In specs, residual and dense wiring are DAG merges; the classes here are for
blocks composed in Python (a Transformer block is two :class:`Residual` s).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    LayerType,
    check_choice,
    check_positive_int,
    check_probability,
    example_tensor,
    reset_children,
)
from .activation import get_act_layer
from .basic import Conv2d, Identity, Linear
from .norm import LayerScale, get_norm_layer

__all__ = ["DenseBlock", "DropPath", "GatedResidual", "Highway", "Residual", "drop_path"]

Device = torch.device | str | None
Dtype = torch.dtype | None


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016): zero whole samples with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged; the
    identity when ``p == 0`` or not ``training``.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
    return x * mask.div_(keep)


@register_block("drop_path")
class DropPath(nn.Module):
    """Per-sample stochastic depth: see :func:`drop_path`.

    Shapes:
        input ``(B, *)`` -> same shape.
    """

    def __init__(self, p: float = 0.0, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()
        check_probability("p", p)
        self.p = float(p)

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    @classmethod
    def example(cls) -> Example:
        skip = {"determinism": "drops random samples in training mode"}
        return Example({"p": 0.25}, (example_tensor(4, 3, 5),), skip=skip)


def _branch_scale(scale: str | None, dim: int | None, init: float, factory: dict) -> nn.Module:
    """The module multiplying a residual branch: none, LayerScale, or a ReZero scalar."""
    check_choice("scale", scale, (None, "layerscale", "rezero"))
    if scale == "layerscale":
        return LayerScale(dim, init_value=init, **factory)  # type: ignore[arg-type]
    if scale == "rezero":
        return _ReZero(**factory)
    return Identity()


class _ReZero(nn.Module):
    """ReZero (Bachlechner et al., 2020): ``alpha · x`` with a scalar ``alpha`` starting at 0."""

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros((), device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x


class Residual(nn.Module):
    """Residual connection around ``fn`` with a choice of norm placement and branch scale.

    - ``norm="pre"``: ``x + s · fn(norm(x))`` (pre-LN Transformer, ResNet v2);
    - ``norm="post"``: ``norm(x + s · fn(x))`` (original Transformer);
    - ``norm="sandwich"``: ``x + s · norm2(fn(norm1(x)))`` (CogView / NormFormer);
    - ``norm=None``: ``x + s · fn(x)``.

    ``s`` is 1, a per-channel LayerScale (``scale="layerscale"``, init
    ``layerscale_init``) or a ReZero scalar starting at 0 (``scale="rezero"``), and
    the branch goes through :class:`DropPath` (``drop_path``). Extra forward
    arguments go to ``fn``. ``dim`` (last-dim channels) is needed by the norms and
    by LayerScale. Not a registered block: it wraps a module (specs use DAG merges).

    Shapes:
        input ``(*, dim)`` -> same shape; ``fn`` must keep the shape.
    """

    def __init__(
        self,
        fn: nn.Module,
        *,
        dim: int | None = None,
        norm: str | None = "pre",
        norm_layer: LayerType = "layernorm",
        scale: str | None = None,
        layerscale_init: float = 1e-5,
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if not isinstance(fn, nn.Module):
            raise TypeError(f"fn must be an nn.Module, got {type(fn).__name__}")
        check_choice("norm", norm, (None, "pre", "post", "sandwich"))
        needs_dim = norm is not None or scale == "layerscale"
        if needs_dim and dim is None:
            raise SpecError(f"Residual(norm={norm!r}, scale={scale!r}) needs dim=")
        if dim is not None:
            check_positive_int("dim", dim)
        factory = {"device": device, "dtype": dtype}
        make_norm = get_norm_layer(norm_layer if norm is not None else None)
        self.fn, self.mode = fn, norm
        self.norm = make_norm(dim, **factory)
        self.norm2 = make_norm(dim, **factory) if norm == "sandwich" else Identity()
        self.scale = _branch_scale(scale, dim, layerscale_init, factory)
        self.drop_path = DropPath(drop_path)

    def reset_parameters(self) -> None:
        reset_children(self)

    def zero_init_last(self) -> None:
        """Zero the branch's output so the block starts as the identity (``post``: as
        ``norm(x)``): ``fn.zero_init_last()`` when ``fn`` defines it, else the weight and
        bias of the last linear or convolution layer of ``fn`` (registration order:
        ``out_proj`` of attention, ``fc2``/``down_proj`` of an MLP)."""
        if hasattr(self.fn, "zero_init_last"):
            self.fn.zero_init_last()
            return
        last = None
        for module in self.fn.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                last = module
        if last is None:
            raise TypeError(f"Residual.zero_init_last: {type(self.fn).__name__} has no linear or conv layer")
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.mode == "post":
            return self.norm(x + self.drop_path(self.scale(self.fn(x, *args, **kwargs))))
        branch = self.norm2(self.fn(self.norm(x), *args, **kwargs))
        return x + self.drop_path(self.scale(branch))

    def extra_repr(self) -> str:
        return f"norm={self.mode!r}"


class GatedResidual(nn.Module):
    """Residual with a learned, input-dependent gate: ``x + g ⊙ fn(x)``, ``g = σ(W x + b)``.

    ``W`` starts at zero and ``b`` at ``gate_bias``, so initially every channel is
    gated by the constant ``σ(gate_bias)`` (negative values start near identity).

    Shapes:
        input ``(*, dim)`` -> same shape; ``fn`` must keep the shape.
    """

    def __init__(
        self,
        fn: nn.Module,
        *,
        dim: int,
        gate_bias: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if not isinstance(fn, nn.Module):
            raise TypeError(f"fn must be an nn.Module, got {type(fn).__name__}")
        check_positive_int("dim", dim)
        self.fn, self.gate_bias = fn, float(gate_bias)
        self.gate = Linear(dim, dim, device=device, dtype=dtype)
        self._init_gate()

    def _init_gate(self) -> None:
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def reset_parameters(self) -> None:
        reset_children(self)
        self._init_gate()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x + torch.sigmoid(self.gate(x)) * self.fn(x, *args, **kwargs)


@register_block("highway")
class Highway(nn.Module):
    """Highway layer (Srivastava et al., 2015): ``y = H(x) · T(x) + x · (1 - T(x))``.

    ``H(x) = act(W_H x + b_H)`` and the transform gate ``T(x) = σ(W_T x + b_T)``,
    with ``b_T`` initialised to ``gate_bias`` (negative: carry the input at first).

    Shapes:
        input ``(*, in_features)`` -> same shape.
    """

    def __init__(
        self,
        in_features: int,
        *,
        act_layer: LayerType = "relu",
        gate_bias: float = -1.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        factory = {"device": device, "dtype": dtype}
        self.gate_bias = float(gate_bias)
        self.transform = Linear(in_features, in_features, **factory)
        self.gate = Linear(in_features, in_features, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def reset_parameters(self) -> None:
        reset_children(self)
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))
        return self.act(self.transform(x)) * t + x * (1 - t)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 8}, (example_tensor(3, 8),))


class _DenseLayer(nn.Module):
    """DenseNet-BC layer: norm-act-conv1x1 (``bn_size · growth``) then norm-act-conv3x3."""

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        norm_layer: LayerType,
        act_layer: LayerType,
        factory: dict,
    ) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        make_norm, make_act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        self.norm1 = make_norm(in_channels, **factory)
        self.act1 = make_act(**factory)
        self.conv1 = Conv2d(in_channels, mid, kernel_size=1, bias=False, **factory)
        self.norm2 = make_norm(mid, **factory)
        self.act2 = make_act(**factory)
        self.conv2 = Conv2d(mid, growth_rate, kernel_size=3, bias=False, **factory)
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.act1(self.norm1(x)))
        return self.dropout(self.conv2(self.act2(self.norm2(x))))


@register_block("dense_block")
class DenseBlock(nn.Module):
    """DenseNet dense block (Huang et al., 2017), BC variant as in torchvision.

    Layer ``i`` sees the concatenation of the input and all previous outputs
    (``in_channels + i · growth_rate`` channels) and adds ``growth_rate`` channels.

    Shapes:
        input ``(B, in_channels, H, W)`` ->
        output ``(B, in_channels + num_layers · growth_rate, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_layers: int,
        growth_rate: int,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in [
            ("in_channels", in_channels),
            ("growth_rate", growth_rate),
            ("bn_size", bn_size),
        ]:
            check_positive_int(name, value)
        check_positive_int("num_layers", num_layers, maximum=1024)
        check_probability("drop_rate", drop_rate)
        factory = {"device": device, "dtype": dtype}
        self.out_channels = in_channels + num_layers * growth_rate
        self.layers = nn.ModuleList(
            _DenseLayer(
                in_channels + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                norm_layer,
                act_layer,
                factory,
            )
            for i in range(num_layers)
        )

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))  # (B, C_in + i·k, H, W)
        return torch.cat(features, dim=1)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 4, "num_layers": 2, "growth_rate": 3, "bn_size": 2}
        # a smooth activation: with ReLU, bias-free 1x1 convs of all-zero pixels sit exactly on
        # the kink in eval mode, which finite-difference gradcheck cannot differentiate
        kwargs["act_layer"] = "silu"
        return Example(kwargs, (example_tensor(2, 4, 5, 5),))

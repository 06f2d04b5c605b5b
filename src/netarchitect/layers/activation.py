"""Activation layers and the ``get_act_layer`` factory.

Every activation is built as ``ctor(*, device=None, dtype: Dtype = None, **kw)``: parameter-free
ones accept and ignore ``device``/``dtype`` so blocks can always pass them.
Gated feed-forward blocks (GLU, SwiGLU, GEGLU, ReGLU) live in ``layers/mlp.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Example, layer_table, register_block
from ._factory import (
    LayerType,
    ParameterFree,
    check_choice,
    check_positive_int,
    example_tensor,
    resolve_layer,
)

__all__ = [
    "ACT_LAYERS",
    "ELU",
    "GELU",
    "GELUTanh",
    "HardSigmoid",
    "HardSwish",
    "LeakyReLU",
    "LearnableSwish",
    "Mish",
    "PReLU",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "SquaredReLU",
    "Tanh",
    "get_act_layer",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


class _Activation(ParameterFree):
    """Mixin: the shared ``example()`` and a no-op ``reset_parameters()``."""

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 4, 5),))


class _InplaceActivation(_Activation):
    """Mixin for torch activations with an ``inplace`` flag (and nothing else to configure)."""

    def __init__(self, *, inplace: bool = False, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__(inplace=inplace)


@register_block("relu", kind="act")
class ReLU(_InplaceActivation, nn.ReLU):
    """``max(0, x)``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("relu6", kind="act")
class ReLU6(_InplaceActivation, nn.ReLU6):
    """``min(max(0, x), 6)`` (MobileNetV2).

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("leaky_relu", kind="act")
class LeakyReLU(_Activation, nn.LeakyReLU):
    """``max(0, x) + negative_slope * min(0, x)``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(
        self,
        *,
        negative_slope: float = 0.01,
        inplace: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(negative_slope=negative_slope, inplace=inplace)


@register_block("gelu", kind="act")
class GELU(_Activation, nn.GELU):
    """Gaussian error linear unit (Hendrycks & Gimpel, 2016): ``x · Φ(x)``.

    ``approximate="tanh"`` uses the tanh approximation (see :class:`GELUTanh`).

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(
        self, *, approximate: str = "none", device: Device = None, dtype: Dtype = None
    ) -> None:
        check_choice("approximate", approximate, ("none", "tanh"))
        super().__init__(approximate=approximate)


@register_block("gelu_tanh", kind="act")
class GELUTanh(GELU):
    """GELU with the tanh approximation ``0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__(approximate="tanh")


@register_block("silu", kind="act", aliases=("swish",))
class SiLU(_InplaceActivation, nn.SiLU):
    """SiLU / Swish (Ramachandran et al., 2017; Elfwing et al., 2018): ``x · σ(x)``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("mish", kind="act")
class Mish(_InplaceActivation, nn.Mish):
    """Mish (Misra, 2019): ``x · tanh(softplus(x))``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("hardswish", kind="act")
class HardSwish(_InplaceActivation, nn.Hardswish):
    """Hard swish (MobileNetV3): ``x · relu6(x + 3) / 6``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("hardsigmoid", kind="act")
class HardSigmoid(_InplaceActivation, nn.Hardsigmoid):
    """Hard sigmoid (MobileNetV3): ``relu6(x + 3) / 6``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """


@register_block("relu2", kind="act", aliases=("squared_relu",))
class SquaredReLU(_Activation, nn.Module):
    """Squared ReLU (So et al., 2021, Primer): ``relu(x)²``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(x))


@register_block("elu", kind="act")
class ELU(_Activation, nn.ELU):
    """Exponential linear unit (Clevert et al., 2015): ``x`` if ``x > 0`` else ``α(eˣ - 1)``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        inplace: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(alpha=alpha, inplace=inplace)


@register_block("tanh", kind="act")
class Tanh(_Activation, nn.Tanh):
    """Hyperbolic tangent.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()


@register_block("sigmoid", kind="act")
class Sigmoid(_Activation, nn.Sigmoid):
    """Logistic sigmoid ``σ(x) = 1 / (1 + e⁻ˣ)``.

    Shapes:
        input ``(*)`` -> output ``(*)``.
    """

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()


@register_block("prelu", kind="act")
class PReLU(nn.PReLU):
    """Parametric ReLU (He et al., 2015): ``max(0, x) + a · min(0, x)`` with learnable ``a``.

    ``num_parameters`` is 1 (shared) or the channel count (dim 1 of the input).

    Shapes:
        input ``(B, C, *)`` -> same shape.
    """

    def __init__(
        self,
        *,
        num_parameters: int = 1,
        init: float = 0.25,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("num_parameters", num_parameters)
        super().__init__(num_parameters=num_parameters, init=init, device=device, dtype=dtype)

    @classmethod
    def example(cls) -> Example:
        return Example({"num_parameters": 4}, (example_tensor(2, 4, 5),))


@register_block("learnable_swish", kind="act")
class LearnableSwish(nn.Module):
    """Swish with a learnable slope (Ramachandran et al., 2017): ``x · σ(β x)``.

    ``β`` is one scalar (``num_channels=None``) or one value per channel along
    ``channel_dim``, initialised to ``beta_init``; ``β = 1`` is SiLU, ``β → ∞`` ReLU.

    Shapes:
        input ``(*)`` (with ``num_channels`` entries along ``channel_dim``) -> same shape.
    """

    def __init__(
        self,
        *,
        num_channels: int | None = None,
        channel_dim: int = 1,
        beta_init: float = 1.0,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_channels is not None:
            check_positive_int("num_channels", num_channels)
        self.num_channels, self.channel_dim, self.beta_init = num_channels, channel_dim, beta_init
        shape = () if num_channels is None else (num_channels,)
        self.beta = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.beta, self.beta_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta
        if self.num_channels is not None:
            dim = self.channel_dim % x.dim()
            beta = beta.view((-1,) + (1,) * (x.dim() - dim - 1))  # (C, 1, ..., 1)
        return x * torch.sigmoid(beta * x)

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, channel_dim={self.channel_dim}, "
            f"beta_init={self.beta_init}"
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"num_channels": 4}, (example_tensor(2, 4, 5),))


#: Names accepted by :func:`get_act_layer` (``_``/``-``/case are ignored when looking up).
#: Names accepted by :func:`get_act_layer` (``register_block(..., kind="act")``).
ACT_LAYERS = layer_table("act")


def get_act_layer(act_layer: LayerType) -> Callable[..., nn.Module]:
    """Resolve an activation type into a constructor.

    ``act_layer`` is a name from :data:`ACT_LAYERS` (``"none"``/``None`` give
    :class:`Identity`), a class or a ``functools.partial``. The result is called as
    ``ctor(*, device=None, dtype: Dtype = None, **kw)``.

    >>> get_act_layer("gelu_tanh")()
    GELUTanh(approximate='tanh')
    """
    return resolve_layer(act_layer, ACT_LAYERS, kind="activation")

"""Token-wise feed-forward blocks: the Transformer MLP and gated (GLU-family) variants."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, layer_table, register_block
from ._factory import (
    LayerType,
    check_non_negative,
    check_positive_int,
    check_probability,
    example_tensor,
    resolve_layer,
)
from .activation import get_act_layer
from .basic import Linear

__all__ = [
    "GEGLU",
    "GLU",
    "MLP",
    "MLP_LAYERS",
    "GatedMLP",
    "ReGLU",
    "SwiGLU",
    "gated_hidden_dim",
    "get_mlp_layer",
    "make_mlp",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


def _hidden(dim: int, hidden_dim: int | None, mlp_ratio: float) -> int:
    check_positive_int("dim", dim)
    if hidden_dim is not None:
        check_positive_int("hidden_dim", hidden_dim)
        return hidden_dim
    check_non_negative("mlp_ratio", mlp_ratio)
    hidden = int(dim * mlp_ratio)
    if hidden < 1:
        raise SpecError(f"mlp_ratio={mlp_ratio} gives hidden_dim={hidden} for dim={dim}")
    return hidden


def gated_hidden_dim(dim: int, mlp_ratio: float = 4.0, multiple_of: int = 1) -> int:
    """Hidden width of a gated MLP with about the parameters of a plain ``mlp_ratio`` MLP.

    ``ceil_to(int(2/3 · mlp_ratio · dim), multiple_of)`` — LLaMA's rule (three matrices
    instead of two); ``dim=4096, multiple_of=256`` gives LLaMA-7B's 11008.
    """
    check_positive_int("multiple_of", multiple_of)
    hidden = _hidden(dim, None, 2 * mlp_ratio / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


@register_block("mlp", kind="mlp")
class MLP(nn.Module):
    """Two-layer feed-forward network: ``fc2(drop(act(fc1(x))))`` followed by dropout.

    ``hidden_dim`` defaults to ``int(mlp_ratio · dim)``; ``out_dim`` to ``dim``.

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
        act_layer: LayerType = "gelu",
        bias: bool = True,
        drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        hidden = _hidden(dim, hidden_dim, mlp_ratio)
        out_dim = out_dim or dim
        check_positive_int("out_dim", out_dim)
        check_probability("drop", drop)
        factory = {"device": device, "dtype": dtype}
        self.fc1 = Linear(dim, hidden, bias=bias, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden, out_dim, bias=bias, **factory)
        self.drop2 = nn.Dropout(drop)

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "hidden_dim": 12}, (example_tensor(2, 3, 8),))

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


@register_block("gated_mlp", kind="mlp", aliases=("gated",))
class GatedMLP(nn.Module):
    """Gated feed-forward (Shazeer 2020, "GLU Variants Improve Transformer").

    ``down_proj(drop(act(gate_proj(x)) ⊙ up_proj(x)))`` followed by dropout, with the
    LLaMA names ``gate_proj`` / ``up_proj`` / ``down_proj`` (W1, W3, W2 of the paper).
    ``hidden_dim`` defaults to :func:`gated_hidden_dim` (``≈ 2/3 · mlp_ratio · dim``
    rounded up to ``multiple_of``), so the three matrices hold about as many
    weights as a plain MLP. No biases by default, as in the paper and LLaMA.
    The named variants fix the default activation: :class:`GLU` (sigmoid),
    :class:`SwiGLU` (SiLU), :class:`GEGLU` (GELU), :class:`ReGLU` (ReLU).

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        multiple_of: int = 1,
        out_dim: int | None = None,
        act_layer: LayerType = "silu",
        bias: bool = False,
        drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if hidden_dim is None:
            hidden = gated_hidden_dim(dim, mlp_ratio, multiple_of)
        else:
            hidden = _hidden(dim, hidden_dim, mlp_ratio)
        out_dim = out_dim or dim
        check_positive_int("out_dim", out_dim)
        check_probability("drop", drop)
        factory = {"device": device, "dtype": dtype}
        self.gate_proj = Linear(dim, hidden, bias=bias, **factory)
        self.up_proj = Linear(dim, hidden, bias=bias, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.drop1 = nn.Dropout(drop)
        self.down_proj = Linear(hidden, out_dim, bias=bias, **factory)
        self.drop2 = nn.Dropout(drop)

    def reset_parameters(self) -> None:
        for proj in (self.gate_proj, self.up_proj, self.down_proj):
            proj.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "hidden_dim": 12}, (example_tensor(2, 3, 8),))

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.gate_proj(x)) * self.up_proj(x)
        return self.drop2(self.down_proj(self.drop1(hidden)))


class _GatedVariant(GatedMLP):
    """A :class:`GatedMLP` whose default activation is ``default_act``."""

    default_act = "silu"

    def __init__(self, dim: int, *, act_layer: LayerType | None = None, **kwargs: Any) -> None:
        super().__init__(dim, act_layer=act_layer or self.default_act, **kwargs)


@register_block("glu", kind="mlp")
class GLU(_GatedVariant):
    """GLU feed-forward (Dauphin et al. 2017): ``down(σ(gate(x)) ⊙ up(x))``; see :class:`GatedMLP`.

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    default_act = "sigmoid"


@register_block("swiglu", kind="mlp")
class SwiGLU(_GatedVariant):
    """SwiGLU feed-forward (Shazeer 2020, LLaMA): ``down(silu(gate(x)) ⊙ up(x))``.

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    default_act = "silu"


@register_block("geglu", kind="mlp")
class GEGLU(_GatedVariant):
    """GEGLU feed-forward (Shazeer 2020): ``down(gelu(gate(x)) ⊙ up(x))``.

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    default_act = "gelu"


@register_block("reglu", kind="mlp")
class ReGLU(_GatedVariant):
    """ReGLU feed-forward (Shazeer 2020): ``down(relu(gate(x)) ⊙ up(x))``.

    Shapes:
        input ``(*, dim)`` -> output ``(*, out_dim)``.
    """

    default_act = "relu"


#: Names accepted by :func:`get_mlp_layer`.
#: Names accepted by :func:`get_mlp_layer` (``register_block(..., kind="mlp")``).
MLP_LAYERS = layer_table("mlp")


def get_mlp_layer(mlp_layer: LayerType) -> Callable[..., nn.Module]:
    """Resolve a feed-forward type (a name from :data:`MLP_LAYERS`, a class or a partial).

    The result is called as ``ctor(dim, *, hidden_dim=, mlp_ratio=, drop=, device=, dtype=)``.
    """
    if mlp_layer is None:
        raise SpecError("mlp_layer must be a name, a class or a partial, not None")
    return resolve_layer(mlp_layer, MLP_LAYERS, kind="mlp")


def make_mlp(
    mlp_layer: LayerType, dim: int, *, act_layer: LayerType = None, **kwargs: Any
) -> nn.Module:
    """Build ``get_mlp_layer(mlp_layer)(dim, **kwargs)``; ``act_layer=None`` keeps its default."""
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    return get_mlp_layer(mlp_layer)(dim, **kwargs)

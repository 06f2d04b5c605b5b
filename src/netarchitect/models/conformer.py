"""Conformer (Gulati et al. 2020): convolution-augmented Transformer blocks for sequences (speech).

Each block is a macaron sandwich ``x + ½FF(x) → x + MHSA(x) → x + Conv(x) → x + ½FF(x)
→ LN``; the convolution module is ``pointwise conv (2·dim) → GLU → depthwise conv →
BatchNorm → SiLU → pointwise conv``. Attention uses the layer library's relative schemes
(learned relative bias by default, or RoPE) in place of Transformer-XL's sinusoidal
relative encoding. Named sizes: ``conformer-s``, ``conformer-m``, ``conformer-l``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..layers._factory import (
    LayerType,
    check_positive_int,
    check_probability,
    example_tensor,
    reset_children,
)
from ..layers.activation import get_act_layer
from ..layers.attention import MultiHeadAttention
from ..layers.connections import Residual
from ..layers.masks import padding_mask
from ..layers.mlp import MLP
from ..layers.norm import get_norm_layer
from ..registry import Example, register_block
from ._graph_builder import GraphBuilder
from ._lm_base import SequenceEncoder, compact_params
from ._variants import register_sizes

__all__ = [
    "CONFORMER_SIZES",
    "ConformerBlock",
    "ConformerConvModule",
    "ConformerSubsampling",
    "conformer",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("conformer_conv")
class ConformerConvModule(nn.Module):
    """Conformer convolution module (without its pre-norm, which the residual applies).

    ``drop(pw2(act(norm(depthwise(GLU(pw1(x)))))))`` over time; ``pw1`` widens to
    ``2·dim`` for the GLU gate, the depthwise conv has ``kernel_size`` ("same" padding).
    Padded steps (``key_padding_mask`` True) are zeroed before the depthwise conv so
    they do not leak into real ones.

    Shapes:
        x: (B, T, dim) -> (B, T, dim).
    """

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 31,
        norm_layer: LayerType = "batchnorm1d",
        act_layer: LayerType = "silu",
        drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("kernel_size", kernel_size)
        check_probability("drop", drop)
        factory = {"device": device, "dtype": dtype}
        self.pointwise1 = nn.Conv1d(dim, 2 * dim, 1, **factory)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding="same", groups=dim, **factory)
        self.norm = get_norm_layer(norm_layer)(dim, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.pointwise2 = nn.Conv1d(dim, dim, 1, **factory)
        self.drop = nn.Dropout(drop)

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "kernel_size": 5}, (example_tensor(2, 6, 8),))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = F.glu(self.pointwise1(x.transpose(1, 2)), dim=1)  # (B, dim, T)
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask[:, None, :], 0.0)
        x = self.act(self.norm(self.depthwise(x)))
        return self.drop(self.pointwise2(x)).transpose(1, 2)  # (B, T, dim)


class _HalfStep(nn.Module):
    """``0.5 · fn(x)``: the macaron feed-forward's half-step residual."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * self.fn(x)


@register_block("conformer_block")
class ConformerBlock(nn.Module):
    """Conformer block: ``x + ½FF → x + MHSA → x + Conv → x + ½FF → LN`` (pre-norm branches).

    Feed-forwards are ``mlp_ratio``-wide SiLU MLPs; ``pos`` is the self-attention's
    position scheme (``"relative"``: learned bias of the clipped distance up to
    ``max_positions``; ``"rope"``; ``None``). ``key_padding_mask`` (True = padding)
    masks attention keys and the convolution's input; a model-level ``attention_mask``
    (1 = frame) at the input's frame rate is taken every ``mask_stride`` frames (the
    encoder's subsampling factor).

    Shapes:
        x: (B, T, dim) -> (B, T, dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        kernel_size: int = 31,
        pos: str | None = "relative",
        max_positions: int = 64,
        norm_layer: LayerType = "layernorm",
        conv_norm_layer: LayerType = "batchnorm1d",
        act_layer: LayerType = "silu",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        mask_stride: int = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("mask_stride", mask_stride)
        self.mask_stride = mask_stride
        factory = {"device": device, "dtype": dtype}
        residual = {"dim": dim, "norm": "pre", "norm_layer": norm_layer, "drop_path": drop_path}

        def feed_forward() -> Residual:
            mlp = MLP(dim, mlp_ratio=mlp_ratio, act_layer=act_layer, drop=drop, **factory)
            return Residual(_HalfStep(mlp), **residual, **factory)

        self.ff1 = feed_forward()
        attn = MultiHeadAttention(
            dim, num_heads, pos=pos, max_positions=max_positions, attn_drop=attn_drop,
            proj_drop=drop, **factory,
        )
        self.attn = Residual(attn, **residual, **factory)
        conv = ConformerConvModule(
            dim, kernel_size=kernel_size, norm_layer=conv_norm_layer, act_layer=act_layer,
            drop=drop, **factory,
        )
        self.conv = Residual(conv, **residual, **factory)
        self.ff2 = feed_forward()
        self.norm = get_norm_layer(norm_layer)(dim, **factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"dim": 16, "num_heads": 2, "kernel_size": 5, "mlp_ratio": 2.0}
        return Example(kwargs, (example_tensor(2, 6, 16),))

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        if attention_mask is not None:
            attention_mask = attention_mask[:, :: self.mask_stride]
            key_padding_mask = padding_mask(attention_mask, x.shape[0], x.shape[1])
        x = self.ff1(x)
        x = self.attn(x, key_padding_mask=key_padding_mask)
        x = self.conv(x, key_padding_mask=key_padding_mask)
        return self.norm(self.ff2(x))


@register_block("conformer_subsample")
class ConformerSubsampling(nn.Module):
    """Time subsampling then projection: ``proj(act(conv_s2(... act(conv_s2(x)))))``.

    ``factor`` (1, 2, 4, ...: a power of two) stacks stride-2 Conv1d + SiLU layers over
    time (Gulati et al. use 4x); a linear layer projects to ``dim``.

    Shapes:
        x: (B, T, in_features) -> (B, ceil(T / factor), dim).
    """

    def __init__(
        self,
        in_features: int,
        dim: int,
        *,
        factor: int = 4,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("dim", dim)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
            raise SpecError(f"factor={factor!r} must be a power of two", path="factor")
        factory = {"device": device, "dtype": dtype}
        self.factor = factor
        convs: list[nn.Module] = []
        channels = in_features
        for _ in range(factor.bit_length() - 1):
            convs += [nn.Conv1d(channels, dim, 3, stride=2, padding=1, **factory), nn.SiLU()]
            channels = dim
        self.subsampling = nn.Sequential(*convs)
        self.proj = nn.Linear(channels, dim, **factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 6, "dim": 8, "factor": 2}, (example_tensor(2, 7, 6),))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected features (B, T, in_features), got {tuple(x.shape)}")
        if len(self.subsampling):
            x = self.subsampling(x.transpose(1, 2)).transpose(1, 2)  # (B, T', dim)
        return self.proj(x)


#: Gulati et al.'s encoder sizes (80 log-mel features in, 4x subsampling).
CONFORMER_SIZES: dict[str, dict[str, Any]] = {
    "conformer-s": {"dim": 144, "depth": 16, "num_heads": 4},
    "conformer-m": {"dim": 256, "depth": 16, "num_heads": 4},
    "conformer-l": {"dim": 512, "depth": 17, "num_heads": 8},
}


def conformer(
    *,
    in_features: int = 80,
    dim: int = 144,
    depth: int = 16,
    num_heads: int = 4,
    subsample: int = 4,
    kernel_size: int = 31,
    num_classes: int = 0,
    mlp_ratio: float = 4.0,
    pos: str | None = "relative",
    max_positions: int = 64,
    drop: float = 0.0,
    attn_drop: float = 0.0,
    drop_path: float = 0.0,
    seq_len: int = 64,
    name: str = "conformer",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> SequenceEncoder:
    """A Conformer encoder: time subsampling and projection, Conformer blocks, and with
    ``num_classes`` a per-frame linear head (e.g. for CTC).

    ``attention_mask`` (B, T) is 1 for real frames, at the input frame rate. ``seq_len``
    is the number of frames the spec declares (any number runs).

    Shapes:
        x: (B, T, in_features) -> (B, T / subsample, dim or num_classes).
    """
    check_positive_int("depth", depth)
    check_positive_int("seq_len", seq_len)
    b = GraphBuilder(name, {"x": (seq_len, in_features)})
    b.add("subsample", "conformer_subsample", {"dim": dim, "factor": subsample})
    if drop:
        b.add("drop", "dropout", {"p": drop})
    blocks = []
    for i in range(depth):
        params = {
            "num_heads": num_heads, "mlp_ratio": mlp_ratio, "kernel_size": kernel_size,
            "pos": pos, "max_positions": max_positions, "drop": drop, "attn_drop": attn_drop,
            "drop_path": drop_path * i / max(depth - 1, 1), "mask_stride": subsample,
        }
        blocks.append(b.add(f"block_{i}", "conformer_block",
                            compact_params("conformer_block", params), context=["attention_mask"]))
    features = b.last
    if num_classes:
        b.add("head", "linear", {"out_features": num_classes})
    roles = {"kind": "encoder", "embedding": "subsample", "blocks": blocks,
             "features": features, "head": "head" if num_classes else None}
    spec = b.make_spec({k: v for k, v in roles.items() if v is not None})
    return GraphBuilder.build_spec(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _example() -> Example:
    kwargs = {
        "in_features": 12, "dim": 32, "depth": 2, "num_heads": 4, "kernel_size": 5,
        "subsample": 2, "mlp_ratio": 2.0,
    }
    return Example(kwargs, (example_tensor(2, 10, 12),))


register_sizes(conformer, CONFORMER_SIZES, example=_example, describe="Conformer")

"""Perceiver (Jaegle et al. 2021): a small latent array cross-attends to a long input.

Cost is linear in the input length: ``num_latents`` learned vectors attend to the
``M`` input elements (``O(N·M)``), then a latent Transformer works on the ``N`` latents
only (``O(N²)``); the pair repeats ``num_repeats`` times. One-dimensional Fourier
position features (the paper's) can be appended to the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..layers._factory import LayerType, check_positive_int, example_tensor, reset_children
from ..layers.attention import MultiHeadAttention
from ..layers.connections import Residual
from ..layers.mlp import MLP
from ..layers.norm import get_norm_layer
from ..layers.transformer import TransformerBlock
from ..registry import Example, register_block, register_model
from ._lm_base import padding_mask

__all__ = ["PerceiverCrossBlock", "PerceiverEncoder", "fourier_features", "perceiver"]

Device = torch.device | str | None
Dtype = torch.dtype | None


def fourier_features(length: int, num_bands: int, max_freq: float, device: Any = None) -> Tensor:
    """Perceiver position features of ``length`` positions ``p ∈ [-1, 1]``.

    ``[p, sin(π f_k p), cos(π f_k p)]`` for ``num_bands`` frequencies ``f_k`` spaced
    linearly from 1 to ``max_freq / 2``. Shapes: -> (length, 2·num_bands + 1).
    """
    pos = torch.linspace(-1.0, 1.0, length, device=device)
    freqs = torch.linspace(1.0, max_freq / 2, num_bands, device=device)
    angles = math.pi * pos[:, None] * freqs[None]  # (T, bands)
    return torch.cat((pos[:, None], angles.sin(), angles.cos()), dim=-1)


@register_block("perceiver_cross_attention")
class PerceiverCrossBlock(nn.Module):
    """Latents attend to an input: ``x + Attn(LN(x), LN(c))`` then ``x + MLP(LN(x))``.

    Shapes:
        x: (B, N, dim); context: (B, M, context_dim) -> (B, N, dim).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        *,
        num_heads: int = 1,
        mlp_ratio: float = 4.0,
        norm_layer: LayerType = "layernorm",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("context_dim", context_dim)
        factory = {"device": device, "dtype": dtype}
        residual = {"dim": dim, "norm": "pre", "norm_layer": norm_layer, **factory}
        self.context_norm = get_norm_layer(norm_layer)(context_dim, **factory)
        attn = MultiHeadAttention(
            dim, num_heads, context_dim=context_dim, attn_drop=attn_drop, proj_drop=drop,
            **factory,
        )
        self.attn = Residual(attn, **residual)
        self.mlp = Residual(MLP(dim, mlp_ratio=mlp_ratio, drop=drop, **factory), **residual)

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"dim": 16, "context_dim": 8, "num_heads": 2}
        return Example(kwargs, (example_tensor(2, 4, 16), example_tensor(2, 10, 8, seed=1)))

    def forward(
        self, x: Tensor, context: Tensor, *, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        x = self.attn(x, self.context_norm(context), key_padding_mask=key_padding_mask)
        return self.mlp(x)


class PerceiverEncoder(nn.Module):
    """Perceiver encoder: ``num_repeats`` × (cross-attend to the input, ``depth`` latent blocks).

    ``num_latents`` learned latents of ``latent_dim`` read the input through
    ``num_cross_heads``-head cross-attention; latent blocks are pre-norm
    :class:`~netarchitect.layers.transformer.TransformerBlock` s. With ``share_weights``
    (the paper's choice) repeats after the first reuse one cross-attention, and all
    repeats one latent stack. ``num_fourier_bands`` appends :func:`fourier_features`
    (``max_freq``) to each input element. With ``num_classes`` the mean latent goes
    through a linear head; otherwise the latents are returned.

    ``attention_mask`` (B, M) is 1 for real input elements.

    Shapes:
        x: (B, M, in_features) -> latents (B, num_latents, latent_dim) or logits (B, num_classes).
    """

    def __init__(
        self,
        in_features: int,
        *,
        num_latents: int = 256,
        latent_dim: int = 512,
        depth: int = 6,
        num_repeats: int = 1,
        num_heads: int = 8,
        num_cross_heads: int = 1,
        mlp_ratio: float = 4.0,
        share_weights: bool = True,
        num_fourier_bands: int = 0,
        max_freq: float = 64.0,
        num_classes: int = 0,
        norm_layer: LayerType = "layernorm",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features), ("num_latents", num_latents),
            ("depth", depth), ("num_repeats", num_repeats),
        ):
            check_positive_int(name, value)
        factory = {"device": device, "dtype": dtype}
        self.num_fourier_bands, self.max_freq = num_fourier_bands, max_freq
        self.num_repeats = num_repeats
        self.num_features, self.num_classes = latent_dim, num_classes
        context_dim = in_features + (2 * num_fourier_bands + 1 if num_fourier_bands else 0)
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim, **factory))
        common = {
            "mlp_ratio": mlp_ratio, "norm_layer": norm_layer, "drop": drop,
            "attn_drop": attn_drop, **factory,
        }
        num_cross = min(num_repeats, 2) if share_weights else num_repeats
        self.cross = nn.ModuleList(
            PerceiverCrossBlock(latent_dim, context_dim, num_heads=num_cross_heads, **common)
            for _ in range(num_cross)
        )
        num_stacks = 1 if share_weights else num_repeats
        self.latent_blocks = nn.ModuleList(
            nn.ModuleList(TransformerBlock(latent_dim, num_heads, **common) for _ in range(depth))
            for _ in range(num_stacks)
        )
        self.norm = get_norm_layer(norm_layer)(latent_dim, **factory)
        self.head = nn.Linear(latent_dim, num_classes, **factory) if num_classes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.latents, std=0.02, a=-2.0, b=2.0)

    def forward_features(self, x: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """Final-norm latents (B, num_latents, latent_dim)."""
        if x.dim() != 3:
            raise ValueError(f"expected inputs (B, M, in_features), got {tuple(x.shape)}")
        B, M, _ = x.shape
        if self.num_fourier_bands:
            pos = fourier_features(M, self.num_fourier_bands, self.max_freq, x.device)
            x = torch.cat((x, pos.to(x.dtype).expand(B, M, -1)), dim=-1)  # (B, M, context_dim)
        key_padding = padding_mask(attention_mask, B, M)
        latents = self.latents.expand(B, -1, -1)  # (B, N, latent_dim)
        for r in range(self.num_repeats):
            cross = self.cross[min(r, len(self.cross) - 1)]
            latents = cross(latents, x, key_padding_mask=key_padding)
            for block in self.latent_blocks[min(r, len(self.latent_blocks) - 1)]:
                latents = block(latents)
        return self.norm(latents)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=1)  # (B, latent_dim)
        return x if pre_logits or self.head is None else self.head(x)

    def forward(self, x: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        latents = self.forward_features(x, attention_mask=attention_mask)
        return latents if self.head is None else self.forward_head(latents)


def perceiver(*, in_features: int = 64, **kwargs: Any) -> PerceiverEncoder:
    """A :class:`PerceiverEncoder` (256 latents of 512, 6 latent blocks of 8 heads)."""
    return PerceiverEncoder(in_features, **kwargs)


def _example() -> Example:
    kwargs = {
        "in_features": 6, "num_latents": 4, "latent_dim": 32, "depth": 2, "num_heads": 4,
        "num_fourier_bands": 3, "max_freq": 8.0, "num_classes": 5,
    }
    return Example(kwargs, (example_tensor(2, 20, 6),))


register_model("perceiver", example=_example)(perceiver)

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

from ..errors import SpecError
from ..layers._factory import LayerType, check_positive_int, example_tensor, reset_children
from ..layers.attention import MultiHeadAttention
from ..layers.connections import Residual
from ..layers.masks import padding_mask
from ..layers.mlp import MLP
from ..layers.norm import get_norm_layer
from ..network import Network
from ..registry import Example, register_block, register_model
from ._graph_builder import GraphBuilder
from ._lm_base import compact_params

__all__ = [
    "FourierPositions",
    "LearnedLatents",
    "PerceiverCrossBlock",
    "fourier_features",
    "perceiver",
]

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
        self,
        x: Tensor,
        context: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        if context.dim() != 3:
            raise ValueError(f"expected inputs (B, M, context_dim), got {tuple(context.shape)}")
        if attention_mask is not None:  # a model-level mask over the context (1 = element)
            key_padding_mask = padding_mask(attention_mask, context.shape[0], context.shape[1])
        x = self.attn(x, self.context_norm(context), key_padding_mask=key_padding_mask)
        return self.mlp(x)


@register_block("fourier_positions")
class FourierPositions(nn.Module):
    """Appends :func:`fourier_features` of each element's position to a sequence.

    Shapes:
        x: (B, M, F) -> (B, M, F + 2·num_bands + 1).
    """

    def __init__(
        self, *, num_bands: int, max_freq: float = 64.0, device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        check_positive_int("num_bands", num_bands)
        if isinstance(max_freq, bool) or not isinstance(max_freq, (int, float)) or not max_freq > 0:
            raise SpecError(f"max_freq={max_freq!r} must be a positive number", path="max_freq")
        self.num_bands, self.max_freq = num_bands, float(max_freq)

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""

    @classmethod
    def example(cls) -> Example:
        return Example({"num_bands": 3, "max_freq": 8.0}, (example_tensor(2, 5, 4),))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected inputs (B, M, F), got {tuple(x.shape)}")
        B, M, _ = x.shape
        pos = fourier_features(M, self.num_bands, self.max_freq, x.device)
        return torch.cat((x, pos.to(x.dtype).expand(B, M, -1)), dim=-1)  # (B, M, F + 2b + 1)


@register_block("learned_latents")
class LearnedLatents(nn.Module):
    """The Perceiver's learned latent array, one copy per sample of its input's batch.

    The input only sets the batch size. Latents start as ``N(0, 0.02²)`` truncated at ±2.

    Shapes:
        x: (B, ...) -> (B, num_latents, dim).
    """

    def __init__(
        self, *, num_latents: int, dim: int, device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        check_positive_int("num_latents", num_latents)
        check_positive_int("dim", dim)
        self.latents = nn.Parameter(torch.empty(num_latents, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.latents, std=0.02, a=-2.0, b=2.0)

    @classmethod
    def example(cls) -> Example:
        return Example({"num_latents": 3, "dim": 4}, (example_tensor(2, 5, 6),))

    def forward(self, x: Tensor) -> Tensor:
        return self.latents.expand(x.shape[0], -1, -1)  # (B, N, dim)


def perceiver(
    *,
    in_features: int = 64,
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
    seq_len: int = 64,
    name: str = "perceiver",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> Network:
    """A Perceiver encoder: ``num_repeats`` × (the latents cross-attend to the input, then
    ``depth`` latent Transformer blocks), a final norm and, with ``num_classes``, the mean
    latent through a linear head (a :class:`~netarchitect.models._classifier.ClassifierNetwork`;
    otherwise the latents are returned).

    ``num_latents`` latents of ``latent_dim`` read the input through ``num_cross_heads``-head
    cross-attention. With ``share_weights`` (the paper's choice) repeats after the first
    reuse one cross-attention and all repeats one latent stack (tied in the spec).
    ``num_fourier_bands`` appends :func:`fourier_features` (``max_freq``) to each input
    element. ``attention_mask`` (B, M) is 1 for real input elements; ``seq_len`` is the
    input length the spec declares (any length runs).

    Shapes:
        x: (B, M, in_features) -> latents (B, num_latents, latent_dim) or logits (B, num_classes).
    """
    for key, value in (("in_features", in_features), ("depth", depth),
                       ("num_repeats", num_repeats), ("seq_len", seq_len)):
        check_positive_int(key, value)
    b = GraphBuilder(name, {"x": (seq_len, in_features)})
    data, context_dim = "x", in_features
    if num_fourier_bands:
        data = b.add("fourier", "fourier_positions",
                     {"num_bands": num_fourier_bands, "max_freq": max_freq})
        context_dim += 2 * num_fourier_bands + 1
    b.add("latents", "learned_latents", {"num_latents": num_latents, "dim": latent_dim},
          inputs=["x"])
    common = {"mlp_ratio": mlp_ratio, "norm_layer": norm_layer, "drop": drop,
              "attn_drop": attn_drop}
    cross = {"context_dim": context_dim, "num_heads": num_cross_heads, **common}
    blocks = []
    for r in range(num_repeats):
        b.add(f"cross_{r}", "perceiver_cross_attention",
              compact_params("perceiver_cross_attention", cross), inputs=[b.last, data],
              merge="args", context=["attention_mask"])
        if share_weights and r >= 2:
            b.tie[f"cross_{r}"] = "cross_1"
        for j in range(depth):
            blocks.append(b.add(f"r{r}_block_{j}", "transformer_block",
                                compact_params("transformer_block", {"num_heads": num_heads, **common})))
            if share_weights and r >= 1:
                b.tie[f"r{r}_block_{j}"] = f"r0_block_{j}"
    b.add_layer("norm", norm_layer)
    if num_classes:
        b.add("head_pool", "token_pool", {"pool_type": "avg"})
        b.add("head", "linear", {"out_features": num_classes})
        roles: dict[str, Any] = {"kind": "classifier", "features": "norm", "stages": blocks}
    else:
        roles = {"kind": "encoder", "embedding": "latents", "blocks": blocks, "features": "norm"}
    return GraphBuilder.build_spec(b.make_spec(roles), device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {
        "in_features": 6, "num_latents": 4, "latent_dim": 32, "depth": 2, "num_heads": 4,
        "num_fourier_bands": 3, "max_freq": 8.0, "num_classes": 5,
    }
    return Example(kwargs, (example_tensor(2, 20, 6),))


register_model("perceiver", example=_example)(perceiver)

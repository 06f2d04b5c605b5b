"""The Transformer block, composed of attention, a feed-forward and residual wrappers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Example, register_block
from ._factory import LayerType, check_probability, example_tensor, reset_children
from .attention import MultiHeadAttention
from .connections import Residual
from .kv_cache import EncoderDecoderCache, KVCache, check_cache
from .masks import padding_mask
from .mlp import make_mlp
from .positional import RopeScaling

__all__ = ["CROSS_ATTENTION_OPTIONS", "TransformerBlock"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Attention options the cross-attention shares with the self-attention: head layout,
#: biases, qk-norm and softmax scale. The others (``pos``, ``rope_base``, ``rope_scaling``,
#: ``max_positions``, ``num_buckets``, ``window``) relate query and key positions within
#: one sequence, which context tokens do not share: they stay self-attention only.
CROSS_ATTENTION_OPTIONS = ("num_kv_heads", "head_dim", "qkv_bias", "out_bias", "qk_norm", "scale")


@register_block("transformer_block")
class TransformerBlock(nn.Module):
    """Transformer layer (Vaswani et al. 2017): self-attention, optional cross-attention, MLP.

    Each sub-layer is a :class:`~netarchitect.layers.connections.Residual`:
    ``norm="pre"`` gives ``x + f(norm(x))`` (GPT-2/ViT, equal to
    ``nn.TransformerEncoderLayer(norm_first=True)``), ``"post"`` gives
    ``norm(x + f(x))`` (the original, ``norm_first=False``), ``"sandwich"`` and
    ``None`` are also accepted. ``layerscale`` (an initial value) scales each branch
    per channel (CaiT); ``drop_path`` is stochastic depth on each branch.

    ``mlp_layer`` is a name from :data:`~netarchitect.layers.mlp.MLP_LAYERS`
    (``"mlp"``, ``"swiglu"``, ...), a class or a partial; ``act_layer=None`` keeps
    that layer's own default activation. Remaining keyword arguments
    (``num_kv_heads``, ``pos``, ``qk_norm``, ``window``, ``qkv_bias``, ...) go to the
    self-attention :class:`~netarchitect.layers.attention.MultiHeadAttention`.
    With ``cross_attention=True`` a cross-attention sub-layer over ``context``
    (``context_dim`` wide) sits between self-attention and the MLP (decoder layer); it
    takes those of :data:`CROSS_ATTENTION_OPTIONS` too (not the positional ones).
    ``causal=True`` makes self-attention causal by default (a decoder layer).

    ``forward(x, context=None, *, ...)`` takes the masks as torch does
    (``key_padding_mask``: True = padding) or as a model-level ``attention_mask``
    (1 = token, 0 = padding; ``context_attention_mask`` for the context), which is what a
    spec's context passes. ``kv_cache`` caches the self-attention; an
    :class:`~netarchitect.layers.kv_cache.EncoderDecoderCache` (from :meth:`new_cache`)
    caches the projected context too (or pass ``cross_kv_cache``).

    Shapes:
        x: (B, T, dim); context: (B, S, context_dim); output: (B, T, dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        hidden_dim: int | None = None,
        norm: str | None = "pre",
        norm_layer: LayerType = "layernorm",
        act_layer: LayerType = "gelu",
        mlp_layer: LayerType = "mlp",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layerscale: float | None = None,
        cross_attention: bool = False,
        context_dim: int | None = None,
        causal: bool = False,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        out_bias: bool = True,
        qk_norm: LayerType = None,
        pos: str | None = None,
        rope_base: float = 10000.0,
        rope_scaling: RopeScaling = None,
        max_positions: int = 128,
        num_buckets: int | None = None,
        window: int | None = None,
        scale: float | None = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_probability("drop", drop)
        self.causal = bool(causal)
        factory = {"device": device, "dtype": dtype}
        residual = {
            "dim": dim,
            "norm": norm,
            "norm_layer": norm_layer,
            "scale": None if layerscale is None else "layerscale",
            "layerscale_init": 1e-5 if layerscale is None else layerscale,
            "drop_path": drop_path,
            **factory,
        }
        attn = {"attn_drop": attn_drop, "proj_drop": drop, **factory}
        attn_kwargs: dict[str, Any] = {
            "num_kv_heads": num_kv_heads, "head_dim": head_dim, "qkv_bias": qkv_bias,
            "out_bias": out_bias, "qk_norm": qk_norm, "pos": pos, "rope_base": rope_base,
            "rope_scaling": rope_scaling, "max_positions": max_positions,
            "num_buckets": num_buckets, "window": window, "scale": scale,
        }
        self.attn = Residual(MultiHeadAttention(dim, num_heads, **attn, **attn_kwargs), **residual)
        self.cross_attn: Residual | None = None
        if cross_attention:
            shared = {k: v for k, v in attn_kwargs.items() if k in CROSS_ATTENTION_OPTIONS}
            cross = MultiHeadAttention(dim, num_heads, context_dim=context_dim, **attn, **shared)
            self.cross_attn = Residual(cross, **residual)
        ffn = make_mlp(
            mlp_layer,
            dim,
            act_layer=act_layer,
            hidden_dim=hidden_dim,
            mlp_ratio=mlp_ratio,
            drop=drop,
            **factory,
        )
        self.mlp = Residual(ffn, **residual)

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"dim": 16, "num_heads": 2, "mlp_ratio": 2.0, "mlp_layer": "swiglu", "pos": "rope"}
        return Example(kwargs, (example_tensor(2, 5, 16),), name="pre_swiglu_rope")

    @classmethod
    def examples(cls) -> list[Example]:
        """Pre-norm encoder layer, causal GQA decoder layer, post-norm with layerscale, and a
        decoder layer with cross-attention over a context."""
        x, ctx = example_tensor(2, 5, 16), example_tensor(2, 6, 8, seed=1)
        return [
            cls.example(),
            Example({"dim": 16, "num_heads": 4, "num_kv_heads": 2, "causal": True,
                     "mlp_layer": "swiglu", "hidden_dim": 24}, (x,), name="causal_gqa"),
            Example({"dim": 16, "num_heads": 2, "norm": "post", "layerscale": 0.1}, (x,),
                    name="post_layerscale"),
            Example({"dim": 16, "num_heads": 2, "cross_attention": True, "context_dim": 8,
                     "causal": True}, (x, ctx), name="decoder_cross"),
        ]

    def new_cache(self, max_length: int | None = None) -> KVCache | EncoderDecoderCache:
        """An empty cache for incremental decoding (with the context's part when this block
        has cross-attention)."""
        if self.cross_attn is not None:
            return EncoderDecoderCache(max_length)
        return KVCache(max_length)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
        is_causal: bool | None = None,
        kv_cache: KVCache | EncoderDecoderCache | None = None,
        context_key_padding_mask: Tensor | None = None,
        context_attention_mask: Tensor | None = None,
        cross_kv_cache: KVCache | None = None,
    ) -> Tensor:
        check_cache(kv_cache)
        if isinstance(kv_cache, EncoderDecoderCache):
            kv_cache, cross_kv_cache = kv_cache.self_attn, cross_kv_cache or kv_cache.cross_attn
        if attention_mask is not None:
            offset = kv_cache.length if kv_cache is not None else 0
            key_padding_mask = padding_mask(attention_mask, x.shape[0], offset + x.shape[1])
        if context_attention_mask is not None and context is not None:
            context_key_padding_mask = padding_mask(
                context_attention_mask, context.shape[0], context.shape[1]
            )
        x = self.attn(
            x,
            mask=mask,
            key_padding_mask=key_padding_mask,
            is_causal=self.causal if is_causal is None else is_causal,
            kv_cache=kv_cache,
        )
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this TransformerBlock has cross-attention: pass context=")
            x = self.cross_attn(
                x, context, key_padding_mask=context_key_padding_mask, kv_cache=cross_kv_cache
            )
        elif context is not None or cross_kv_cache is not None:
            raise ValueError(
                "context= or cross_kv_cache= given but the block was built with "
                "cross_attention=False"
            )
        return self.mlp(x)

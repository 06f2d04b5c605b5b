"""Encoder-decoder Transformers: the original (Vaswani et al. 2017) and T5-like (Raffel 2020).

An encoder of bidirectional :class:`~netarchitect.layers.transformer.TransformerBlock` s
reads the source; a decoder of causal blocks with cross-attention over the encoder
output predicts the target. Named sizes: ``transformer-base``, ``transformer-big``
(Vaswani: post-norm, sinusoidal positions, ReLU, embeddings scaled by sqrt(dim)) and
``t5-small``/``t5-base`` (T5-like: pre-norm RMSNorm, T5 relative-position buckets, ReLU,
no biases in self-attention and MLP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers._factory import LayerType, check_choice, check_positive_int
from ..layers.embedding import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from ..layers.kv_cache import EncoderDecoderCache, KVCache
from ..layers.norm import get_norm_layer
from ..layers.transformer import TransformerBlock
from ..registry import Example, register_model
from ._lm_base import (
    ABSOLUTE_POSITIONS,
    add_positions,
    check_token_ids,
    init_transformer_,
    mlp_with_bias,
    norm_with_eps,
    padding_mask,
)

__all__ = ["ENCODER_DECODER_SIZES", "BoundDecoder", "EncoderDecoderTransformer", "encoder_decoder"]

#: T5's choices: pre-norm RMSNorm, 32 log-spaced relative buckets up to distance 128, no biases.
_T5: dict[str, Any] = {
    "pos": "relative", "num_buckets": 32, "max_positions": 128, "norm": "pre",
    "norm_layer": "rmsnorm", "norm_eps": 1e-6, "act_layer": "relu", "bias": False,
}

Device = torch.device | str | None
Dtype = torch.dtype | None


class EncoderDecoderTransformer(nn.Module):
    """Sequence-to-sequence Transformer: ``logits = head(decoder(tgt, encoder(src)))``.

    ``pos``: ``"sinusoidal"`` or ``"learned"`` absolute positions added to the embeddings,
    or ``"relative"`` (T5 buckets when ``num_buckets``), ``"rope"``, ``"alibi"`` inside
    self-attention. ``norm="post"`` (original) or ``"pre"`` (T5; adds final norms).
    Source and target share one embedding unless ``src_vocab_size`` is given; the head
    is tied to the target embedding when ``tie_embeddings``. Embeddings are multiplied by
    ``embed_scale`` (Vaswani: ``sqrt(dim)``).

    ``forward(src_ids, tgt_ids, *, src_mask=None, tgt_mask=None)``; masks are
    ``attention_mask`` s (1 = real token). :meth:`encode` and :meth:`decode` run the two
    halves; ``decode(..., kv_cache=model.new_cache())`` decodes incrementally (each
    block's cache keeps its self-attention keys/values and, from the first call on, the
    encoder output projected by its cross-attention, so ``memory`` is projected once) and
    :meth:`bind` gives a decoder-only view of one source batch for
    :func:`~netarchitect.generation.generate`.

    Shapes:
        src_ids: (B, S), tgt_ids: (B, T) -> logits (B, T, vocab_size).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        encoder_depth: int,
        decoder_depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        hidden_dim: int | None = None,
        src_vocab_size: int | None = None,
        max_positions: int = 512,
        pos: str = "sinusoidal",
        num_buckets: int | None = None,
        norm: str = "post",
        norm_layer: LayerType = "layernorm",
        norm_eps: float | None = None,
        mlp_layer: LayerType = "mlp",
        act_layer: LayerType = "relu",
        bias: bool = True,
        embed_scale: float | None = None,
        tie_embeddings: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        init_std: float = 0.02,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim)):
            check_positive_int(name, value)
        check_choice("pos", pos, ("sinusoidal", "learned", "relative", "rope", "alibi"))
        check_choice("norm", norm, ("post", "pre"))
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.dim, self.pos, self.init_std = vocab_size, dim, pos, init_std
        self.embed_scale = 1.0 if embed_scale is None else float(embed_scale)
        self.tgt_embed = nn.Embedding(vocab_size, dim, **factory)
        self.src_embed = nn.Embedding(src_vocab_size, dim, **factory) if src_vocab_size else None
        self.src_pos, self.tgt_pos = (
            self._pos_embed(pos, dim, max_positions, factory) for _ in "st"
        )
        self.drop = nn.Dropout(drop)
        norm_layer = norm_with_eps(norm_layer, norm_eps)
        attn: dict[str, Any] = {} if pos in ABSOLUTE_POSITIONS else {"pos": pos}
        if pos == "relative":
            attn.update(max_positions=max_positions, num_buckets=num_buckets)
        common = {
            "mlp_ratio": mlp_ratio, "hidden_dim": hidden_dim, "norm": norm,
            "norm_layer": norm_layer, "act_layer": act_layer,
            "mlp_layer": mlp_with_bias(mlp_layer, bias), "drop": drop, "attn_drop": attn_drop,
            "qkv_bias": bias, "out_bias": bias, **attn, **factory,
        }
        self.encoder = nn.ModuleList(
            TransformerBlock(dim, num_heads, **common) for _ in range(encoder_depth)
        )
        self.decoder = nn.ModuleList(
            TransformerBlock(dim, num_heads, cross_attention=True, **common)
            for _ in range(decoder_depth)
        )
        make_norm = get_norm_layer(norm_layer if norm == "pre" else None)
        self.encoder_norm = make_norm(dim, **factory)
        self.decoder_norm = make_norm(dim, **factory)
        self.head = nn.Linear(dim, vocab_size, bias=False, **factory)
        self.tie_embeddings = tie_embeddings
        if tie_embeddings:
            self.head.weight = self.tgt_embed.weight
        self.reset_parameters()

    @staticmethod
    def _pos_embed(
        pos: str, dim: int, max_positions: int, factory: dict[str, Any]
    ) -> nn.Module | None:
        if pos == "learned":
            return LearnedPositionalEmbedding(dim, max_positions=max_positions, **factory)
        if pos == "sinusoidal":
            return SinusoidalPositionalEmbedding(dim, **factory)
        return None

    def reset_parameters(self) -> None:
        init_transformer_(self, std=self.init_std)

    def new_cache(self, max_length: int | None = None) -> list[EncoderDecoderCache]:
        """Empty caches for incremental decoding, one per decoder block.

        ``max_length`` bounds the target positions; the projected encoder output is
        stored on the first :meth:`decode` call and reused until ``reset()``.
        """
        return EncoderDecoderCache.create(len(self.decoder), max_length)

    def _embed(self, ids: Tensor, table: nn.Embedding) -> Tensor:
        return table(ids) * self.embed_scale if self.embed_scale != 1.0 else table(ids)

    def encode(self, src_ids: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """Encoder output (B, S, dim)."""
        check_token_ids(src_ids)
        table = self.src_embed if self.src_embed is not None else self.tgt_embed
        x = add_positions(self._embed(src_ids, table), self.src_pos, src_mask)
        x = self.drop(x)
        key_padding = padding_mask(src_mask, *src_ids.shape)
        for block in self.encoder:
            x = block(x, key_padding_mask=key_padding)
        return self.encoder_norm(x)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        *,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        kv_cache: Sequence[EncoderDecoderCache | KVCache] | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        """Target logits (B, T, vocab_size) given the encoder output ``memory``
        (the last ``logits_to_keep`` positions only, when given).

        ``kv_cache`` (from :meth:`new_cache`) makes decoding incremental; a plain
        :class:`KVCache` per block caches the self-attention only (``memory`` is then
        projected again at every call).
        """
        check_token_ids(tgt_ids)
        B, T = tgt_ids.shape
        if kv_cache is not None and len(kv_cache) != len(self.decoder):
            raise ValueError(
                f"kv_cache needs one cache per decoder block ({len(self.decoder)}), "
                f"got {len(kv_cache)}: use model.new_cache()"
            )
        offset = kv_cache[0].length if kv_cache else 0
        x = self._embed(tgt_ids, self.tgt_embed)
        x = self.drop(add_positions(x, self.tgt_pos, tgt_mask, None, offset))
        self_padding = padding_mask(tgt_mask, B, offset + T)
        context_padding = padding_mask(src_mask, B, memory.shape[1])
        for i, block in enumerate(self.decoder):
            self_cache, cross_cache = _split_cache(kv_cache[i] if kv_cache is not None else None)
            x = block(
                x,
                key_padding_mask=self_padding,
                is_causal=True,
                kv_cache=self_cache,
                context=memory,
                context_key_padding_mask=context_padding,
                cross_kv_cache=cross_cache,
            )
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]  # (B, n, dim)
        return self.head(self.decoder_norm(x))

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        *,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        memory = self.encode(src_ids, src_mask=src_mask)
        return self.decode(tgt_ids, memory, src_mask=src_mask, tgt_mask=tgt_mask)

    def bind(self, src_ids: Tensor, *, src_mask: Tensor | None = None) -> BoundDecoder:
        """A decoder-only view over the encoding of ``src_ids``, for ``generate``."""
        return BoundDecoder(self, self.encode(src_ids, src_mask=src_mask), src_mask)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}, pos={self.pos!r}"


def _split_cache(
    cache: EncoderDecoderCache | KVCache | None,
) -> tuple[KVCache | None, KVCache | None]:
    """The (self-attention, cross-attention) caches of one decoder block."""
    if isinstance(cache, EncoderDecoderCache):
        return cache.self_attn, cache.cross_attn
    return cache, None


class BoundDecoder(nn.Module):
    """The decoder of an :class:`EncoderDecoderTransformer` with a fixed encoder output.

    ``forward(input_ids, *, attention_mask=None, kv_cache=None)`` returns target logits,
    so :func:`~netarchitect.generation.generate` can decode from it; with the caches of
    :meth:`new_cache` (fresh for each ``generate`` call) each cross-attention projects the
    encoder output once per generation, not at every step.
    """

    def __init__(
        self, model: EncoderDecoderTransformer, memory: Tensor, src_mask: Tensor | None
    ) -> None:
        super().__init__()
        self.model, self.memory, self.src_mask = model, memory, src_mask

    def new_cache(self, max_length: int | None = None) -> list[EncoderDecoderCache]:
        return self.model.new_cache(max_length)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: Sequence[EncoderDecoderCache | KVCache] | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        return self.model.decode(
            input_ids, self.memory, src_mask=self.src_mask, tgt_mask=attention_mask,
            kv_cache=kv_cache, logits_to_keep=logits_to_keep,
        )


#: Vaswani et al.'s base and big models (shared 37000-token vocabulary) and T5-like sizes.
ENCODER_DECODER_SIZES: dict[str, dict[str, Any]] = {
    "transformer-base": {
        "vocab_size": 37000, "dim": 512, "encoder_depth": 6, "decoder_depth": 6,
        "num_heads": 8, "hidden_dim": 2048, "embed_scale": math.sqrt(512),
    },
    "transformer-big": {
        "vocab_size": 37000, "dim": 1024, "encoder_depth": 6, "decoder_depth": 6,
        "num_heads": 16, "hidden_dim": 4096, "embed_scale": math.sqrt(1024),
    },
    "t5-small": {
        "vocab_size": 32128, "dim": 512, "encoder_depth": 6, "decoder_depth": 6,
        "num_heads": 8, "hidden_dim": 2048, **_T5,
    },
    "t5-base": {
        "vocab_size": 32128, "dim": 768, "encoder_depth": 12, "decoder_depth": 12,
        "num_heads": 12, "hidden_dim": 3072, **_T5,
    },
}


def encoder_decoder(
    *,
    vocab_size: int = 37000,
    dim: int = 512,
    encoder_depth: int = 6,
    decoder_depth: int = 6,
    num_heads: int = 8,
    **kwargs: Any,
) -> EncoderDecoderTransformer:
    """An :class:`EncoderDecoderTransformer` (defaults: Vaswani's base model without dropout)."""
    return EncoderDecoderTransformer(
        vocab_size, dim, encoder_depth=encoder_depth, decoder_depth=decoder_depth,
        num_heads=num_heads, **kwargs,
    )


def _example() -> Example:
    kwargs = {
        "vocab_size": 64, "dim": 32, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4,
        "hidden_dim": 48, "max_positions": 16,
    }
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(0, 64, (2, 7), generator=g), torch.randint(0, 64, (2, 5), generator=g)
    return Example(kwargs, (src, tgt))


def _register(name: str, size: dict[str, Any]) -> None:
    def build(**overrides: Any) -> EncoderDecoderTransformer:
        return encoder_decoder(**{**size, **overrides})

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"Encoder-decoder ``{name}``: {size} (see :func:`encoder_decoder`)."
    register_model(name, example=_example)(build)


for _name, _size in ENCODER_DECODER_SIZES.items():
    _register(_name, _size)

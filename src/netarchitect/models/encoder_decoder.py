"""Encoder-decoder Transformers: the original (Vaswani et al. 2017) and T5-like (Raffel 2020).

The spec has two inputs, ``src_ids`` and ``tgt_ids``: ``src_embed`` → ``encoder_i``
(bidirectional ``transformer_block`` s) → ``encoder_norm`` (the *memory*), and
``tgt_embed`` → ``decoder_i`` (causal blocks whose cross-attention reads the memory:
``inputs: [previous, encoder_norm], merge: args``) → ``decoder_norm`` → ``head``.
Context: ``src_mask``, ``tgt_mask`` (1 = token), ``kv_cache``, ``logits_to_keep``.

Named sizes: ``transformer-base``, ``transformer-big`` (Vaswani: post-norm, sinusoidal
positions, ReLU, embeddings scaled by sqrt(dim)) and ``t5-small``/``t5-base`` (T5-like:
pre-norm RMSNorm, T5 relative-position buckets, ReLU, no biases in attention and MLP).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..layers._factory import LayerType, check_choice, check_positive_int
from ..layers.kv_cache import ModelCache
from ..network import Network
from ..registry import Example, register_network_kind
from ._graph_builder import GraphBuilder
from ._lm_base import _RoleAccess, compact_params, layer_params, transformer_init
from ._variants import register_sizes
from .decoder import probe_length

__all__ = ["ENCODER_DECODER_SIZES", "BoundDecoder", "Seq2SeqTransformer", "encoder_decoder"]

#: T5's choices: pre-norm RMSNorm, 32 log-spaced relative buckets up to distance 128, no biases.
_T5: dict[str, Any] = {
    "pos": "relative", "num_buckets": 32, "max_positions": 128, "norm": "pre",
    "norm_layer": "rmsnorm", "norm_eps": 1e-6, "act_layer": "relu", "bias": False,
}
_EMBED_POSITIONS = ("sinusoidal", "learned")


@register_network_kind("seq2seq")
class Seq2SeqTransformer(_RoleAccess, Network):
    """A spec-built sequence-to-sequence Transformer (``kind: seq2seq``).

    ``forward(src_ids, tgt_ids, *, src_mask=None, tgt_mask=None)`` returns target logits;
    masks are ``attention_mask`` s (1 = real token). :meth:`encode` and :meth:`decode` run
    the two halves; ``decode(..., kv_cache=model.new_cache())`` decodes incrementally (each
    decoder block's cache keeps its self-attention keys/values and, from the first call
    on, the memory projected by its cross-attention, so the memory is projected once) and
    :meth:`bind` gives a decoder-only view of one source batch for
    :func:`~netarchitect.generation.generate`.

    Shapes:
        src_ids: (B, S), tgt_ids: (B, T) -> logits (B, T, vocab_size).
    """

    _ROLES = ("src_embedding", "memory", "tgt_embedding", "features", "head")
    _LIST_ROLES = ("encoder_blocks", "decoder_blocks")

    @property
    def encoder(self) -> list[nn.Module]:
        """The encoder blocks."""
        return [self.nodes[n] for n in self._role("encoder_blocks")]

    @property
    def decoder(self) -> list[nn.Module]:
        """The decoder blocks."""
        return [self.nodes[n] for n in self._role("decoder_blocks")]

    @property
    def tgt_embed(self) -> nn.Module:
        return self._node("tgt_embedding")  # type: ignore[return-value]

    @property
    def src_embed(self) -> nn.Module:
        return self._node("src_embedding")  # type: ignore[return-value]

    @property
    def head(self) -> nn.Module:
        return self._node("head")  # type: ignore[return-value]

    @property
    def embed_scale(self) -> float:
        return self.tgt_embed.scale

    @property
    def vocab_size(self) -> int:
        return self.head.out_features

    @property
    def pos(self) -> str | None:
        return self.tgt_embed.pos_type or self.decoder[0].attn.fn.pos

    def checkpoint_nodes(self) -> frozenset[str]:
        return frozenset((*self._role("encoder_blocks"), *self._role("decoder_blocks")))

    def encode(self, src_ids: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """The memory: the encoder's output (B, S, dim)."""
        memory = self._role("memory")
        return self.run({"src_ids": src_ids}, (memory,), src_mask=src_mask)[memory]

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        *,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        kv_cache: ModelCache | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        """Target logits (B, T, vocab_size) given the encoder output ``memory`` (the last
        ``logits_to_keep`` positions only, when given); ``kv_cache`` from :meth:`new_cache`
        makes decoding incremental."""
        head = self._role("head")
        values = {"tgt_ids": tgt_ids, self._role("memory"): memory}
        return self.run(
            values, (head,), src_mask=src_mask, tgt_mask=tgt_mask, kv_cache=kv_cache,
            logits_to_keep=logits_to_keep,
        )[head]

    def bind(self, src_ids: Tensor, *, src_mask: Tensor | None = None) -> BoundDecoder:
        """A decoder-only view over the encoding of ``src_ids``, for ``generate``."""
        return BoundDecoder(self, self.encode(src_ids, src_mask=src_mask), src_mask)

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, vocab_size={self.vocab_size}, pos={self.pos!r}"


class BoundDecoder(nn.Module):
    """The decoder of a :class:`Seq2SeqTransformer` with a fixed encoder output.

    ``forward(input_ids, *, attention_mask=None, kv_cache=None, logits_to_keep=None)``
    returns target logits, so :func:`~netarchitect.generation.generate` can decode from it;
    with the caches of :meth:`new_cache` (fresh for each ``generate`` call) each
    cross-attention projects the encoder output once per generation, not at every step.
    """

    def __init__(self, model: Seq2SeqTransformer, memory: Tensor, src_mask: Tensor | None) -> None:
        super().__init__()
        self.model, self.memory, self.src_mask = model, memory, src_mask

    def new_cache(self, max_length: int | None = None) -> ModelCache:
        return self.model.new_cache(max_length)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: ModelCache | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        return self.model.decode(
            input_ids, self.memory, src_mask=self.src_mask, tgt_mask=attention_mask,
            kv_cache=kv_cache, logits_to_keep=logits_to_keep,
        )


def encoder_decoder(
    *,
    vocab_size: int = 37000,
    dim: int = 512,
    encoder_depth: int = 6,
    decoder_depth: int = 6,
    num_heads: int = 8,
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
    seq_len: int | None = None,
    name: str = "encoder_decoder",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> Seq2SeqTransformer:
    """A sequence-to-sequence Transformer (defaults: Vaswani's base model without dropout).

    ``pos``: ``"sinusoidal"`` or ``"learned"`` absolute positions added to the embeddings,
    or ``"relative"`` (T5 buckets when ``num_buckets``), ``"rope"``, ``"alibi"`` inside
    self-attention. ``norm="post"`` (original) or ``"pre"`` (T5; final norms). Source and
    target share one token table unless ``src_vocab_size`` is given; the head is tied to
    the target table when ``tie_embeddings``. Token vectors are multiplied by
    ``embed_scale`` (Vaswani: ``sqrt(dim)``).
    """
    for key, value in (("vocab_size", vocab_size), ("dim", dim)):
        check_positive_int(key, value)
    for key, value in (("encoder_depth", encoder_depth), ("decoder_depth", decoder_depth)):
        check_positive_int(key, value)
    check_choice("pos", pos, ("sinusoidal", "learned", "relative", "rope", "alibi"))
    check_choice("norm", norm, ("post", "pre"))
    length = (probe_length(max_positions, seq_len),)
    b = GraphBuilder(name, {"src_ids": (length, "int64"), "tgt_ids": (length, "int64")})
    norm_spec = layer_params(norm_layer, eps=norm_eps)
    embed = {
        "dim": dim, "max_positions": max_positions, "scale": embed_scale, "drop": drop,
        "pos": pos if pos in _EMBED_POSITIONS else None, "init_std": init_std,
    }
    block = {
        "num_heads": num_heads, "mlp_ratio": mlp_ratio, "hidden_dim": hidden_dim, "norm": norm,
        "norm_layer": norm_spec, "act_layer": act_layer,
        "mlp_layer": layer_params(mlp_layer, bias=None if bias else False), "drop": drop,
        "attn_drop": attn_drop, "qkv_bias": bias, "out_bias": bias,
    }
    if pos not in _EMBED_POSITIONS:
        block.update(pos=pos, max_positions=max_positions, num_buckets=num_buckets)
    final_norm = norm_spec if norm == "pre" else "identity"

    def embedding(node_id: str, source: str, vocab: int, context: dict[str, str]) -> None:
        params = compact_params("token_embedding", {"vocab_size": vocab, **embed})
        b.add(node_id, "token_embedding", params, inputs=[source], context=context)

    embedding("src_embed", "src_ids", src_vocab_size or vocab_size, {"attention_mask": "src_mask"})
    encoder = [
        b.add(f"encoder_{i}", "transformer_block", compact_params("transformer_block", block),
              context={"attention_mask": "src_mask"})
        for i in range(encoder_depth)
    ]
    memory = b.add_layer("encoder_norm", final_norm)
    embedding("tgt_embed", "tgt_ids", vocab_size,
              {"attention_mask": "tgt_mask", "kv_cache": "kv_cache"})
    cross = compact_params("transformer_block", {**block, "cross_attention": True, "causal": True})
    decoder = [
        b.add(f"decoder_{i}", "transformer_block", cross, inputs=[b.last, memory], merge="args",
              context={"attention_mask": "tgt_mask", "context_attention_mask": "src_mask",
                       "kv_cache": "kv_cache"})
        for i in range(decoder_depth)
    ]
    b.add_layer("decoder_norm", final_norm)
    b.add("head", "lm_head", {"out_features": vocab_size}, context=["logits_to_keep"])
    if not src_vocab_size:
        b.tie["src_embed.token.weight"] = "tgt_embed.token.weight"
    if tie_embeddings:
        b.tie["head.weight"] = "tgt_embed.token.weight"
    roles = {
        "kind": "seq2seq", "src_embedding": "src_embed", "encoder_blocks": encoder,
        "memory": memory, "tgt_embedding": "tgt_embed", "decoder_blocks": decoder,
        "features": "decoder_norm", "head": "head",
    }
    spec = b.make_spec(roles, init=transformer_init(init_std))
    return GraphBuilder.build_spec(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


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


def _example() -> Example:
    kwargs = {
        "vocab_size": 64, "dim": 32, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4,
        "hidden_dim": 48, "max_positions": 16,
    }
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(0, 64, (2, 7), generator=g), torch.randint(0, 64, (2, 5), generator=g)
    return Example(kwargs, (src, tgt))


register_sizes(encoder_decoder, ENCODER_DECODER_SIZES, example=_example,
               describe="Encoder-decoder")

"""Shared pieces of the sequence models: masks, positions, weight init and the decoder-only LM.

:class:`DecoderLM` is the one decoder-only Transformer behind the GPT-2, LLaMA and
mixture-of-experts families; the family files only choose its knobs and register
named sizes. Masks follow the Hugging Face convention at the model level
(``attention_mask``: 1/True = real token, 0/False = padding) and are turned into the
layer library's ``key_padding_mask`` (True = padding) here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import SpecError
from ..layers._factory import LayerType, check_positive_int, check_probability
from ..layers.embedding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    sinusoidal_embedding,
)
from ..layers.kv_cache import KVCache
from ..layers.mlp import get_mlp_layer
from ..layers.norm import get_norm_layer
from ..layers.positional import RopeScaling, rope_scaling_config
from ..layers.transformer import TransformerBlock

__all__ = ["ABSOLUTE_POSITIONS", "DecoderLM"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Position schemes added to the token embeddings (the others live inside attention).
ABSOLUTE_POSITIONS = ("learned", "sinusoidal")
_POSITIONS = (*ABSOLUTE_POSITIONS, "rope", "alibi", "relative", None)
_RESIDUAL_PROJECTIONS = ("out_proj", "fc2", "down_proj")


def norm_with_eps(norm_layer: LayerType, eps: float | None) -> LayerType:
    """``norm_layer`` with its ``eps`` fixed (unchanged when ``eps`` is ``None``)."""
    if eps is None:
        return norm_layer
    return functools.partial(get_norm_layer(norm_layer), eps=eps)


def mlp_with_bias(mlp_layer: LayerType, bias: bool | None) -> LayerType:
    """``mlp_layer`` with its ``bias`` fixed (its own default when ``bias`` is ``None``)."""
    if bias is None:
        return mlp_layer
    return functools.partial(get_mlp_layer(mlp_layer), bias=bias)


def per_layer(value: Any, depth: int, name: str) -> list[Any]:
    """``value`` repeated ``depth`` times, or ``value`` itself if it is a list of ``depth``."""
    if not isinstance(value, (list, tuple)):
        return [value] * depth
    if len(value) != depth:
        raise SpecError(f"{name} has {len(value)} entries for depth={depth}", path=name)
    return list(value)


def check_token_ids(input_ids: Tensor) -> None:
    """Raise unless ``input_ids`` is a (B, T) integer tensor with T >= 1."""
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"expected integer token ids of shape (B, T), got {got}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids has no tokens (T = 0)")


def padding_mask(attention_mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """``key_padding_mask`` (True = padding) from an ``attention_mask`` (1 = real token).

    ``None`` when there is no mask or nothing is padded (so attention keeps its fast path).
    """
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"attention_mask must have shape (B, S) = {(batch, length)} (S = cached + new "
            f"tokens), got {tuple(attention_mask.shape)}"
        )
    pad = attention_mask == 0
    if pad.device.type != "meta" and not bool(pad.any()):
        return None
    return pad


def absolute_positions(
    attention_mask: Tensor | None, length: int, offset: int, device: torch.device | None = None
) -> Tensor:
    """Position of each new token: ``offset + arange(T)``, or counted over real tokens only.

    With an ``attention_mask`` the position of a token is the number of real tokens
    before it (Hugging Face's ``cumsum - 1``), so left padding does not shift positions.
    Shapes: -> (1, T) or (B, T).
    """
    if attention_mask is None:
        return torch.arange(offset, offset + length, device=device)[None]
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)[:, -length:]


def add_positions(
    x: Tensor,
    pos_embed: nn.Module | None,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """``x`` plus its absolute position code (learned or sinusoidal; unchanged without one).

    Positions are ``position_ids`` when given, else counted over real tokens of
    ``attention_mask`` (:func:`absolute_positions`), else ``offset + arange(T)``.
    """
    if pos_embed is None:
        return x
    T = x.shape[1]
    if position_ids is None:
        if attention_mask is None:
            return pos_embed(x, offset)
        position_ids = absolute_positions(attention_mask, T, offset, x.device)
    if isinstance(pos_embed, LearnedPositionalEmbedding):
        limit = pos_embed.max_positions
        if position_ids.device.type != "meta" and int(position_ids.max()) >= limit:
            raise ValueError(f"position ids reach past max_positions={limit}")
        return x + pos_embed.weight[position_ids]
    table = sinusoidal_embedding(position_ids.reshape(-1).float(), x.shape[-1])
    return x + table.view(*position_ids.shape, x.shape[-1]).to(x.dtype)


def init_transformer_(
    module: nn.Module, *, std: float = 0.02, residual_std: float | None = None
) -> None:
    """GPT-2/BERT initialisation: Linear and Embedding weights ``N(0, std)``, biases zero.

    Output projections of residual branches (``out_proj``, ``fc2``, ``down_proj``) use
    ``residual_std`` when given (GPT-2: ``std / sqrt(2 · depth)``). Norms, rotary tables
    and other parameters keep their own ``reset_parameters``.
    """
    for name, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if isinstance(weight, Tensor) and weight.device.type == "meta":
            continue  # nothing to fill (and meta init is slow)
        if isinstance(sub, nn.Linear):
            leaf = name.rsplit(".", 1)[-1]
            scale = residual_std if residual_std and leaf in _RESIDUAL_PROJECTIONS else std
            nn.init.normal_(sub.weight, std=scale)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, (nn.Embedding, LearnedPositionalEmbedding)):
            nn.init.normal_(sub.weight, std=std)


class DecoderLM(nn.Module):
    """Decoder-only Transformer language model (GPT-2, LLaMA, Mixtral-style).

    ``logits = head(norm(blocks(drop(tok_embed(ids) [+ pos_embed]))))`` with
    ``depth`` pre-norm causal :class:`~netarchitect.layers.transformer.TransformerBlock` s.

    Positions (``pos``): ``"learned"`` (GPT-2) or ``"sinusoidal"`` are added to the
    embeddings; ``"rope"`` (LLaMA), ``"alibi"`` and ``"relative"`` act inside attention.
    ``max_positions`` is the context length (the size of the learned table).
    ``rope_scaling`` rescales the RoPE frequencies (``"linear"`` or LLaMA-3's ``"llama3"``;
    see :func:`~netarchitect.layers.positional.rope_scaling_config`).
    ``mlp_layer`` is one feed-forward type or a list with one per block (MoE every k
    layers). ``qk_norm`` normalises each head's queries and keys; ``window`` makes
    attention local (sliding window, Mistral). ``norm_eps`` fixes the norms' epsilon;
    ``bias`` switches the attention biases and ``mlp_bias`` the MLP's (``None``: that MLP
    type's default). The head shares the token embedding when ``tie_embeddings``. Weights
    start as GPT-2's (``N(0, init_std)``, residual output projections
    ``init_std / sqrt(2 · depth)``).

    ``forward(input_ids, *, attention_mask=None, position_ids=None, kv_cache=None,
    logits_to_keep=None)``:
    ``attention_mask`` (B, cached + T) is 1 for real tokens and 0 for padding (left
    or right); ``kv_cache`` is a list from :meth:`new_cache`, one
    :class:`~netarchitect.layers.kv_cache.KVCache` per block, extended in place, so
    feeding a sequence in pieces gives the logits of the whole. ``position_ids``
    (absolute positions only) default to the count of real tokens before each token.
    With RoPE/ALiBi scores depend only on relative distance, so left padding is harmless.
    ``logits_to_keep=n`` returns logits of the last ``n`` positions only (decoding).

    Shapes:
        input_ids: (B, T) int64 -> logits: (B, T, vocab_size).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        mlp_ratio: float = 4.0,
        hidden_dim: int | None = None,
        max_positions: int = 1024,
        pos: str | None = "learned",
        rope_base: float = 10000.0,
        rope_scaling: RopeScaling = None,
        qk_norm: LayerType = None,
        window: int | None = None,
        norm_layer: LayerType = "layernorm",
        norm_eps: float | None = None,
        mlp_layer: LayerType | Sequence[LayerType] = "mlp",
        act_layer: LayerType = None,
        bias: bool = True,
        mlp_bias: bool | None = None,
        tie_embeddings: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_std: float = 0.02,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth)):
            check_positive_int(name, value)
        check_positive_int("max_positions", max_positions)
        if pos not in _POSITIONS:
            raise SpecError(f"pos={pos!r} must be one of {_POSITIONS}", path="pos")
        rope_scaling = rope_scaling_config(rope_scaling)  # fail before building anything
        if rope_scaling is not None and pos != "rope":
            raise SpecError(f"needs pos='rope', got pos={pos!r}", path="rope_scaling")
        check_probability("drop", drop)
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.dim, self.depth = vocab_size, dim, depth
        self.max_positions, self.pos, self.init_std = max_positions, pos, init_std
        self.grad_checkpointing = False
        self.tok_embed = nn.Embedding(vocab_size, dim, **factory)
        self.pos_embed: nn.Module | None = None
        if pos == "learned":
            self.pos_embed = LearnedPositionalEmbedding(dim, max_positions=max_positions, **factory)
        elif pos == "sinusoidal":
            self.pos_embed = SinusoidalPositionalEmbedding(dim, **factory)
        self.drop = nn.Dropout(drop)
        norm_layer = norm_with_eps(norm_layer, norm_eps)
        attn_pos = None if pos in ABSOLUTE_POSITIONS else pos
        mlp_layers = per_layer(mlp_layer, depth, "mlp_layer")
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                hidden_dim=hidden_dim,
                norm="pre",
                norm_layer=norm_layer,
                act_layer=act_layer,
                mlp_layer=mlp_with_bias(mlp_layers[i], mlp_bias),
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path * i / max(depth - 1, 1),
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                qkv_bias=bias,
                out_bias=bias,
                pos=attn_pos,
                rope_base=rope_base,
                rope_scaling=rope_scaling,
                qk_norm=qk_norm,
                window=window,
                max_positions=max_positions,
                **factory,
            )
            for i in range(depth)
        )
        self.norm = get_norm_layer(norm_layer)(dim, **factory)
        self.head = nn.Linear(dim, vocab_size, bias=False, **factory)
        self.tie_embeddings = tie_embeddings
        if tie_embeddings:
            self.head.weight = self.tok_embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_(
            self, std=self.init_std, residual_std=self.init_std / math.sqrt(2 * self.depth)
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (training without a cache)."""
        self.grad_checkpointing = enable

    def new_cache(self, max_length: int | None = None) -> list[KVCache]:
        """Empty key/value caches for incremental decoding, one per block."""
        return KVCache.create(self.depth, max_length)

    def forward_features(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: Sequence[KVCache] | None = None,
    ) -> Tensor:
        """Final-norm hidden states (B, T, dim) (Hugging Face's ``last_hidden_state``)."""
        check_token_ids(input_ids)
        B, T = input_ids.shape
        if kv_cache is not None and len(kv_cache) != self.depth:
            raise ValueError(
                f"kv_cache needs one KVCache per block ({self.depth}), got {len(kv_cache)}"
            )
        offset = kv_cache[0].length if kv_cache else 0
        key_padding = padding_mask(attention_mask, B, offset + T)
        if self.pos_embed is None and position_ids is not None:
            raise ValueError(
                f"position_ids apply to absolute positions (pos in {ABSOLUTE_POSITIONS}); "
                f"with pos={self.pos!r} positions follow the cache offset"
            )
        x = add_positions(
            self.tok_embed(input_ids), self.pos_embed, attention_mask, position_ids, offset
        )
        x = self.drop(x)
        use_checkpoint = self.grad_checkpointing and self.training and kv_cache is None
        for i, block in enumerate(self.blocks):
            kwargs: dict[str, Any] = {"key_padding_mask": key_padding, "is_causal": True}
            if kv_cache is not None:
                kwargs["kv_cache"] = kv_cache[i]
            if use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False, **kwargs)
            else:
                x = block(x, **kwargs)
        return self.norm(x)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: Sequence[KVCache] | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        x = self.forward_features(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, kv_cache=kv_cache
        )
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]  # (B, n, dim): skip the head on earlier positions
        return self.head(x)

    def extra_repr(self) -> str:
        return (
            f"vocab_size={self.vocab_size}, dim={self.dim}, depth={self.depth}, pos={self.pos!r}, "
            f"tie_embeddings={self.tie_embeddings}"
        )

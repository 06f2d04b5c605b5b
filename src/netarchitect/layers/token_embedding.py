"""The two ends of a token model: the token embedding (with positions and segments) and
the language-model head."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import LayerType, check_choice, check_positive_int, check_probability
from .basic import Linear
from .embedding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    sinusoidal_embedding,
)
from .kv_cache import check_cache
from .masks import absolute_positions, check_attention_mask, check_token_ids
from .norm import get_norm_layer

__all__ = ["POSITIONS", "LMHead", "TokenEmbedding", "add_positions"]

#: Absolute position schemes a token embedding adds (relative ones live in attention).
POSITIONS = ("learned", "sinusoidal", None)

Device = torch.device | str | None
Dtype = torch.dtype | None


def add_positions(
    x: Tensor,
    pos_embed: nn.Module | None,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """``x`` plus its absolute position code (learned or sinusoidal; unchanged without one).

    Positions are ``position_ids`` when given, else counted over real tokens of
    ``attention_mask`` (:func:`~.masks.absolute_positions`), else ``offset + arange(T)``.
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


@register_block("token_embedding")
class TokenEmbedding(nn.Module):
    """Token ids to vectors: ``drop(norm(scale · E[ids] + P[pos] + S[segment]))``.

    ``pos``: ``"learned"`` (GPT-2, BERT; a table of ``max_positions``), ``"sinusoidal"``
    (Vaswani) or ``None`` (positions act inside attention: RoPE, ALiBi, relative).
    ``type_vocab_size > 0`` adds BERT's segment embedding; ``scale`` multiplies the token
    vectors (Vaswani: ``sqrt(dim)``); ``norm_layer`` (BERT: LayerNorm) follows the sum.
    Token vectors start as ``N(0, init_std²)``.

    ``forward(input_ids, *, attention_mask=None, position_ids=None, token_type_ids=None,
    kv_cache=None)`` — the context a spec passes: positions are ``position_ids``, else
    counted over the real tokens of ``attention_mask`` (1 = token, 0 = padding; left padding
    does not shift positions), else they continue from ``kv_cache.length``.

    Shapes:
        input_ids: (B, T) int -> (B, T, dim).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        pos: str | None = None,
        max_positions: int = 1024,
        type_vocab_size: int = 0,
        scale: float | None = None,
        norm_layer: LayerType = None,
        drop: float = 0.0,
        init_std: float = 0.02,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("dim", dim)
        check_positive_int("max_positions", max_positions)
        check_choice("pos", pos, POSITIONS)
        check_probability("drop", drop)
        if isinstance(type_vocab_size, bool) or not isinstance(type_vocab_size, int) or type_vocab_size < 0:
            raise SpecError(f"type_vocab_size={type_vocab_size!r} must be an integer >= 0")
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.dim, self.pos_type = vocab_size, dim, pos
        self.max_positions, self.init_std = max_positions, init_std
        self.scale = 1.0 if scale is None else float(scale)
        self.token = nn.Embedding(vocab_size, dim, **factory)
        self.pos: nn.Module | None = None
        if pos == "learned":
            self.pos = LearnedPositionalEmbedding(dim, max_positions=max_positions, **factory)
        elif pos == "sinusoidal":
            self.pos = SinusoidalPositionalEmbedding(dim, **factory)
        self.segment = nn.Embedding(type_vocab_size, dim, **factory) if type_vocab_size else None
        self.norm = get_norm_layer(norm_layer)(dim, **factory)
        self.drop = nn.Dropout(drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.token.weight, std=self.init_std)
        for m in (self.pos, self.segment, self.norm):
            if m is not None and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        kwargs = {"vocab_size": 11, "dim": 8, "pos": "learned", "max_positions": 6,
                  "type_vocab_size": 2, "norm_layer": "layernorm"}
        ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
        return Example(kwargs, (ids,))

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        kv_cache: Any = None,
    ) -> Tensor:
        check_token_ids(input_ids)
        check_cache(kv_cache)
        B, T = input_ids.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if attention_mask is not None:
            check_attention_mask(attention_mask, B, offset + T)
        if self.pos is None and position_ids is not None:
            raise ValueError(
                "position_ids apply to absolute positions (pos='learned' or 'sinusoidal'); "
                "with positions inside attention they follow the cache offset"
            )
        x = self.token(input_ids)
        if self.scale != 1.0:
            x = x * self.scale
        x = add_positions(x, self.pos, attention_mask, position_ids, offset)
        if self.segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.segment(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but the embedding has no segments")
        return self.drop(self.norm(x))

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}, pos={self.pos_type!r}"


@register_block("lm_head")
class LMHead(Linear):
    """The output projection of a language model: ``logits = W h (+ b)``, optionally only
    for the last ``logits_to_keep`` positions (decoding needs just the last one).

    Shapes:
        (B, T, in_features) -> (B, T or logits_to_keep, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def example(cls) -> Example:
        g = torch.Generator().manual_seed(0)
        return Example({"in_features": 8, "out_features": 11}, (torch.randn(2, 5, 8, generator=g),))

    def forward(self, x: Tensor, *, logits_to_keep: int | None = None) -> Tensor:  # type: ignore[override]
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]  # (B, n, in_features): skip earlier positions
        return super().forward(x)

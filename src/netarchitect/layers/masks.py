"""Masks and positions of token sequences, in the Hugging Face convention at the model level.

A model-level ``attention_mask`` (B, S) is 1/True for real tokens and 0/False for padding;
attention layers take a ``key_padding_mask`` (True = padding), made here. ``S`` counts the
cached positions too when decoding with a key/value cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["absolute_positions", "check_attention_mask", "check_token_ids", "padding_mask"]


def check_token_ids(input_ids: Tensor) -> None:
    """Raise unless ``input_ids`` is a (B, T) integer tensor with T >= 1."""
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"expected integer token ids of shape (B, T), got {got}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids has no tokens (T = 0)")


def check_attention_mask(attention_mask: Tensor, batch: int, length: int) -> None:
    """Raise unless ``attention_mask`` has shape (B, S) = ``(batch, length)``."""
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"attention_mask must have shape (B, S) = {(batch, length)} (S = cached + new "
            f"tokens), got {tuple(attention_mask.shape)}"
        )


def padding_mask(attention_mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """``key_padding_mask`` (True = padding) from an ``attention_mask`` (1 = real token).

    ``None`` when there is no mask or nothing is padded (so attention keeps its fast path).
    """
    if attention_mask is None:
        return None
    check_attention_mask(attention_mask, batch, length)
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

"""Merged Q/K/V projections for :class:`~netarchitect.layers.attention.MultiHeadAttention`.

:func:`merge_qkv` turns an attention module (in place) into a :class:`FusedQKVAttention`:
one ``(H + 2 H_kv) D × dim`` weight holds the three projections, so self-attention
runs one matmul with no per-call concatenation. ``q_proj``/``k_proj``/``v_proj`` stay
as parameter-free views of its rows (cross-attention and cached decoding use them).

The state dict keeps the unmerged names (``q_proj.weight``, ...), so a merged model's
weights load into the unmerged block its spec builds, and back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.attention import MultiHeadAttention

__all__ = ["FusedQKVAttention", "merge_qkv"]

_PROJS = ("q_proj", "k_proj", "v_proj")


class _RowSlice(nn.Module):
    """``F.linear`` with rows ``[start, stop)`` of the owner's merged weight (no parameters).

    Shapes:
        input ``(*, in_features)`` -> output ``(*, stop - start)``.
    """

    _owner: Any  # the FusedQKVAttention holding the merged weight

    def __init__(self, owner: FusedQKVAttention, start: int, stop: int) -> None:
        super().__init__()
        self.__dict__["_owner"] = owner  # not a submodule: the owner holds the parameters
        self.start, self.stop = start, stop

    @property
    def weight(self) -> Tensor:
        return self._owner.qkv_weight[self.start : self.stop]

    @property
    def bias(self) -> Tensor | None:
        bias = self._owner.qkv_bias
        return None if bias is None else bias[self.start : self.stop]

    @property
    def in_features(self) -> int:
        return int(self._owner.qkv_weight.shape[1])

    @property
    def out_features(self) -> int:
        return self.stop - self.start

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"rows={self.start}:{self.stop}"


class FusedQKVAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` with one merged ``qkv_weight`` (and ``qkv_bias``).

    Made by :func:`merge_qkv`, never constructed directly. Self-attention computes
    ``[q | k | v] = x Wᵀ + b`` in one matmul; the result equals the unmerged block's.

    Shapes:
        as :class:`MultiHeadAttention`.
    """

    qkv_weight: nn.Parameter
    qkv_bias: nn.Parameter | None

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x.shape
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)  # (B, T, (H + 2 H_kv) D)
        sizes = [self.num_heads * self.head_dim] + [self.num_kv_heads * self.head_dim] * 2
        q, k, v = qkv.split(sizes, dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, self.k_norm(k), v

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for kind in ("weight", "bias"):
            merged = destination.pop(f"{prefix}qkv_{kind}", None)
            if merged is None:
                continue
            for name in _PROJS:
                view = getattr(self, name)
                rows = merged[view.start : view.stop]
                destination[f"{prefix}{name}.{kind}"] = rows if keep_vars else rows.clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for kind in ("weight", "bias"):
            keys = [f"{prefix}{name}.{kind}" for name in _PROJS]
            if all(k in state_dict for k in keys):
                state_dict[f"{prefix}qkv_{kind}"] = torch.cat([state_dict.pop(k) for k in keys])
        super()._load_from_state_dict(state_dict, prefix, *args)


@torch.no_grad()
def merge_qkv(attn: MultiHeadAttention) -> MultiHeadAttention:
    """Merge ``attn``'s Q/K/V projections in place (its class becomes
    :class:`FusedQKVAttention`) and return it. A block already merged, or built for
    cross-attention only (``context_dim != dim``: Q and K/V read different inputs), is
    returned as it is."""
    if isinstance(attn, FusedQKVAttention) or attn.context_dim != attn.dim:
        return attn
    projs = [getattr(attn, name) for name in _PROJS]
    weight = torch.cat([p.weight for p in projs])
    bias = None if projs[0].bias is None else torch.cat([p.bias for p in projs])
    grad = projs[0].weight.requires_grad
    attn.__class__ = FusedQKVAttention
    fused: FusedQKVAttention = attn  # type: ignore[assignment]
    start = 0
    for name, proj in zip(_PROJS, projs, strict=True):
        delattr(fused, name)
        setattr(fused, name, _RowSlice(fused, start, start + proj.out_features))
        start += proj.out_features
    fused.qkv_weight = nn.Parameter(weight, requires_grad=grad)
    fused.qkv_bias = None if bias is None else nn.Parameter(bias, requires_grad=grad)
    return fused

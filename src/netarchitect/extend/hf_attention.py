"""Swap transformers' attention modules for ours, weights carried over.

:func:`swap_hf_attention` replaces every ``GPT2Attention`` and ``BertAttention`` of a
transformers model by :class:`HFAttention`: our
:class:`~netarchitect.layers.attention.MultiHeadAttention` (q/k/v/out projections, so
LoRA, pruning and analysis see separate q/k/v layers) behind the call signature
transformers uses. GPT-2's fused ``c_attn`` is split into q/k/v (its ``Conv1D`` weights
transposed); BERT's output projection, dropout and residual LayerNorm move along. Outputs
equal the original's (float32, ~1e-6), with or without padding masks.

The swapped model keeps no transformers KV cache: ``config.use_cache`` is set to False,
and a call that passes a cache is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, SpecError
from ..layers.attention import MultiHeadAttention
from .swap import swap_modules

__all__ = ["HFAttention", "swap_hf_attention"]


class HFAttention(nn.Module):
    """Our attention called as a transformers attention module.

    ``forward(hidden_states, attention_mask=None, **kwargs) -> (output, None)``; the mask is
    transformers' 4-D one (bool: True = attend, or float added to the scores), or ``None``
    (then causal models attend causally). With ``norm`` (BERT) the output is
    ``norm(attention(x) + x)``.

    Shapes:
        hidden_states: (B, T, dim) -> output (B, T, dim).
    """

    def __init__(self, attn: MultiHeadAttention, *, causal: bool, norm: nn.Module | None = None):
        super().__init__()
        self.attn = attn
        self.causal = causal
        self.norm = norm

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None,
                *args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise NetArchitectError("swapped attention keeps no transformers KV cache: call the "
                                    "model with use_cache=False")
        if kwargs.get("encoder_hidden_states") is not None:
            raise NetArchitectError("swapped attention is self-attention only")
        causal = self.causal and attention_mask is None
        out = self.attn(hidden_states, mask=attention_mask, is_causal=causal)
        if self.norm is not None:
            out = self.norm(out + hidden_states)
        return out, None


def _ours(dim: int, heads: int, scale: float | None, attn_drop: float, proj_drop: float,
          like: Tensor) -> MultiHeadAttention:
    return MultiHeadAttention(dim, heads, attn_drop=attn_drop, proj_drop=proj_drop, scale=scale,
                              device=like.device, dtype=like.dtype)


def _copy(linear: nn.Linear, weight: Tensor, bias: Tensor | None) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)


def _from_gpt2(old: Any) -> nn.Module:
    if old.is_cross_attention:
        raise SpecError("GPT-2 cross-attention cannot be swapped (self-attention only)",
                        path="from_type")
    weight = old.c_attn.weight
    attn = _ours(old.embed_dim, old.num_heads, old.scaling, old.attn_dropout.p,
                 old.resid_dropout.p, weight)
    q, k, v = weight.t().chunk(3, dim=0)
    qb, kb, vb = old.c_attn.bias.chunk(3, dim=0)
    for proj, w, b in ((attn.q_proj, q, qb), (attn.k_proj, k, kb), (attn.v_proj, v, vb)):
        _copy(proj, w, b)
    _copy(attn.out_proj, old.c_proj.weight.t(), old.c_proj.bias)
    return HFAttention(attn, causal=True)


def _from_bert(old: Any) -> nn.Module:
    self_attn, output = old.self, old.output
    if getattr(old, "is_cross_attention", False) or getattr(self_attn, "is_cross_attention", False):
        raise SpecError("BERT cross-attention cannot be swapped (self-attention only)",
                        path="from_type")
    kind = getattr(self_attn, "position_embedding_type", "absolute") or "absolute"
    if kind != "absolute":
        raise SpecError(f"BERT attention with position_embedding_type={kind!r} cannot be "
                        "swapped (absolute positions only)", path="from_type")
    weight = self_attn.query.weight
    attn = _ours(weight.shape[1], self_attn.num_attention_heads,
                 getattr(self_attn, "scaling", None), self_attn.dropout.p, output.dropout.p,
                 weight)
    for ours, theirs in ((attn.q_proj, self_attn.query), (attn.k_proj, self_attn.key),
                         (attn.v_proj, self_attn.value), (attn.out_proj, output.dense)):
        _copy(ours, theirs.weight, theirs.bias)
    return HFAttention(attn, causal=False, norm=output.LayerNorm)


_CONVERTERS = {"GPT2Attention": _from_gpt2, "BertAttention": _from_bert}


def swap_hf_attention(model: nn.Module) -> nn.Module:
    """A copy of the transformers ``model`` whose attention modules are ours (see the module
    doc); the input model is left as it is."""
    classes = tuple({type(m) for m in model.modules() if type(m).__name__ in _CONVERTERS})
    if not classes:
        raise SpecError(f"{type(model).__name__} has no transformers attention to swap "
                        f"(supported: {', '.join(_CONVERTERS)})", path="from_type")
    new = swap_modules(model, classes, lambda old: _CONVERTERS[type(old).__name__](old),
                       weights="init")
    config = getattr(new, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False
    return new

"""Make ``F.scaled_dot_product_attention`` on the meta device use the fused kernel.

On real tensors PyTorch runs a fused kernel (flash attention on CPU) that saves only
``q, k, v``, the output and a log-sum-exp for backward; on ``meta`` it falls back to the
math path, which also saves the ``L x S`` attention matrix. Memory measured on meta
would then overstate training memory by that matrix per layer. Inside this mode, a
top-level ``F.scaled_dot_product_attention`` call on meta tensors that the CPU kernel
supports (4-D, equal head dims, no grouped-query broadcast) runs
``aten._scaled_dot_product_flash_attention_for_cpu`` instead, exactly as on CPU.
Calls nested inside other torch functions (``nn.MultiheadAttention``'s
``F.multi_head_attention_forward``) are not seen by a function mode and stay unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__: list[str] = []  # private module

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _fused_on_meta(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    tensors = (query, key, value)
    if not all(isinstance(t, torch.Tensor) and t.is_meta and t.dim() == 4 for t in tensors):
        return None
    same_heads = query.shape[:2] == key.shape[:2] == value.shape[:2]
    same_dims = query.shape[-1] == key.shape[-1] == value.shape[-1]
    if enable_gqa or not same_heads or not same_dims or query.dtype not in _FLOATS:
        return None
    if attn_mask is not None and is_causal:
        return None
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )
    return out


class FusedAttentionOnMeta(TorchFunctionMode):
    """Torch-function mode redirecting meta SDPA calls to the fused CPU kernel."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            out = _fused_on_meta(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

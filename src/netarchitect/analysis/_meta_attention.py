"""On the meta device, run ``F.scaled_dot_product_attention`` with the kernel CPU would pick.

On CPU tensors PyTorch picks, by ``sdp_utils``' CPU rules (``select_sdp_backend_cpp``),
either its fused flash kernel, which saves only q, k, v, the output and a log-sum-exp for
backward, or the math path, which also saves the ``L x S`` attention matrix (and, with
dropout, the dropout mask and the dropped matrix). Flash needs 4-D inputs, one head dim
for q, k and v, last-dim stride 1, non-empty sequences, **no dropout**
(``check_for_dropout``: attention dropout in training always runs the math path), a mask
that broadcasts and needs no gradient, and the flash backend enabled. On meta tensors
PyTorch always takes the math path.

:func:`cpu_attention_backend` asks PyTorch's own chooser (``torch._fused_sdp_choice``)
about stand-in CPU tensors with the same shapes, dtypes, last-dim strides and
``requires_grad`` (expanded views: no memory), and :func:`fused_attention_on_meta` runs
``aten._scaled_dot_product_flash_attention_for_cpu`` (its meta function) exactly where
CPU would, after converting a boolean mask to the additive float mask CPU passes to the
kernel. Elsewhere the call is left alone, so meta runs the same math path as CPU.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend
from torch.utils._python_dispatch import _disable_current_modes

__all__: list[str] = []  # private module


def _cpu_stand_in(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A CPU tensor with ``t``'s shape, dtype, last-dim stride (1 or not) and grad flag."""
    dtype = dtype or t.dtype
    if t.dim() == 0:
        return torch.zeros((), dtype=dtype)
    last = int(t.shape[-1])
    unit = t.stride(-1) == 1 or last <= 1
    base = torch.zeros(last if unit else (last, 2), dtype=dtype)
    if t.requires_grad and dtype.is_floating_point:
        base.requires_grad_()
    row = base if unit else base[:, 0]
    return row.expand(t.shape)


def cpu_attention_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> str:
    """``"flash"`` or ``"math"``: the SDPA kernel CPU tensors of these shapes would run.

    The stand-ins and the choice run outside any dispatch mode (a FLOP counter or memory
    tracer active around the call never sees this bookkeeping).
    """
    with _disable_current_modes():
        mask = None
        if attn_mask is not None:
            converted = query.dtype if attn_mask.dtype == torch.bool else None
            mask = _cpu_stand_in(attn_mask, converted)
        choice = torch._fused_sdp_choice(
            _cpu_stand_in(query),
            _cpu_stand_in(key),
            _cpu_stand_in(value),
            mask,
            dropout_p,
            is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    return "flash" if choice == int(SDPBackend.FLASH_ATTENTION) else "math"


def fused_attention_on_meta(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    """The fused kernel's output on meta tensors where CPU would fuse, else ``None``."""
    if not all(isinstance(t, torch.Tensor) and t.is_meta for t in (query, key, value)):
        return None
    if attn_mask is not None and is_causal:
        return None  # PyTorch rejects the combination: let it raise its own error
    backend = cpu_attention_backend(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
    )
    if backend != "flash":
        return None
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # convert_boolean_attn_mask
        zero = torch.scalar_tensor(0.0, dtype=query.dtype, device=attn_mask.device)
        minus_inf = torch.scalar_tensor(float("-inf"), dtype=query.dtype, device=attn_mask.device)
        attn_mask = torch.where(attn_mask, zero, minus_inf)
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )
    return out

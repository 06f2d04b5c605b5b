"""FLOP formulas of attention: every SDPA kernel, ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` fast paths (conventions: :mod:`.flop_formulas`).

Nested tensors (the padding-mask fast path of ``nn.TransformerEncoder`` and of
``nn.MultiheadAttention``) are counted at their *padded* shape: as if the dense padded
tensors had been processed, with the padding mask applied. The padded shape is the dense
input a nested tensor was built from by ``aten._nested_tensor_from_mask`` (recorded by
:func:`remember_padding`, inherited by the fast-path outputs), so the fast path counts
exactly what the dense path would on the same padded input; a nested tensor of unknown
origin is padded to its longest sequence.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ._flop_registry import NORM, SOFTMAX, SOFTMAX_BACKWARD, Cost, Formula, formula, prod

__all__ = ["attention_cost", "padded_shape", "remember_padding"]

_PADDED: WeakIdKeyDictionary = WeakIdKeyDictionary()  # nested tensor -> padded (B, T)


def remember_padding(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
    """Record the dense shape a nested tensor was built from (``_nested_tensor_from_mask``)."""
    dense = args[0] if args else kwargs["t"]
    if isinstance(out, torch.Tensor) and out.is_nested:
        _PADDED[out] = tuple(int(s) for s in dense.shape[:2])


def _inherit_padding(out: Any, source: torch.Tensor) -> None:
    result = out if isinstance(out, torch.Tensor) else out[0]
    if source.is_nested and result.is_nested and source in _PADDED:
        _PADDED[result] = _PADDED[source]


def padded_shape(t: torch.Tensor) -> tuple[int, ...]:
    """Shape of ``t``; for a nested ``(B, *, E)`` tensor, its padded dense shape."""
    if not t.is_nested:
        return tuple(int(s) for s in t.shape)
    sizes = t._nested_tensor_size()  # (B, dims): one row per sequence
    rest = tuple(int(s) for s in sizes.amax(0).tolist()) if len(sizes) else ()
    known = _PADDED.get(t)
    if known is not None:
        return (*known, *rest[1:])
    return (int(sizes.shape[0]), *rest)


def attention_cost(
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    v_shape: Sequence[int],
    *,
    masked: bool = False,
    dropout: bool = False,
    backward: bool = False,
) -> Cost:
    """Cost of ``softmax(q k^T * scale + mask) v`` over the full score matrix.

    Shapes are ``(..., L, E)``, ``(..., S, E)``, ``(..., S, Ev)``; the leading dims of
    ``q`` (batch x heads) set the number of score matrices (grouped-query keys are
    broadcast to the query heads).
    """
    *batch_dims, length, e = (int(s) for s in q_shape)
    source = int(k_shape[-2])
    ev = int(v_shape[-1])
    batch = prod(batch_dims)
    scores = batch * length * source
    macs = scores * (e + ev)
    group = 1
    if len(q_shape) >= 3 and len(k_shape) >= 3 and int(k_shape[-3]) not in (0, q_shape[-3]):
        group = int(q_shape[-3]) // int(k_shape[-3])
    scaling = batch * length * e + prod(k_shape) * group
    drop = scores if dropout else 0
    if backward:
        # grouped-query keys/values: their gradients are summed over the query groups
        regroup = (prod(k_shape) + prod(v_shape)) * group if group > 1 else 0
        return 2 * macs, SOFTMAX_BACKWARD * scores + scaling + drop + regroup
    return macs, scaling + (scores if masked else 0) + SOFTMAX * scores + drop


def _bhle(t: torch.Tensor) -> tuple[int, ...]:
    """(B, S, H, E) layout of the xformers/flash kernels → (B, H, S, E)."""
    shape = tuple(int(s) for s in t.shape)
    if len(shape) == 4:
        return (shape[0], shape[2], shape[1], shape[3])
    return (shape[1], shape[0], shape[2])  # varlen (total, H, E)


def _seq_lengths(cu: Any) -> list[int] | None:
    if not isinstance(cu, torch.Tensor) or cu.is_meta or cu.numel() < 2:
        return None
    values = [int(v) for v in cu.tolist()]
    return [b - a for a, b in itertools.pairwise(values)]


def _varlen_cost(a: dict[str, Any], names: tuple[str, str], **flags: bool) -> Cost:
    q, k, v = a["query"], a["key"], a["value"]
    lq, lk = _seq_lengths(a.get(names[0])), _seq_lengths(a.get(names[1]))
    if lq is None or lk is None:
        return attention_cost(_bhle(q), _bhle(k), _bhle(v), **flags)
    heads, e, hk, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    macs = other = 0
    for length, source in zip(lq, lk):
        m, o = attention_cost((heads, length, e), (hk, source, e), (hk, source, ev), **flags)
        macs, other = macs + m, other + o
    return macs, other


def _sdpa_flags(a: dict[str, Any], backward: bool) -> dict[str, bool]:
    mask = a.get("attn_mask", a.get("attn_bias", a.get("bias")))
    causal = bool(a.get("is_causal", False)) or bool(a.get("custom_mask_type", 0))
    dropout = float(a.get("dropout_p", 0.0) or 0.0) > 0
    return {"masked": mask is not None or causal, "dropout": dropout, "backward": backward}


def _sdpa(backward: bool) -> Formula:
    def fn(a: dict[str, Any], out: Any) -> Cost:
        q, k, v = a["query"], a["key"], a["value"]
        return attention_cost(q.shape, k.shape, v.shape, **_sdpa_flags(a, backward))

    return fn


def _sdpa_varlen(backward: bool, names: tuple[str, str]) -> Formula:
    def fn(a: dict[str, Any], out: Any) -> Cost:
        return _varlen_cost(a, names, **_sdpa_flags(a, backward))

    return fn


formula(
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_attention_math_for_mps",
)(_sdpa(backward=False))
formula(
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
)(_sdpa(backward=True))
formula("_efficient_attention_forward")(_sdpa_varlen(False, ("cu_seqlens_q", "cu_seqlens_k")))
formula("_efficient_attention_backward")(_sdpa_varlen(True, ("cu_seqlens_q", "cu_seqlens_k")))
formula("_flash_attention_forward")(_sdpa_varlen(False, ("cum_seq_q", "cum_seq_k")))
formula("_flash_attention_backward")(_sdpa_varlen(True, ("cum_seq_q", "cum_seq_k")))


def _mha_cost(
    q: Sequence[int],
    k: Sequence[int],
    v: Sequence[int],
    num_heads: int,
    *,
    has_bias: bool,
    masked: bool,
    need_weights: bool,
    average: bool,
) -> Cost:
    """``nn.MultiheadAttention`` as its unfused path computes it (batch-first shapes)."""
    e = int(q[-1])
    d = e // num_heads
    heads_shape = (*q[:-2], num_heads, q[-2], d)
    k_shape = (*k[:-2], num_heads, k[-2], d)
    v_shape = (*v[:-2], num_heads, v[-2], d)
    nq, nk, nv = prod(q), prod(k), prod(v)
    proj_macs = (nq + nk + nv) * e + nq * e
    proj_other = (nq + nk + nv + nq) if has_bias else 0
    if need_weights:  # explicit bmm path: q scaled once, softmax, optional head average
        macs, _ = attention_cost(heads_shape, k_shape, v_shape)
        scores = macs // (2 * d)
        other = nq + (scores if masked else 0) + SOFTMAX * scores
        other += scores if average else 0
    else:
        macs, other = attention_cost(heads_shape, k_shape, v_shape, masked=masked)
    return proj_macs + macs, proj_other + other


@formula("_native_multi_head_attention")
def _native_mha(a: dict[str, Any], out: Any) -> Cost:
    """Fused ``nn.MultiheadAttention`` (eval + no_grad fast path; nested: padded shape)."""
    query = a["query"]
    _inherit_padding(out, query)
    return _mha_cost(
        padded_shape(query),
        padded_shape(a["key"]),
        padded_shape(a["value"]),
        int(a["num_head"]),
        has_bias=a.get("qkv_bias") is not None,
        masked=a.get("mask") is not None or query.is_nested,
        need_weights=bool(a.get("need_weights", True)),
        average=bool(a.get("average_attn_weights", True)),
    )


@formula("_transformer_encoder_layer_fwd")
def _encoder_layer(a: dict[str, Any], out: Any) -> Cost:
    """Fused ``nn.TransformerEncoderLayer`` (eval + no_grad fast path; nested: padded shape).

    A nested input stands for its padded dense tensor with the key padding mask, which
    the dense path applies to every score (one other FLOP each).
    """
    src = a["src"]
    _inherit_padding(out, src)
    shape = padded_shape(src)
    n, dim = prod(shape), int(shape[-1])
    hidden = int(a["ffn_weight_1"].shape[0])
    tokens = n // dim
    macs, other = _mha_cost(
        shape,
        shape,
        shape,
        int(a["num_heads"]),
        has_bias=a.get("qkv_bias") is not None,
        masked=a.get("mask") is not None or src.is_nested,
        need_weights=False,
        average=False,
    )
    norms = 2 * n * (NORM + 2)
    ffn_macs = 2 * tokens * dim * hidden
    ffn_other = 2 * tokens * hidden + n  # bias + activation, then bias
    return macs + ffn_macs, other + ffn_other + norms + 2 * n  # + two residual adds

"""Multi-head attention: self/cross, grouped-query, qk-norm, RoPE/ALiBi/relative bias, windows."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block, suggest
from ._factory import LayerType, check_probability
from .basic import Linear
from .kv_cache import KVCache
from .norm import get_norm_layer
from .positional import ALiBiBias, RelativePositionBias, RopeScaling, RotaryEmbedding, apply_rotary

__all__ = ["POSITIONAL_SCHEMES", "MultiHeadAttention", "calling_thread_only"]

POSITIONAL_SCHEMES = (None, "rope", "alibi", "relative")


#: From this many tokens per call the q/k/v projections run as one fused matmul.
FUSE_MIN_TOKENS = 64

#: Up to this many attention scores per call (B·H·T·S: every decoding step over a short
#: cache, a short prompt), ``F.scaled_dot_product_attention`` runs on the calling thread
#: (:func:`calling_thread_only`). With more threads it opens a parallel region per call
#: even for such small work, and waking the other threads costs more than the arithmetic:
#: tens of microseconds on an idle machine, milliseconds on a loaded one (GPT-2 small
#: decoding on 2 busy cores: 4-12 ms per call, against 15 µs of work on one thread).
SMALL_ATTENTION_SCORES = 16384


@functools.cache
def _openmp() -> bool:
    """Whether ATen runs on OpenMP, where the intra-op thread count is cheap to change and
    applies to the calling thread only."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextmanager
def calling_thread_only() -> Iterator[None]:
    """Run the ops inside on the calling thread (no intra-op parallel region), for work too
    small to repay waking other threads. A no-op under ``torch.compile``, with one thread
    already, or where ATen's parallel backend is not OpenMP."""
    threads = 1 if torch.compiler.is_compiling() else torch.get_num_threads()
    if threads == 1 or not _openmp():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@register_block("multi_head_attention")
class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017) with modern options.

    ``out = W_o concat_h softmax(q_h k_hᵀ · scale + bias_h + mask) v_h`` with
    ``q = W_q x``, ``k = W_k c``, ``v = W_v c`` where ``c = x`` (self-attention) or
    ``c = context`` (cross-attention). Computed by ``F.scaled_dot_product_attention``, on
    the calling thread alone for calls of at most :data:`SMALL_ATTENTION_SCORES` scores
    (decoding steps), whose work is too small to repay a parallel region.

    Options:
        num_kv_heads: grouped-query attention (Ainslie et al. 2023); ``1`` is
            multi-query. Query head ``h`` uses key/value head ``h // (H / H_kv)``.
        qk_norm: a norm name/class applied to each head's queries and keys.
        pos: ``"rope"`` (rotary, queries and keys rotated by their position),
            ``"alibi"`` (``-slope_h |i - j|`` bias) or ``"relative"`` (learned
            per-head bias of the clipped distance ``j - i``, ``|j-i| < max_positions``;
            T5 log buckets when ``num_buckets`` is set). Self-attention only.
        window: sliding window; key ``j`` is visible from query ``i`` only if
            ``|i - j| < window`` (with ``is_causal``: ``0 <= i - j < window``).

    Masks (``forward``):
        key_padding_mask: (B, S) bool, **True = padding (ignored)** — as in torch.
        mask: bool with **True = may attend** (the ``F.scaled_dot_product_attention``
            convention, the opposite of ``nn.MultiheadAttention``'s ``attn_mask``),
            or a float mask added to the scores; shape (T, S), (B, T, S) or (B, H, T, S).
        is_causal: query ``i`` sees keys at positions ``<= i``. Queries are aligned to
            the end of the keys (query ``i`` has position ``S - T + i``), which is what
            decoding with a :class:`~netarchitect.layers.kv_cache.KVCache` needs.
        A query whose keys are all masked gets a zero attention output (so
        ``out_proj.bias`` after projection), never NaN.
        kv_cache: a :class:`~netarchitect.layers.kv_cache.KVCache` to append to and
        attend over (incremental decoding; RoPE/ALiBi/relative positions continue
        from the cached length). With ``context`` it caches the projected context
        instead: filled on the first call, reused (``context`` not re-projected) after.
        return_attention: also return the attention probabilities
        ``softmax(q kᵀ · scale + bias + mask)`` (B, H, T, S) (before dropout; zero rows for
        queries whose keys are all masked). They are computed explicitly *next to* the fused
        kernel, whose output is returned unchanged. Setting :attr:`attention_store` to a
        list appends every call's probabilities to it instead (how
        :func:`~netarchitect.analysis.attention_maps.attention_maps` reads a whole model).

    Parameters are ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (``nn.Linear``);
    self-attention runs them as one matmul over the concatenated weights.

    Shapes:
        x: (B, T, dim); context: (B, S, context_dim); output: (B, T, dim).
    """

    #: When a list, every forward appends its attention probabilities (B, H, T, S) to it.
    attention_store: list[Tensor] | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        out_bias: bool = True,
        qk_norm: LayerType = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pos: str | None = None,
        rope_base: float = 10000.0,
        rope_scaling: RopeScaling = None,
        max_positions: int = 128,
        num_buckets: int | None = None,
        window: int | None = None,
        context_dim: int | None = None,
        scale: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise SpecError(f"dim must be >= 1, got {dim}", path="dim")
        if num_heads < 1:
            raise SpecError(f"num_heads must be >= 1, got {num_heads}", path="num_heads")
        if head_dim is None:
            if dim % num_heads:
                raise SpecError(f"{num_heads} does not divide dim={dim}", path="num_heads")
            head_dim = dim // num_heads
        elif head_dim < 1:
            raise SpecError(f"head_dim must be >= 1, got {head_dim}", path="head_dim")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise SpecError(
                f"{num_kv_heads} does not divide num_heads={num_heads}", path="num_kv_heads"
            )
        if pos not in POSITIONAL_SCHEMES:
            raise SpecError(
                f"unknown positional scheme {pos!r}{suggest(str(pos), POSITIONAL_SCHEMES[1:])}; "
                f"choose one of {POSITIONAL_SCHEMES}",
                path="pos",
            )
        if window is not None and window < 1:
            raise SpecError(f"window must be >= 1, got {window}", path="window")
        check_probability("attn_drop", attn_drop)
        check_probability("proj_drop", proj_drop)
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.context_dim = context_dim or dim
        self.pos = pos
        self.window = window
        self.attn_drop = attn_drop
        self.scale = scale
        self.q_proj = Linear(dim, num_heads * head_dim, bias=qkv_bias, **factory)
        self.k_proj = Linear(self.context_dim, num_kv_heads * head_dim, bias=qkv_bias, **factory)
        self.v_proj = Linear(self.context_dim, num_kv_heads * head_dim, bias=qkv_bias, **factory)
        self.out_proj = Linear(num_heads * head_dim, dim, bias=out_bias, **factory)
        make_norm = get_norm_layer(qk_norm)
        self.q_norm = make_norm(head_dim, **factory)
        self.k_norm = make_norm(head_dim, **factory)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rotary: RotaryEmbedding | None = None
        self.pos_bias: nn.Module | None = None
        if pos == "rope":
            self.rotary = RotaryEmbedding(head_dim, base=rope_base, scaling=rope_scaling, **factory)
        elif pos == "alibi":
            self.pos_bias = ALiBiBias(num_heads, **factory)
        elif pos == "relative":
            self.pos_bias = RelativePositionBias(
                num_heads, max_distance=max_positions, num_buckets=num_buckets, **factory
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        for m in (self.q_norm, self.k_norm, self.rotary, self.pos_bias):
            if m is not None and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        g = torch.Generator().manual_seed(0)
        kwargs = {"dim": 16, "num_heads": 4, "num_kv_heads": 2, "pos": "rope"}
        return Example(kwargs, (torch.randn(2, 5, 16, generator=g),), name="gqa_rope")

    @classmethod
    def examples(cls) -> list[Example]:
        """Self-attention (GQA + RoPE), causal with ALiBi, windowed relative bias with
        qk-norm, multi-query, and cross-attention over a context of another width."""
        g = torch.Generator().manual_seed(0)
        x, ctx = torch.randn(2, 5, 16, generator=g), torch.randn(2, 7, 12, generator=g)
        return [
            cls.example(),
            Example({"dim": 16, "num_heads": 4, "pos": "alibi"}, (x,),
                    forward_kwargs={"is_causal": True}, name="causal_alibi"),
            Example({"dim": 16, "num_heads": 2, "pos": "relative", "window": 3,
                     "qk_norm": "rmsnorm"}, (x,), name="window_relative_qknorm"),
            Example({"dim": 16, "num_heads": 4, "num_kv_heads": 1, "qkv_bias": False}, (x,),
                    forward_kwargs={"is_causal": True}, name="multi_query_causal"),
            Example({"dim": 16, "num_heads": 2, "context_dim": 12}, (x, ctx), name="cross"),
        ]

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention projections: one matmul over the concatenated weights for many tokens.

        Below :data:`FUSE_MIN_TOKENS` tokens (e.g. the one-token steps of cached decoding)
        concatenating the weights costs as much as the projections, so the three run apart.
        """
        B, T, _ = x.shape
        if B * T < FUSE_MIN_TOKENS or not self._plain_projections():
            q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
            return (q, *self._project_kv(x))  # (B, H, T, D), (B, H_kv, T, D) x 2
        projs = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projs])
        bias = None if self.q_proj.bias is None else torch.cat([p.bias for p in projs])
        qkv = F.linear(x, weight, bias)  # (B, T, (H + 2 H_kv) D)
        q, k, v = qkv.split([p.out_features for p in projs], dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, self.k_norm(k), v

    def _plain_projections(self) -> bool:
        """Whether Q/K/V are float Linears whose weights can be concatenated (not, e.g.,
        quantised modules, whose weight is packed or a tensor subclass)."""
        return all(
            type(getattr(p, "weight", None)) in (Tensor, nn.Parameter)
            and type(getattr(p, "bias", None)) in (Tensor, nn.Parameter, type(None))
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )

    def _project_kv(self, src: Tensor) -> tuple[Tensor, Tensor]:
        B, S, _ = src.shape
        k = self.k_proj(src).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(src).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return self.k_norm(k), v  # (B, H_kv, S, D)

    def _context_kv(self, context: Tensor, kv_cache: KVCache | None) -> tuple[Tensor, Tensor]:
        """Cross-attention keys/values: projected once into ``kv_cache``, then reused."""
        if kv_cache is None or not kv_cache.length:
            k, v = self._project_kv(context)  # (B, H_kv, S, D)
            if kv_cache is not None:
                kv_cache.update(k, v)
            return k, v
        keys, values = kv_cache.keys, kv_cache.values
        assert keys is not None and values is not None
        if context.shape[:2] != (keys.shape[0], keys.shape[2]):
            raise ValueError(
                f"the cross-attention KVCache holds a context of (B, S) = "
                f"{(keys.shape[0], keys.shape[2])}, got {tuple(context.shape[:2])}; "
                "call reset() before a new context"
            )
        return keys, values

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        offset = 0
        if context is None:
            if self.context_dim != self.dim:
                raise ValueError(
                    f"built for cross-attention over context_dim={self.context_dim}: pass context="
                )
            q, k, v = self._project_qkv(x)
        else:
            q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        q = self.q_norm(q)  # (B, H, T, D)
        if context is not None:
            if self.pos is not None:
                raise ValueError(f"pos={self.pos!r} applies to self-attention only, not context")
            k, v = self._context_kv(context, kv_cache)
        else:
            if kv_cache is not None:
                offset = kv_cache.length
            if self.rotary is not None:
                cos, sin = self.rotary(offset, T, q.dtype)
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            if kv_cache is not None:
                k, v = kv_cache.update(k, v)  # (B, H_kv, offset + T, D)
        attn_mask, causal = self._attention_mask(
            q, k.shape[2], mask=mask, key_padding_mask=key_padding_mask, is_causal=is_causal
        )
        small = q.shape[0] * q.shape[1] * T * k.shape[2] <= SMALL_ATTENTION_SCORES
        with calling_thread_only() if small else nullcontext():
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.attn_drop if self.training else 0.0,
                is_causal=causal,
                scale=self.scale,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        out = self.proj_drop(self.out_proj(out))
        if not return_attention and self.attention_store is None:
            return out
        weights = self._attention_weights(q, k, attn_mask, causal)
        if self.attention_store is not None:
            self.attention_store.append(weights)
        return (out, weights) if return_attention else out

    def _attention_weights(
        self, q: Tensor, k: Tensor, attn_mask: Tensor | None, causal: bool
    ) -> Tensor:
        """``softmax(q kᵀ · scale + mask)`` as the fused kernel computes it (in float32);
        rows whose keys are all masked are zero."""
        if self.num_kv_heads != self.num_heads:
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)  # (B, H, S, D)
        scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
        logits = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, S)
        if causal:
            T, S = logits.shape[-2:]
            keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
            logits = logits.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            else:
                logits = logits + attn_mask.float()
        return logits.softmax(-1).nan_to_num(0.0).to(q.dtype)

    def _attention_mask(
        self,
        q: Tensor,
        S: int,
        *,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
    ) -> tuple[Tensor | None, bool]:
        """The ``attn_mask`` and ``is_causal`` to hand SDPA; ``None`` when nothing masks."""
        T = q.shape[2]
        if mask is None and self.pos_bias is None and self.window is None:
            if key_padding_mask is None:
                if not is_causal or T == 1:  # one query at the end sees every key
                    return None, False
                if T == S:
                    return None, True  # pure causal fast path
            elif not is_causal:
                return self._padding(key_padding_mask, q.shape[0], S), False
        device = q.device
        k_pos = torch.arange(S, device=device)
        q_pos = k_pos[S - T :] if T <= S else torch.arange(S - T, S, device=device)
        allowed: Tensor | None = None
        if is_causal or self.window is not None:
            dist = q_pos[:, None] - k_pos[None, :]  # (T, S): i - j
            if is_causal:
                allowed = dist >= 0
            if self.window is not None:
                near = dist < self.window if is_causal else dist.abs() < self.window
                allowed = near if allowed is None else allowed & near
        bias: Tensor | None = None
        if self.pos_bias is not None:
            bias = self.pos_bias(q_pos, k_pos).to(q.dtype)  # (H, T, S)
        if mask is not None:
            if mask.dim() == 3:
                mask = mask.unsqueeze(1)  # (B, 1, T, S)
            if mask.dtype == torch.bool:
                allowed = mask if allowed is None else allowed & mask
            else:
                bias = mask.to(q.dtype) if bias is None else bias + mask.to(q.dtype)
        if key_padding_mask is not None:
            keep = self._padding(key_padding_mask, q.shape[0], S)
            allowed = keep if allowed is None else allowed & keep
        if bias is None:
            return allowed, False
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        return bias, False

    @staticmethod
    def _padding(key_padding_mask: Tensor, B: int, S: int) -> Tensor:
        if key_padding_mask.shape != (B, S):
            raise ValueError(
                f"key_padding_mask must have shape (B, S) = {(B, S)}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask must be bool (True = pad), got {key_padding_mask.dtype}"
            )
        return ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S): True = may attend

    def extra_repr(self) -> str:
        parts = [f"dim={self.dim}", f"num_heads={self.num_heads}"]
        if self.num_kv_heads != self.num_heads:
            parts.append(f"num_kv_heads={self.num_kv_heads}")
        if self.pos is not None:
            parts.append(f"pos={self.pos!r}")
        if self.window is not None:
            parts.append(f"window={self.window}")
        return ", ".join(parts)

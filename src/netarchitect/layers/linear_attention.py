"""Linear (kernelised) attention and attention pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Example, register_block
from ._factory import check_divides, check_positive_int, check_probability, example_tensor
from .attention import MultiHeadAttention

__all__ = ["AttentionPool", "LinearAttention", "elu_feature_map"]

Device = torch.device | str | None
Dtype = torch.dtype | None


def elu_feature_map(x: Tensor) -> Tensor:
    """``φ(x) = elu(x) + 1`` (positive), the feature map of Katharopoulos et al. 2020."""
    return F.elu(x) + 1.0


@register_block("linear_attention")
class LinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

    Softmax is replaced by the kernel ``φ(q)·φ(k)`` with ``φ = elu + 1``, so for
    each head ``out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)``,
    sums over all keys, or over ``j <= i`` when ``is_causal``. Non-causal
    attention computes the (D x D) summary once; causal attention walks the
    sequence in chunks of ``chunk_size`` (a quadratic product inside a chunk plus
    a running state), so memory grows linearly with ``T``. Padded keys
    (``key_padding_mask`` True) are left out of the sums.

    Shapes:
        x: (B, T, dim) -> (B, T, dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        out_bias: bool = True,
        eps: float = 1e-6,
        chunk_size: int = 64,
        proj_drop: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_divides("num_heads", num_heads, "dim", dim)
        check_positive_int("chunk_size", chunk_size)
        check_probability("proj_drop", proj_drop)
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.eps, self.chunk_size = eps, chunk_size
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias, **factory)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias, **factory)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias, **factory)
        self.out_proj = nn.Linear(dim, dim, bias=out_bias, **factory)
        self.proj_drop = nn.Dropout(proj_drop)

    def reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            proj.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 16, "num_heads": 2, "chunk_size": 3}, (example_tensor(2, 7, 16),))

    def _heads(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self, x: Tensor, *, is_causal: bool = False, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        B, T, _ = x.shape
        q = elu_feature_map(self._heads(self.q_proj(x)))
        k = elu_feature_map(self._heads(self.k_proj(x)))
        v = self._heads(self.v_proj(x))
        if key_padding_mask is not None:
            k = k.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        if is_causal:
            num, den = self._causal(q, k, v)
        else:
            kv = torch.einsum("bhsd,bhse->bhde", k, v)  # (B, H, D, D)
            num = torch.einsum("bhtd,bhde->bhte", q, kv)
            den = torch.einsum("bhtd,bhd->bht", q, k.sum(dim=2))
        out = num / (den.unsqueeze(-1) + self.eps)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.dim)
        return self.proj_drop(self.out_proj(out))

    def _causal(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Numerators (B, H, T, D) and denominators (B, H, T) of causal linear attention."""
        B, H, T, D = q.shape
        state = q.new_zeros(B, H, D, D)  # Σ φ(k_j) v_jᵀ over earlier chunks
        norm = q.new_zeros(B, H, D)  # Σ φ(k_j) over earlier chunks
        nums, dens = [], []
        for start in range(0, T, self.chunk_size):
            qc, kc, vc = (t[:, :, start : start + self.chunk_size] for t in (q, k, v))
            scores = (qc @ kc.transpose(-1, -2)).tril()  # (B, H, C, C), j <= i within the chunk
            nums.append(qc @ state + scores @ vc)
            dens.append(qc @ norm.unsqueeze(-1) + scores.sum(-1, keepdim=True))
            state = state + kc.transpose(-1, -2) @ vc
            norm = norm + kc.sum(dim=2)
        return torch.cat(nums, dim=2), torch.cat(dens, dim=2).squeeze(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, chunk_size={self.chunk_size}"


@register_block("attention_pool")
class AttentionPool(nn.Module):
    """Pool tokens with learned queries that attend over them (Set Transformer PMA, CLIP, CaiT).

    ``out = MHA(queries, context=x)``: ``num_queries`` learned vectors cross-attend
    over the tokens (padded tokens ignored with ``key_padding_mask``). With one
    query the pooled vector is returned without the query axis.

    Shapes:
        x: (B, T, dim) -> (B, dim) if ``num_queries == 1`` else (B, num_queries, dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        *,
        num_queries: int = 1,
        qkv_bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_queries", num_queries)
        self.num_queries = num_queries
        self.attn = MultiHeadAttention(
            dim, num_heads, qkv_bias=qkv_bias, device=device, dtype=dtype
        )
        self.query = nn.Parameter(torch.empty(num_queries, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attn.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "num_heads": 2}, (example_tensor(2, 5, 8),))

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        queries = self.query.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, dim)
        out = self.attn(queries, x, key_padding_mask=key_padding_mask)
        return out.squeeze(1) if self.num_queries == 1 else out

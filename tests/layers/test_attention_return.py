"""``MultiHeadAttention(return_attention=True)``: the maps are the softmax of the block's own
logits (computed here from its q/k weights), masks are respected, and the fused default
path is unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.positional import apply_rotary


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    B, T, _ = t.shape
    return t.view(B, T, heads, -1).transpose(1, 2)  # (B, H, T, D)


def _by_hand(m: MultiHeadAttention, x: torch.Tensor, ctx: torch.Tensor | None = None,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D) + bias) from the block's projection weights."""
    src = x if ctx is None else ctx
    q = _heads(x @ m.q_proj.weight.T + m.q_proj.bias, m.num_heads)
    k = _heads(src @ m.k_proj.weight.T + m.k_proj.bias, m.num_kv_heads)
    if m.rotary is not None:
        cos, sin = m.rotary(0, x.shape[1], q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k = k.repeat_interleave(m.num_heads // m.num_kv_heads, dim=1)
    logits = q @ k.transpose(-2, -1) / m.head_dim**0.5
    return (logits if bias is None else logits + bias).softmax(-1)


@pytest.mark.parametrize(
    "kwargs", [{}, {"num_kv_heads": 2, "pos": "rope"}, {"num_kv_heads": 1}], ids=str
)
def test_maps_equal_softmax_of_own_logits(kwargs):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, **kwargs).eval()
    x = _x(2, 5, 16)
    _, attn = m(x, return_attention=True)
    assert attn.shape == (2, 4, 5, 5)
    assert_close(attn, _by_hand(m, x))
    assert_close(attn.sum(-1), torch.ones(2, 4, 5))


def test_cross_attention_maps():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2, context_dim=12).eval()
    x, ctx = _x(2, 5, 16), _x(2, 7, 12, seed=1)
    _, attn = m(x, ctx, return_attention=True)
    assert attn.shape == (2, 2, 5, 7)
    assert_close(attn, _by_hand(m, x, ctx))


def test_alibi_bias_in_maps():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, pos="alibi").eval()
    x = _x(1, 6, 16)
    _, attn = m(x, return_attention=True)
    pos = torch.arange(6)
    assert_close(attn, _by_hand(m, x, bias=m.pos_bias(pos, pos)))


@pytest.mark.parametrize("kwargs", [{}, {"pos": "alibi"}, {"window": 2}], ids=str)
def test_causal_mask_respected(kwargs):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2, **kwargs).eval()
    _, attn = m(_x(2, 6, 16), is_causal=True, return_attention=True)
    upper = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert attn[..., upper].abs().max() == 0
    assert_close(attn.sum(-1), torch.ones(2, 2, 6))


def test_causal_map_matches_hand():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    x = _x(1, 5, 16)
    _, attn = m(x, is_causal=True, return_attention=True)
    bias = torch.zeros(5, 5).masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), -torch.inf)
    assert_close(attn, _by_hand(m, x, bias=bias))


def test_padding_and_float_masks():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    x = _x(2, 5, 16)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    _, attn = m(x, key_padding_mask=pad, return_attention=True)
    assert attn[1, :, :, 3:].abs().max() == 0
    assert_close(attn.sum(-1), torch.ones(2, 2, 5))
    float_mask = _x(5, 5, seed=3)
    _, attn = m(x, mask=float_mask, return_attention=True)
    assert_close(attn, _by_hand(m, x, bias=float_mask))


def test_fully_masked_rows_are_zero():
    m = MultiHeadAttention(8, 2).eval()
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    out, attn = m(_x(1, 3, 8), mask=mask, return_attention=True)
    assert attn[0, :, 1].abs().max() == 0
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs", [{}, {"num_kv_heads": 2, "pos": "rope", "qk_norm": "rmsnorm"},
               {"pos": "relative", "window": 3}], ids=str
)
@pytest.mark.parametrize("tokens", [5, 40])  # below and above the fused-projection threshold
def test_outputs_identical_with_and_without_return_attention(kwargs, tokens):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, **kwargs).eval()
    x = _x(2, tokens, 16)
    plain = m(x, is_causal=True)
    out, attn = m(x, is_causal=True, return_attention=True)
    assert torch.equal(out, plain)
    # the map is the one the fused kernel used: attn @ v reproduces the output
    v = _heads(m.v_proj(x), m.num_kv_heads).repeat_interleave(4 // m.num_kv_heads, dim=1)
    mixed = (attn @ v).transpose(1, 2).reshape(2, tokens, 16)
    assert_close(m.out_proj(mixed), plain, atol=1e-5, rtol=1e-4)


def test_default_path_computes_no_explicit_softmax(monkeypatch):
    m = MultiHeadAttention(16, 4).eval()

    def boom(*_a, **_k):
        raise AssertionError("explicit softmax on the default path")

    monkeypatch.setattr(MultiHeadAttention, "_attention_weights", boom)
    assert m(_x(1, 5, 16)).shape == (1, 5, 16)


def test_attention_store_collects_each_call():
    m = MultiHeadAttention(16, 4).eval()
    m.attention_store = []
    x = _x(1, 5, 16)
    out = m(x)
    m(x[:, :3])
    assert isinstance(out, torch.Tensor)
    assert [tuple(a.shape) for a in m.attention_store] == [(1, 4, 5, 5), (1, 4, 3, 3)]


def test_kv_cache_decoding_maps_cover_the_cache():
    from netarchitect.layers.kv_cache import KVCache

    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2, pos="rope").eval()
    x = _x(1, 4, 16)
    cache = KVCache()
    m(x[:, :3], is_causal=True, kv_cache=cache)
    _, step = m(x[:, 3:], is_causal=True, kv_cache=cache, return_attention=True)
    _, full = m(x, is_causal=True, return_attention=True)
    assert step.shape == (1, 2, 1, 4)
    assert_close(step[:, :, 0], full[:, :, 3])


def test_low_precision_maps_keep_dtype():
    m = MultiHeadAttention(16, 2, dtype=torch.bfloat16).eval()
    _, attn = m(_x(1, 4, 16).bfloat16(), return_attention=True)
    assert attn.dtype == torch.bfloat16
    assert_close(attn.float().sum(-1), torch.ones(1, 2, 4), atol=1e-2, rtol=0)

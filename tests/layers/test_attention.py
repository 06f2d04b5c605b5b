import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.positional import alibi_slopes

B, T, DIM, H = 2, 6, 16, 4


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed))


def _randomize(module, seed=0):
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def _torch_mha(ours, kdim=None):
    ref = nn.MultiheadAttention(DIM, H, batch_first=True, kdim=kdim, vdim=kdim, dropout=0.0)
    with torch.no_grad():
        if kdim is None:
            ref.in_proj_weight.copy_(
                torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
            )
        else:
            ref.q_proj_weight.copy_(ours.q_proj.weight)
            ref.k_proj_weight.copy_(ours.k_proj.weight)
            ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


def _padding(lengths, S):
    return torch.arange(S)[None, :] >= torch.tensor(lengths)[:, None]  # True = pad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_self_attention_equals_torch(causal, padded):
    ours = _randomize(MultiHeadAttention(DIM, H)).eval()
    ref = _torch_mha(ours)
    x = _randn(B, T, DIM)
    kpm = _padding([T, 4], T) if padded else None
    causal_mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = blocked
    expected, _ = ref(x, x, x, key_padding_mask=kpm, attn_mask=causal_mask, need_weights=False)
    assert_close(ours(x, key_padding_mask=kpm, is_causal=causal), expected)
    if causal:  # the same causal mask passed explicitly (True = may attend)
        assert_close(ours(x, mask=~causal_mask, key_padding_mask=kpm), expected)


@pytest.mark.parametrize("padded", [False, True])
def test_cross_attention_equals_torch(padded):
    ours = _randomize(MultiHeadAttention(DIM, H, context_dim=10)).eval()
    ref = _torch_mha(ours, kdim=10)
    x, ctx = _randn(B, T, DIM), _randn(B, 9, 10, seed=1)
    kpm = _padding([9, 3], 9) if padded else None
    expected, _ = ref(x, ctx, ctx, key_padding_mask=kpm, need_weights=False)
    assert_close(ours(x, ctx, key_padding_mask=kpm), expected)


def test_float_and_batched_masks_equal_torch():
    ours = _randomize(MultiHeadAttention(DIM, H)).eval()
    ref = _torch_mha(ours)
    x = _randn(B, T, DIM)
    blocked = _randn(B * H, T, T, seed=3) > 0.5
    blocked[..., 0] = False
    expected, _ = ref(x, x, x, attn_mask=blocked, need_weights=False)
    assert_close(ours(x, mask=~blocked.view(B, H, T, T)), expected)
    additive = _randn(T, T, seed=4)
    expected, _ = ref(x, x, x, attn_mask=additive, need_weights=False)
    assert_close(ours(x, mask=additive), expected)
    blocked3 = _randn(B, T, T, seed=5) > 0.5
    blocked3[..., 0] = False
    mask3 = blocked3.repeat_interleave(H, dim=0)
    expected, _ = ref(x, x, x, attn_mask=mask3, need_weights=False)
    assert_close(ours(x, mask=~blocked3), expected)


def _rope(x, positions, base=10000.0, scaling=1.0):
    D = x.shape[-1]
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = (positions.double()[:, None] / scaling) * inv[None, :]  # (T, D/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def naive_attention(mod, x, *, causal=False, kpm=None, rope_scaling=1.0, context=None):
    """softmax(QKᵀ/√d + bias)V written out, with its own positional code."""
    Bx, Tq, _ = x.shape
    src = x if context is None else context
    S = src.shape[1]
    Hk, D = mod.num_kv_heads, mod.head_dim
    q = F.linear(x, mod.q_proj.weight, mod.q_proj.bias).view(Bx, Tq, mod.num_heads, D)
    k = F.linear(src, mod.k_proj.weight, mod.k_proj.bias).view(Bx, S, Hk, D)
    v = F.linear(src, mod.v_proj.weight, mod.v_proj.bias).view(Bx, S, Hk, D)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    rep = mod.num_heads // Hk
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    pos = torch.arange(S)
    if mod.pos == "rope":
        q, k = _rope(q, pos, scaling=rope_scaling), _rope(k, pos, scaling=rope_scaling)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, T, S)
    i, j = pos[:, None], pos[None, :]
    if mod.pos == "alibi":
        slopes = torch.tensor(alibi_slopes(mod.num_heads))
        scores = scores - slopes[:, None, None] * (i - j).abs()
    if mod.pos == "relative":
        m = mod.pos_bias.max_distance - 1
        table = mod.pos_bias.bias  # (2m+1, H)
        scores = scores + table[(j - i).clamp(-m, m) + m].permute(2, 0, 1)
    allowed = torch.ones(Tq, S, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if mod.window is not None:
        allowed &= (i - j < mod.window) if causal else ((i - j).abs() < mod.window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    if kpm is not None:
        scores = scores.masked_fill(kpm[:, None, None, :], float("-inf"))
    out = scores.softmax(-1) @ v  # (B, H, T, D)
    out = out.transpose(1, 2).reshape(Bx, Tq, -1)
    return F.linear(out, mod.out_proj.weight, mod.out_proj.bias)


@pytest.mark.parametrize("pos", [None, "rope", "alibi", "relative"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 3])
def test_equals_naive_with_positional_schemes(pos, causal, window):
    kw = {"max_positions": 3} if pos == "relative" else {}
    mod = _randomize(MultiHeadAttention(DIM, H, pos=pos, window=window, **kw)).eval()
    x = _randn(B, T, DIM)
    kpm = _padding([T, 5], T)
    assert_close(mod(x, is_causal=causal), naive_attention(mod, x, causal=causal))
    assert_close(
        mod(x, is_causal=causal, key_padding_mask=kpm),
        naive_attention(mod, x, causal=causal, kpm=kpm),
    )


def test_rope_scaling_and_base():
    mod = _randomize(MultiHeadAttention(DIM, H, pos="rope", rope_scaling=4.0)).eval()
    x = _randn(B, T, DIM)
    assert_close(mod(x, is_causal=True), naive_attention(mod, x, causal=True, rope_scaling=4.0))


def test_gqa_with_all_heads_equals_mha():
    mha = _randomize(MultiHeadAttention(DIM, H)).eval()
    gqa = MultiHeadAttention(DIM, H, num_kv_heads=H).eval()
    gqa.load_state_dict(mha.state_dict())
    x = _randn(B, T, DIM)
    assert_close(gqa(x, is_causal=True), mha(x, is_causal=True))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_naive_repeat(kv_heads):
    mod = _randomize(MultiHeadAttention(DIM, H, num_kv_heads=kv_heads, pos="rope")).eval()
    assert mod.k_proj.weight.shape == (kv_heads * DIM // H, DIM)
    x = _randn(B, T, DIM)
    kpm = _padding([T, 2], T)
    assert_close(mod(x, key_padding_mask=kpm), naive_attention(mod, x, kpm=kpm))


def test_causal_mask_blocks_the_future():
    for kw in ({}, {"pos": "alibi"}, {"pos": "rope", "window": 2}):
        mod = _randomize(MultiHeadAttention(DIM, H, **kw))
        x = _randn(1, T, DIM).requires_grad_()
        out = mod(x, is_causal=True)
        for t in range(T - 1):
            (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
            assert torch.all(grad[0, t + 1 :] == 0)
            assert grad[0, : t + 1].abs().sum() > 0


def test_fully_masked_rows_give_zeros_not_nan():
    mod = _randomize(MultiHeadAttention(DIM, H, pos="alibi", out_bias=False))
    x = _randn(B, T, DIM).requires_grad_()
    allowed = torch.ones(T, T, dtype=torch.bool)
    allowed[2] = False
    out = mod(x, mask=allowed)
    assert not out.isnan().any()
    assert torch.all(out[:, 2] == 0)
    out.sum().backward()
    assert not x.grad.isnan().any()
    kpm = torch.ones(B, T, dtype=torch.bool)
    assert not MultiHeadAttention(DIM, H)(x, key_padding_mask=kpm).isnan().any()


def test_qk_norm_normalises_each_head():
    pytest.importorskip("netarchitect.layers.norm")
    mod = _randomize(MultiHeadAttention(DIM, H, qk_norm="layernorm")).eval()
    assert mod.q_norm.normalized_shape == (DIM // H,)
    x = _randn(B, T, DIM)
    D = DIM // H
    q = F.layer_norm(mod.q_proj(x).view(B, T, H, D), (D,), mod.q_norm.weight, mod.q_norm.bias)
    k = F.layer_norm(mod.k_proj(x).view(B, T, H, D), (D,), mod.k_norm.weight, mod.k_norm.bias)
    v = mod.v_proj(x).view(B, T, H, D)
    att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / math.sqrt(D)).softmax(-1)
    out = (att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, DIM)
    assert_close(mod(x), mod.out_proj(out))


def test_head_dim_scale_and_dropout():
    mod = MultiHeadAttention(DIM, 2, head_dim=4, scale=0.5, attn_drop=0.5, proj_drop=0.1)
    assert mod.q_proj.out_features == 8 and mod.out_proj.in_features == 8
    x = _randn(B, T, DIM)
    mod.eval()
    assert_close(mod(x), mod(x))
    mod.train()
    torch.manual_seed(0)
    assert not torch.equal(mod(x), mod.eval()(x))
    assert "num_heads=2" in repr(mod)
    assert "num_kv_heads=1, pos='rope', window=2" in repr(
        MultiHeadAttention(DIM, 2, num_kv_heads=1, pos="rope", window=2)
    )


def test_gradient_reaches_every_parameter():
    mod = _randomize(MultiHeadAttention(DIM, H, pos="relative", num_kv_heads=2))
    mod(_randn(B, T, DIM), is_causal=True).sum().backward()
    for name, p in mod.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_builds_on_meta_and_in_float64():
    mod = MultiHeadAttention(DIM, H, pos="alibi", device="meta")
    assert all(t.is_meta for t in list(mod.parameters()) + list(mod.buffers()))
    mod = MultiHeadAttention(DIM, H, pos="relative", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in mod.parameters())
    out = mod(_randn(B, T, DIM).double(), is_causal=True)
    assert out.dtype == torch.float64


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"num_heads": 7}, "7 does not divide dim=16"),
        ({"num_heads": 0}, "num_heads"),
        ({"dim": 0}, "dim"),
        ({"num_kv_heads": 3}, "3 does not divide num_heads=4"),
        ({"pos": "alibii"}, "did you mean 'alibi'"),
        ({"window": 0}, "window"),
        ({"attn_drop": 1.0}, "attn_drop"),
        ({"proj_drop": -0.1}, "proj_drop"),
        ({"head_dim": 0}, "head_dim"),
        ({"pos": "rope", "head_dim": 3}, "even"),
    ],
)
def test_bad_arguments(kw, match):
    args = {"dim": DIM, "num_heads": H, **kw}
    with pytest.raises(SpecError, match=match):
        MultiHeadAttention(**args)


def test_bad_inputs():
    mod = MultiHeadAttention(DIM, H, pos="rope")
    x = _randn(B, T, DIM)
    with pytest.raises(ValueError, match="expected x"):
        mod(x[0])
    with pytest.raises(ValueError, match="self-attention only"):
        mod(x, x)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mod(x, key_padding_mask=torch.zeros(B, T + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        mod(x, key_padding_mask=torch.zeros(B, T))
    with pytest.raises(ValueError, match="pass context="):
        MultiHeadAttention(DIM, H, context_dim=8)(x)


def test_fused_and_separate_projections_agree(monkeypatch):
    """Few tokens run q/k/v apart, many tokens as one fused matmul: same result."""
    from netarchitect.layers import attention as attention_module

    attn = attention_module.MultiHeadAttention(32, 4, num_kv_heads=2)
    for tokens in (3, 40):
        x = torch.randn(2, tokens, 32)
        monkeypatch.setattr(attention_module, "FUSE_MIN_TOKENS", 0)
        fused = attn._project_qkv(x)
        monkeypatch.setattr(attention_module, "FUSE_MIN_TOKENS", 10**9)
        separate = attn._project_qkv(x)
        for a, b in zip(fused, separate, strict=True):
            torch.testing.assert_close(a, b)

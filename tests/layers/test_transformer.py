import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.kv_cache import KVCache
from netarchitect.layers.transformer import CROSS_ATTENTION_OPTIONS, TransformerBlock

DIM, H, FF = 16, 4, 24


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def _copy_to_torch(ours, ref):
    attn, mlp = ours.attn.fn, ours.mlp.fn
    with torch.no_grad():
        sa = ref.self_attn
        sa.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        sa.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        sa.out_proj.weight.copy_(attn.out_proj.weight)
        sa.out_proj.bias.copy_(attn.out_proj.bias)
        ref.linear1.weight.copy_(mlp.fc1.weight)
        ref.linear1.bias.copy_(mlp.fc1.bias)
        ref.linear2.weight.copy_(mlp.fc2.weight)
        ref.linear2.bias.copy_(mlp.fc2.bias)
        ref.norm1.weight.copy_(ours.attn.norm.weight)
        ref.norm1.bias.copy_(ours.attn.norm.bias)
        ref.norm2.weight.copy_(ours.mlp.norm.weight)
        ref.norm2.bias.copy_(ours.mlp.norm.bias)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_equals_torch_encoder_layer(norm, act):
    ours = _randomize(TransformerBlock(DIM, H, hidden_dim=FF, norm=norm, act_layer=act)).eval()
    ref = nn.TransformerEncoderLayer(
        DIM, H, FF, dropout=0.0, activation=act, batch_first=True, norm_first=norm == "pre"
    ).eval()
    _copy_to_torch(ours, ref)
    x = _x(2, 6, DIM)
    kpm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    assert_close(ours(x), ref(x))
    assert_close(ours(x, key_padding_mask=kpm), ref(x, src_key_padding_mask=kpm))
    assert_close(ours(x, is_causal=True), ref(x, src_mask=causal, is_causal=True))
    ref.train()  # training mode takes torch's non-fast path
    ours.train()
    assert_close(ours(x, is_causal=True), ref(x, src_mask=causal, is_causal=True))


def test_cross_attention_block_and_cache():
    blk = _randomize(
        TransformerBlock(
            DIM, H, cross_attention=True, context_dim=8, mlp_layer="swiglu", pos="rope"
        )
    ).eval()
    assert blk.cross_attn is not None and blk.cross_attn.fn.k_proj.in_features == 8
    x, ctx = _x(2, 5, DIM), _x(2, 3, 8, seed=1)
    ckpm = torch.tensor([[False, False, False], [False, True, True]])
    full = blk(x, is_causal=True, context=ctx, context_key_padding_mask=ckpm)
    cache, cross = KVCache(), KVCache()
    calls = []
    hook = blk.cross_attn.fn.k_proj.register_forward_hook(lambda *_: calls.append(1))
    steps = [
        blk(
            x[:, t : t + 1],
            is_causal=True,
            kv_cache=cache,
            context=ctx,
            context_key_padding_mask=ckpm,
            cross_kv_cache=cross,
        )
        for t in range(5)
    ]
    hook.remove()
    assert_close(torch.cat(steps, 1), full)
    assert len(calls) == 1 and cache.length == 5 and cross.length == 3  # context projected once
    with pytest.raises(ValueError, match="pass context"):
        blk(x)
    for kwargs in ({"context": ctx}, {"cross_kv_cache": KVCache()}):
        with pytest.raises(ValueError, match="cross_attention=False"):
            TransformerBlock(DIM, H)(x, **kwargs)


SHARED = {"qkv_bias": False, "out_bias": False, "qk_norm": "rmsnorm", "scale": 0.3}
SHARED_GQA = {**SHARED, "num_kv_heads": 2, "head_dim": 6}
SELF_ONLY = {"pos": "rope", "rope_base": 500.0, "window": 3}


def _naive_cross(mha, x, ctx, kpm, shared):
    """Cross-attention written out with ``mha``'s weights and the options in ``shared``."""
    B, T = x.shape[:2]
    Hkv = shared.get("num_kv_heads", H)
    D = shared.get("head_dim", DIM // H)
    bias = shared.get("qkv_bias", True)

    def proj(lin, inp, heads):
        return F.linear(inp, lin.weight, lin.bias if bias else None).view(B, -1, heads, D)

    q, k, v = proj(mha.q_proj, x, H), proj(mha.k_proj, ctx, Hkv), proj(mha.v_proj, ctx, Hkv)
    if shared.get("qk_norm") == "rmsnorm":
        q = F.rms_norm(q, (D,), mha.q_norm.weight)
        k = F.rms_norm(k, (D,), mha.k_norm.weight)
    k, v = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) * shared.get("scale", D**-0.5)
    scores = scores.masked_fill(kpm[:, None, None, :], float("-inf"))
    out = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, H * D)
    out_bias = mha.out_proj.bias if shared.get("out_bias", True) else None
    return F.linear(out, mha.out_proj.weight, out_bias)


@pytest.mark.parametrize("shared", [{}, SHARED, SHARED_GQA])
def test_cross_attention_equals_hand_built_reference(shared):
    blk = _randomize(TransformerBlock(DIM, H, cross_attention=True, context_dim=8, **shared))
    blk.eval()
    x, ctx = _x(2, 5, DIM), _x(2, 3, 8, seed=1)
    kpm = torch.tensor([[False, False, False], [False, False, True]])
    h = blk.attn(x, is_causal=True)
    cross = _naive_cross(blk.cross_attn.fn, blk.cross_attn.norm(h), ctx, kpm, shared)
    ref = blk.mlp(h + cross)
    assert_close(blk(x, is_causal=True, context=ctx, context_key_padding_mask=kpm), ref)


def test_cross_attention_takes_shared_options_not_positional_ones():
    assert set(CROSS_ATTENTION_OPTIONS) < set(inspect.signature(MultiHeadAttention).parameters)
    plain = TransformerBlock(DIM, H, cross_attention=True, context_dim=8).cross_attn.fn
    # q (16x16 + 16), k and v (8x16 + 16 each), out (16x16 + 16)
    assert sum(p.numel() for p in plain.parameters()) == 272 + 2 * 144 + 272
    blk = TransformerBlock(DIM, H, cross_attention=True, context_dim=8, **SHARED_GQA, **SELF_ONLY)
    cross, self_attn = blk.cross_attn.fn, blk.attn.fn
    assert all(p.bias is None for p in (cross.q_proj, cross.k_proj, cross.v_proj, cross.out_proj))
    assert isinstance(cross.q_norm, nn.RMSNorm) and isinstance(cross.k_norm, nn.RMSNorm)
    assert (cross.scale, cross.num_kv_heads, cross.head_dim) == (0.3, 2, 6)
    # q (16x24), k and v (8x12 each), out (24x16), q/k RMSNorm weights (6 each); no biases
    assert sum(p.numel() for p in cross.parameters()) == 384 + 2 * 96 + 384 + 2 * 6
    assert cross.pos is None and cross.rotary is None and cross.window is None
    assert self_attn.pos == "rope" and self_attn.window == 3 and self_attn.scale == 0.3


def test_options_are_wired():
    blk = TransformerBlock(
        DIM,
        H,
        layerscale=0.1,
        drop_path=0.2,
        num_kv_heads=2,
        pos="alibi",
        act_layer=None,
        mlp_layer="geglu",
        norm_layer="rmsnorm",
        norm="sandwich",
    )
    assert blk.attn.fn.num_kv_heads == 2 and blk.attn.fn.pos == "alibi"
    assert torch.allclose(blk.attn.scale.gamma, torch.full((DIM,), 0.1))
    assert blk.attn.drop_path.p == 0.2
    assert isinstance(blk.mlp.fn.act, nn.GELU)
    assert isinstance(blk.attn.norm, nn.RMSNorm)
    x = _x(2, 5, DIM)
    blk(x, is_causal=True).sum().backward()
    assert all(p.grad is not None for p in blk.parameters())
    before = blk.attn.fn.q_proj.weight.clone()
    blk.reset_parameters()
    assert not torch.equal(before, blk.attn.fn.q_proj.weight)
    assert torch.allclose(blk.attn.scale.gamma, torch.full((DIM,), 0.1))


def test_meta_and_bad_arguments():
    blk = TransformerBlock(DIM, H, cross_attention=True, device="meta")
    assert all(p.is_meta for p in blk.parameters())
    with pytest.raises(ValueError, match="3 does not divide dim=16"):
        TransformerBlock(DIM, 3)
    with pytest.raises(ValueError, match="drop"):
        TransformerBlock(DIM, H, drop=2.0)
    with pytest.raises(ValueError, match="norm"):
        TransformerBlock(DIM, H, norm="middle")
    with pytest.raises(TypeError):
        TransformerBlock(DIM, H, not_an_option=1)

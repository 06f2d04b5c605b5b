import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.linear_attention import AttentionPool, LinearAttention, elu_feature_map


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def naive_linear_attention(mod, x, causal=False, kpm=None):
    """O(T²) form: out_i = Σ_j (φq_i·φk_j) v_j / (Σ_j φq_i·φk_j + eps)."""
    B, T, _ = x.shape
    H, D = mod.num_heads, mod.head_dim
    q = elu_feature_map(mod.q_proj(x).view(B, T, H, D).transpose(1, 2))
    k = elu_feature_map(mod.k_proj(x).view(B, T, H, D).transpose(1, 2))
    v = mod.v_proj(x).view(B, T, H, D).transpose(1, 2)
    a = q @ k.transpose(-1, -2)  # (B, H, T, T)
    if causal:
        a = a * torch.ones(T, T).tril()
    if kpm is not None:
        a = a.masked_fill(kpm[:, None, None, :], 0.0)
    out = (a @ v) / (a.sum(-1, keepdim=True) + mod.eps)
    return mod.out_proj(out.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_equals_naive_formula(causal, chunk):
    mod = LinearAttention(16, 4, chunk_size=chunk).double()
    x = _x(2, 10, 16).double()
    kpm = torch.zeros(2, 10, dtype=torch.bool)
    kpm[1, 7:] = True
    assert_close(mod(x, is_causal=causal), naive_linear_attention(mod, x, causal))
    assert_close(
        mod(x, is_causal=causal, key_padding_mask=kpm), naive_linear_attention(mod, x, causal, kpm)
    )


def test_feature_map_is_positive():
    z = torch.linspace(-10, 10, 101)
    assert torch.all(elu_feature_map(z) > 0)
    assert_close(elu_feature_map(torch.tensor([1.0, -1.0])), torch.tensor([2.0, torch.e**-1]))


def test_causal_blocks_future_and_gradients():
    mod = LinearAttention(8, 2, chunk_size=2)
    x = _x(1, 5, 8).requires_grad_()
    out = mod(x, is_causal=True)
    (g,) = torch.autograd.grad(out[0, 2].sum(), x)
    assert torch.all(g[0, 3:] == 0)
    mod(x).sum().backward()
    assert all(p.grad is not None for p in mod.parameters())


def test_linear_attention_bad_arguments_and_options():
    with pytest.raises(SpecError, match="num_heads=3 does not divide dim=16"):
        LinearAttention(16, 3)
    with pytest.raises(SpecError, match="chunk_size"):
        LinearAttention(16, 2, chunk_size=0)
    m = LinearAttention(16, 2, qkv_bias=False, device="meta")
    assert m.q_proj.bias is None and m.q_proj.weight.is_meta
    assert "chunk_size=64" in repr(m)
    m = LinearAttention(16, 2)
    before = m.q_proj.weight.clone()
    m.reset_parameters()
    assert not torch.equal(before, m.q_proj.weight)


def test_attention_pool_is_cross_attention_of_learned_queries():
    pool = AttentionPool(8, 2).eval()
    x = _x(3, 5, 8)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[0, 2:] = True
    out = pool(x, key_padding_mask=kpm)
    assert out.shape == (3, 8)
    ref = MultiHeadAttention(8, 2).eval()
    ref.load_state_dict(pool.attn.state_dict())
    q = pool.query.expand(3, 1, 8)
    assert_close(out, ref(q, x, key_padding_mask=kpm)[:, 0])
    # padded tokens do not matter
    x2 = x.clone()
    x2[0, 2:] = 100.0
    assert_close(pool(x2, key_padding_mask=kpm)[0], out[0])


def test_attention_pool_many_queries_and_args():
    pool = AttentionPool(8, num_queries=4)
    out = pool(_x(2, 5, 8))
    assert out.shape == (2, 4, 8)
    out.sum().backward()
    assert pool.query.grad is not None
    with pytest.raises(SpecError, match="num_queries"):
        AttentionPool(8, num_queries=0)
    meta = AttentionPool(8, 2, device="meta", dtype=torch.float64)
    assert meta.query.is_meta and meta.query.dtype == torch.float64
    q = pool.query.clone()
    pool.reset_parameters()
    assert not torch.equal(q, pool.query)


def test_softmax_feature_limit_not_used():
    # sanity: linear attention is not softmax attention (different kernels)
    la = LinearAttention(8, 1)
    x = _x(1, 4, 8)
    assert not torch.allclose(la(x), F.scaled_dot_product_attention(x, x, x))

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.embedding import (
    LearnedPositionalEmbedding,
    PatchEmbed,
    SinusoidalPositionalEmbedding,
    TimestepEmbedding,
    sinusoidal_embedding,
    timestep_embedding,
)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_patch_embed_equals_manual_patchify():
    pe = PatchEmbed(3, 8, patch_size=4)
    x = _x(2, 3, 8, 12)
    out = pe(x)
    assert out.shape == (2, 6, 8)
    # token (r, c) = W · patch(r, c) + b, row-major
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 2, 3, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 6, 3 * 16)
    expected = patches @ pe.proj.weight.reshape(8, -1).T + pe.proj.bias
    assert_close(out, expected)


def test_patch_embed_img_size_norm_and_errors():
    pe = PatchEmbed(3, 8, patch_size=(2, 4), img_size=(4, 8), norm_layer="layernorm")
    assert pe.grid_size == (2, 2) and pe.num_patches == 4
    out = pe(_x(1, 3, 4, 8))
    assert_close(out, F.layer_norm(out, (8,)), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expected images of size"):
        pe(_x(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        PatchEmbed(3, 8, patch_size=4)(_x(1, 3, 6, 8))
    with pytest.raises(SpecError, match="not divisible"):
        PatchEmbed(3, 8, patch_size=4, img_size=10)
    with pytest.raises(SpecError, match="patch_size"):
        PatchEmbed(3, 8, patch_size=(2, 2, 2))
    with pytest.raises(SpecError, match="patch_size"):
        PatchEmbed(3, 8, patch_size=0)
    meta = PatchEmbed(3, 8, patch_size=2, device="meta", dtype=torch.float64)
    assert meta.proj.weight.is_meta and meta.proj.weight.dtype == torch.float64
    w = pe.proj.weight.clone()
    pe.reset_parameters()
    assert not torch.equal(w, pe.proj.weight)


def test_sinusoidal_formula():
    pe = sinusoidal_embedding(torch.arange(5.0), 6, base=100.0)
    for p in range(5):
        for i in range(3):
            angle = p / 100.0 ** (2 * i / 6)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_module_adds_code_with_offset():
    m = SinusoidalPositionalEmbedding(8)
    x = _x(2, 4, 8)
    assert_close(m(x), x + sinusoidal_embedding(torch.arange(4.0), 8))
    assert_close(m(x, offset=3), x + sinusoidal_embedding(torch.arange(3.0, 7.0), 8))
    assert m(x.double()).dtype == torch.float64
    with pytest.raises(SpecError, match="even"):
        SinusoidalPositionalEmbedding(7)
    m.reset_parameters()
    assert "dim=8" in repr(m)


def test_learned_positional_embedding():
    m = LearnedPositionalEmbedding(8, max_positions=6)
    x = _x(2, 4, 8)
    assert_close(m(x), x + m.weight[:4])
    assert_close(m(x, offset=2), x + m.weight[2:6])
    with pytest.raises(ValueError, match="exceed max_positions=6"):
        m(x, offset=3)
    with pytest.raises(SpecError, match="max_positions"):
        LearnedPositionalEmbedding(8, max_positions=0)
    assert LearnedPositionalEmbedding(8, max_positions=3, device="meta").weight.is_meta
    assert "max_positions=6" in repr(m)


def test_timestep_features_match_guided_diffusion():
    t = torch.tensor([0.0, 1.0, 500.0])
    emb = timestep_embedding(t, 8, max_period=10000.0)
    half = 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    assert_close(emb, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1))
    odd = timestep_embedding(torch.tensor([3]), 5)
    assert odd.shape == (1, 5) and odd[0, -1] == 0 and odd.dtype == torch.float32


def test_timestep_embedding_module():
    m = TimestepEmbedding(16, freq_dim=8)
    t = torch.tensor([1, 50, 999])
    out = m(t)
    assert out.shape == (3, 16)
    feats = timestep_embedding(t.float(), 8)
    assert_close(out, m.linear_2(F.silu(m.linear_1(feats))))
    assert m.double()(t.double()).dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(B,\)"):
        m(t[None])
    w = m.linear_1.weight.clone()
    m.reset_parameters()
    assert not torch.equal(w, m.linear_1.weight)

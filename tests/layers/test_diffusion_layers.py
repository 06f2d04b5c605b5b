"""Diffusion UNet blocks: the time/class embedding, the conditioned residual block and
spatial self-attention — reference formulas, conditioning effects and bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from netarchitect.errors import SpecError
from netarchitect.layers.diffusion import SpatialSelfAttention, TimeClassEmbedding, TimeResBlock
from netarchitect.layers.embedding import timestep_embedding


def _seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return module


def test_time_embedding_is_the_mlp_of_the_sinusoid() -> None:
    emb = _seeded(TimeClassEmbedding(8, freq_dim=6))
    t = torch.tensor([0, 5, 999])
    lin1, lin2 = emb.time.linear_1, emb.time.linear_2
    expected = lin2(F.silu(lin1(timestep_embedding(t, 6))))
    torch.testing.assert_close(emb(torch.zeros(3, 1, 2, 2), t), expected)


def test_without_t_the_embedding_is_that_of_t_zero() -> None:
    emb = _seeded(TimeClassEmbedding(8, freq_dim=6))
    x = torch.zeros(2, 1, 2, 2)
    torch.testing.assert_close(emb(x), emb(x, torch.zeros(2, dtype=torch.long)))


def test_class_embedding_adds_a_row_and_the_null_class_is_the_default() -> None:
    emb = _seeded(TimeClassEmbedding(8, freq_dim=6, num_classes=3))
    assert emb.classes.num_embeddings == 4 and emb.null_class == 3
    x, t = torch.zeros(2, 1, 2, 2), torch.tensor([4, 4])
    torch.testing.assert_close(emb(x, t, torch.tensor([1, 3])),
                               emb(x, t) + emb.classes.weight[[1, 3]] - emb.classes.weight[3])
    assert not torch.allclose(emb(x, t, torch.tensor([0, 0])), emb(x, t, torch.tensor([1, 1])))


@pytest.mark.parametrize(
    ("kwargs", "args", "match"),
    [
        ({}, (torch.zeros(2, 3), torch.zeros(3)), "timesteps t of shape"),
        ({}, (torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, dtype=torch.long)),
         "unconditional"),
        ({"num_classes": 3}, (torch.zeros(2, 3), torch.zeros(2), torch.tensor([0, 4])),
         r"y must be in \[0, 3\]"),
        ({"num_classes": 3}, (torch.zeros(2, 3), torch.zeros(2), torch.tensor([-1, 0])),
         r"y must be in \[0, 3\]"),
        ({"num_classes": 3}, (torch.zeros(2, 3), torch.zeros(2), torch.zeros(3).long()),
         "y of shape"),
    ],
)
def test_embedding_refuses_bad_calls(kwargs, args, match) -> None:
    emb = TimeClassEmbedding(8, freq_dim=4, **kwargs)
    with pytest.raises(ValueError, match=match):
        emb(*args)


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"dim": 4, "num_classes": 0}])
def test_embedding_refuses_bad_arguments(kwargs) -> None:
    with pytest.raises(SpecError):
        TimeClassEmbedding(**kwargs)


@pytest.mark.parametrize("scale_shift", [True, False])
def test_res_block_matches_its_formula(scale_shift: bool) -> None:
    block = _seeded(TimeResBlock(4, 6, emb_dim=5, scale_shift=scale_shift,
                                 norm_layer={"name": "groupnorm", "num_groups": 2})).eval()
    g = torch.Generator().manual_seed(1)
    x, emb = torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 5, generator=g)
    h = block.conv1(F.silu(block.norm1(x)))
    e = block.emb_proj(F.silu(emb))[:, :, None, None]
    if scale_shift:
        h = block.norm2(h) * (1 + e[:, :6]) + e[:, 6:]
    else:
        h = block.norm2(h + e)
    expected = block.skip(x) + block.conv2(F.silu(h))
    torch.testing.assert_close(block(x, emb), expected)
    assert isinstance(block.skip, torch.nn.Conv2d) and block.emb_proj.out_features == (
        12 if scale_shift else 6)


def test_res_block_at_equal_width_has_an_identity_skip_and_uses_the_embedding() -> None:
    block = _seeded(TimeResBlock(4, emb_dim=3, norm_layer={"name": "groupnorm", "num_groups": 2}))
    assert isinstance(block.skip, torch.nn.Identity)
    x = torch.randn(2, 4, 3, 3)
    assert not torch.allclose(block(x, torch.zeros(2, 3)), block(x, torch.ones(2, 3)))


def test_res_block_refuses_bad_embedding_and_arguments() -> None:
    block = TimeResBlock(4, emb_dim=3, norm_layer={"name": "groupnorm", "num_groups": 2})
    with pytest.raises(ValueError, match="emb of shape"):
        block(torch.zeros(2, 4, 3, 3), torch.zeros(3, 3))
    with pytest.raises(SpecError, match="emb_dim"):
        TimeResBlock(4, emb_dim=0)
    with pytest.raises(SpecError, match="dropout"):
        TimeResBlock(4, emb_dim=2, dropout=1.5)


def test_spatial_attention_is_a_residual_attention_over_positions() -> None:
    block = _seeded(SpatialSelfAttention(8, num_heads=2)).eval()
    x = torch.randn(2, 8, 3, 4, generator=torch.Generator().manual_seed(2))
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, 12, 8)
    expected = x + block.attn(tokens).transpose(1, 2).reshape(2, 8, 3, 4)
    torch.testing.assert_close(block(x), expected)
    # attention mixes positions: changing one pixel changes the others' outputs
    y = x.clone()
    y[:, :, 0, 0] += 1
    assert not torch.allclose(block(x)[:, :, 2, 3], block(y)[:, :, 2, 3])


def test_spatial_attention_head_dim_and_errors() -> None:
    assert SpatialSelfAttention(8, head_dim=2).attn.num_heads == 4
    with pytest.raises(SpecError, match="head_dim=3 does not divide"):
        SpatialSelfAttention(8, head_dim=3)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        SpatialSelfAttention(8)(torch.zeros(2, 4, 3, 3))


@pytest.mark.parametrize("cls", [TimeClassEmbedding, TimeResBlock, SpatialSelfAttention])
def test_every_example_runs_and_reprs(cls) -> None:
    from netarchitect.registry import block_examples

    for ex in block_examples(cls):
        module = cls(**ex.kwargs)
        assert module(*ex.inputs).shape[0] == ex.inputs[0].shape[0]
        assert "=" in repr(module)

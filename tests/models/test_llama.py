"""LLaMA-style decoders: published sizes, structure, GQA + RoPE caching, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.layers.mlp import SwiGLU
from netarchitect.layers.norm import RMSNorm
from netarchitect.models.llama import llama

TINY = {
    "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
    "hidden_dim": 48, "max_positions": 32,
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("llama-7b", 6_738_415_616),  # LLaMA-2-7B
        ("llama3-8b", 8_030_261_248),  # LLaMA-3-8B
        ("llama-1b", 1_235_814_400),  # LLaMA-3.2-1B (tied)
        ("llama-tiny", 15_191_712),  # llama2.c stories15M
    ],
)
def test_published_parameter_counts(name: str, count: int) -> None:
    assert n_params(na.create_model(name, device="meta")) == count


def test_llama_structure() -> None:
    model = llama(**TINY, device="meta")
    block = model.blocks[0]
    attn = block.attn.fn
    assert isinstance(model.norm, RMSNorm) and isinstance(block.mlp.fn, SwiGLU)
    assert attn.pos == "rope" and attn.num_kv_heads == 2 and attn.k_proj.out_features == 16
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert model.pos_embed is None and model.head.weight is not model.tok_embed.weight


def test_default_hidden_dim_follows_llama_rule() -> None:
    model = llama(vocab_size=8, dim=4096, depth=1, num_heads=32, device="meta")
    assert model.blocks[0].mlp.fn.gate_proj.out_features == 11008


def test_gqa_rope_cache_equals_full_forward() -> None:
    torch.manual_seed(0)
    model, x = llama(**TINY).eval(), ids(2, 10)
    cache = model.new_cache(10)
    pieces = [model(x[:, :3], kv_cache=cache)] + [
        model(x[:, t : t + 1], kv_cache=cache) for t in range(3, 10)
    ]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(x), atol=1e-5, rtol=1e-5)


def test_left_padding_is_harmless_with_rope() -> None:
    torch.manual_seed(0)
    model = llama(**TINY).eval()
    b = ids(1, 5, seed=3)
    out = model(F.pad(b, (4, 0)), attention_mask=torch.tensor([[0] * 4 + [1] * 5]))
    torch.testing.assert_close(out[:, 4:], model(b), atol=1e-5, rtol=1e-5)

"""LLaMA-style decoders: published sizes, structure, GQA + RoPE caching, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.layers.mlp import SwiGLU
from netarchitect.layers.norm import RMSNorm
from netarchitect.layers.positional import RotaryEmbedding
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
        ("llama2-70b", 68_976_648_192),  # LLaMA-2-70B (transformers LlamaConfig count)
        ("llama3-8b", 8_030_261_248),  # LLaMA-3-8B
        ("llama3.1-8b", 8_030_261_248),  # LLaMA-3.1-8B
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


def llama3_scaling(factor: float, context: int = 8192) -> dict:
    return {
        "type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_positions": context,
    }


def rotaries(model: torch.nn.Module) -> list:
    return [block.attn.fn.rotary for block in model.blocks]


@pytest.mark.parametrize(
    ("name", "max_positions", "scaling"),
    [
        ("llama3-8b", 8192, None),  # LLaMA-3-8B: "rope_scaling": null
        ("llama3.1-8b", 131072, llama3_scaling(8.0)),  # LLaMA-3.1-8B config.json
        ("llama-1b", 131072, llama3_scaling(32.0)),  # LLaMA-3.2-1B config.json
        ("llama-7b", 4096, None),
    ],
)
def test_published_rope_scaling(name: str, max_positions: int, scaling: dict | None) -> None:
    model = na.create_model(name, device="meta")
    assert model.max_positions == max_positions
    assert all(r.scaling == scaling and r.inv_freq.is_meta for r in rotaries(model))
    assert rotaries(model)[0].base == (10000.0 if name == "llama-7b" else 500000.0)


def test_rope_scaling_reaches_every_block() -> None:
    scaling = llama3_scaling(4.0, context=8)
    torch.manual_seed(0)
    plain = llama(**TINY).eval()
    torch.manual_seed(0)
    model = llama(**TINY, rope_scaling=scaling).eval()
    expected = RotaryEmbedding(8, scaling=scaling).inv_freq
    for rotary in rotaries(model):
        assert rotary.scaling == scaling
        torch.testing.assert_close(rotary.inv_freq, expected)
    x = ids(1, 24)
    assert not torch.allclose(model(x), plain(x))  # the rescaling changes the outputs
    double = llama(**TINY, rope_scaling=2.0, dtype=torch.float64)
    assert rotaries(double)[0].inv_freq.dtype == torch.float64
    assert rotaries(double)[1].scaling == {"type": "linear", "factor": 2.0}


def test_scaled_rope_cache_equals_full_forward() -> None:
    torch.manual_seed(0)
    model, x = llama(**TINY, rope_scaling=llama3_scaling(4.0, context=4)).eval(), ids(2, 12)
    cache = model.new_cache(12)
    pieces = [model(x[:, :5], kv_cache=cache), model(x[:, 5:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(x), atol=1e-5, rtol=1e-5)


def test_bad_rope_scaling() -> None:
    with pytest.raises(SpecError, match=r"rope_scaling\.factor"):
        llama(**TINY, rope_scaling={**llama3_scaling(8.0), "factor": -1.0})
    with pytest.raises(SpecError, match="pos='rope'"):
        llama(**TINY, pos="alibi", rope_scaling=2.0)

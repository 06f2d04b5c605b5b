"""Encoder-decoder Transformers: shapes, causality, padding, cached decoding, generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.generation import generate
from netarchitect.layers.kv_cache import EncoderDecoderCache, ModelCache
from netarchitect.models.encoder_decoder import Seq2SeqTransformer, encoder_decoder

TINY = {
    "vocab_size": 64, "dim": 32, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4,
    "hidden_dim": 48, "max_positions": 32,
}


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def tiny(**kwargs) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return encoder_decoder(**{**TINY, **kwargs}).eval()


VARIANTS = [
    {},
    {"pos": "learned", "norm": "pre"},
    {"pos": "relative", "num_buckets": 8, "norm": "pre", "norm_layer": "rmsnorm", "bias": False},
    {"pos": "rope", "src_vocab_size": 40, "tie_embeddings": False, "embed_scale": 2.0},
]


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_shapes_and_cached_decoding(kwargs) -> None:
    model = tiny(**kwargs)
    src, tgt = ids(2, 7) % 40, ids(2, 6, seed=1)
    logits = model(src, tgt)
    assert logits.shape == (2, 6, 64)
    memory = model.encode(src)
    cache = model.new_cache()
    steps = [model.decode(tgt[:, :2], memory, kv_cache=cache)]
    steps += [model.decode(tgt[:, t : t + 1], memory, kv_cache=cache) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), logits, atol=1e-5, rtol=1e-5)
    assert isinstance(cache, ModelCache) and len(cache) == 2 and cache.length == 6
    assert isinstance(cache[0], EncoderDecoderCache)
    assert cache[0].length == 6 and cache[0].cross_attn.length == 7  # source projected once
    assert cache.nodes == ["decoder_0", "decoder_1"]


def test_spec_round_trip_gives_the_same_model() -> None:
    model = tiny(pos="learned", norm="pre")
    src, tgt = ids(2, 7), ids(2, 6, seed=1)
    rebuilt = na.build(model.spec)
    rebuilt.load_state_dict(model.state_dict())
    assert isinstance(rebuilt, Seq2SeqTransformer) and na.spec_hash(rebuilt.spec) == na.spec_hash(model.spec)
    torch.testing.assert_close(rebuilt.eval()(src, tgt), model(src, tgt))
    assert rebuilt.head.weight is rebuilt.tgt_embed.token.weight is rebuilt.src_embed.token.weight


def test_generate_projects_the_source_once_per_call() -> None:
    """Cached generation projects the encoder output once and matches full recomputation."""
    model = tiny()
    src, start = ids(2, 7), torch.zeros(2, 1, dtype=torch.long)
    src_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    bound = model.bind(src, src_mask=src_mask)
    projections, logits = [], []
    hooks = [
        model.decoder[1].cross_attn.fn.k_proj.register_forward_hook(
            lambda *_: projections.append(1)
        ),
        bound.register_forward_hook(lambda _m, _a, out: logits.append(out[:, -1])),
    ]
    cached = generate(bound, start, 5, temperature=0)
    assert len(projections) == 1
    cached_logits, logits[:] = torch.stack(logits), []
    uncached = generate(bound, start, 5, temperature=0, use_cache=False)
    assert len(projections) == 1 + 5  # without the cache: once per step
    torch.testing.assert_close(torch.stack(logits), cached_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached, uncached)
    generate(bound, start, 3, temperature=0)
    assert len(projections) == 1 + 5 + 1  # each generate call starts a fresh cache
    for hook in hooks:
        hook.remove()


def test_decoder_is_causal_and_sees_the_source() -> None:
    model = tiny()
    src, tgt = ids(1, 7), ids(1, 6, seed=1)
    base = model(src, tgt)
    changed_tgt = tgt.clone()
    changed_tgt[0, 4] = (tgt[0, 4] + 1) % 64
    after = model(src, changed_tgt)
    torch.testing.assert_close(after[:, :4], base[:, :4])
    assert not torch.allclose(after[:, 4:], base[:, 4:])
    changed_src = src.clone()
    changed_src[0, -1] = (src[0, -1] + 1) % 64
    assert not torch.allclose(model(changed_src, tgt), base)


def test_source_padding_is_ignored() -> None:
    model = tiny()
    src, tgt = ids(1, 5), ids(1, 4, seed=1)
    padded = F.pad(src, (0, 3))
    mask = torch.tensor([[1] * 5 + [0] * 3])
    torch.testing.assert_close(model(padded, tgt, src_mask=mask), model(src, tgt))


def test_generation_through_bind() -> None:
    model = tiny()
    src, start = ids(2, 7), torch.zeros(2, 1, dtype=torch.long)
    bound = model.bind(src)
    cached = generate(bound, start, 6, temperature=0)
    assert torch.equal(cached, generate(bound, start, 6, temperature=0, use_cache=False))
    assert cached.shape == (2, 7)


def test_named_sizes() -> None:
    base = na.create_model("transformer-base", device="meta")
    assert base.embed_scale == pytest.approx(512**0.5) and len(base.decoder) == 6
    t5 = na.create_model("t5-small", device="meta")
    assert t5.decoder[0].attn.fn.pos == "relative" and t5.decoder[0].mlp.fn.fc1.bias is None
    cross = t5.decoder[0].cross_attn.fn  # T5 has no biases in cross-attention either
    assert cross.q_proj.bias is None and cross.out_proj.bias is None and cross.pos is None
    assert base.decoder[0].cross_attn.fn.k_proj.bias is not None
    assert "pos='relative'" in repr(t5)


def test_bad_arguments() -> None:
    with pytest.raises(SpecError):
        tiny(pos="bogus")
    with pytest.raises(SpecError):
        tiny(norm="sandwich")
    model = tiny()
    with pytest.raises(TypeError, match="kv_cache must be"):
        model.decode(ids(1, 2), model.encode(ids(1, 3)), kv_cache=[])

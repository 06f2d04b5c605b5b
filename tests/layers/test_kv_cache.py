import pytest
import torch
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.kv_cache import EncoderDecoderCache, KVCache

B, DIM, H = 2, 16, 4


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


@pytest.mark.parametrize(
    "kw",
    [
        {"pos": "rope"},
        {"pos": "alibi"},
        {"pos": "relative", "max_positions": 4},
        {"pos": "rope", "num_kv_heads": 2, "window": 3},
        {"pos": None, "qk_norm": None},
    ],
)
@pytest.mark.parametrize("max_length", [None, 16])
def test_kv_cache_decoding_equals_full(kw, max_length):
    mod = _randomize(MultiHeadAttention(DIM, H, **kw)).eval()
    x = _randn(B, 7, DIM)
    full = mod(x, is_causal=True)
    cache = KVCache(max_length)
    steps = [mod(x[:, :3], is_causal=True, kv_cache=cache)]  # prefill, then token by token
    for t in range(3, 7):
        steps.append(mod(x[:, t : t + 1], is_causal=True, kv_cache=cache))
    assert cache.length == 7
    assert_close(torch.cat(steps, dim=1), full)


def test_cross_attention_cache_reuses_context():
    mod = _randomize(MultiHeadAttention(DIM, H, context_dim=8)).eval()
    x, ctx = _randn(B, 3, DIM), _randn(B, 5, 8, seed=1)
    cache = KVCache()
    first = mod(x[:, :1], ctx, kv_cache=cache)
    second = mod(x[:, 1:], ctx * 0, kv_cache=cache)  # context ignored once cached
    assert cache.length == 5
    assert_close(torch.cat([first, second], 1), mod(x, ctx))
    with pytest.raises(ValueError, match=r"\(B, S\) = \(2, 5\), got \(2, 4\).*reset"):
        mod(x, ctx[:, :4], kv_cache=cache)  # a different context needs a reset cache


def test_encoder_decoder_cache_object():
    caches = EncoderDecoderCache.create(2, max_length=6)
    cache = caches[0]
    assert len(caches) == 2 and caches[0] is not caches[1] and cache.self_attn.max_length == 6
    assert cache.cross_attn.max_length is None  # the context length is not known in advance
    k = torch.randn(1, 2, 3, 4)
    cache.self_attn.update(k, k)
    cache.cross_attn.update(k[:, :, :2], k[:, :, :2])
    assert cache.length == len(cache) == 3
    assert repr(cache) == "EncoderDecoderCache(length=3, context_length=2, max_length=6)"
    cache.reset()
    assert cache.length == 0 and cache.cross_attn.length == 0


def test_kv_cache_object():
    cache = KVCache(max_length=4)
    k = torch.randn(1, 2, 3, 4)
    ks, vs = cache.update(k, k + 1)
    assert torch.equal(vs, k + 1)
    assert len(cache) == 3 and torch.equal(ks, k) and torch.equal(cache.values, k + 1)
    with pytest.raises(ValueError, match="full"):
        cache.update(k, k)
    with pytest.raises(ValueError, match="reset"):
        cache.update(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))
    with pytest.raises(ValueError, match="equal shape"):
        cache.update(k, k[..., :2])
    cache.reset()
    assert cache.length == 0 and cache.keys is None and cache.values is None
    assert repr(cache) == "KVCache(length=0, max_length=4)"
    caches = KVCache.create(3)
    assert len(caches) == 3 and caches[0] is not caches[1]
    with pytest.raises(SpecError, match="max_length"):
        KVCache(0)

import pytest
import torch
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.kv_cache import KVCache

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

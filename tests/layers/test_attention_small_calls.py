"""Small attention calls (decoding steps) run SDPA on the calling thread: same outputs, no
parallel region."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from netarchitect.layers import attention as attention_module
from netarchitect.layers.attention import MultiHeadAttention, calling_thread_only
from netarchitect.layers.kv_cache import KVCache

B, H, DIM = 2, 4, 16


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_small_calls_run_on_the_calling_thread(monkeypatch, two_threads):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    mod = MultiHeadAttention(DIM, H).eval()
    x = _randn(1, 4, DIM)  # 1 * 4 heads * 4 * 4 = 64 scores
    monkeypatch.setattr(attention_module, "SMALL_ATTENTION_SCORES", 64)
    mod(x)
    monkeypatch.setattr(attention_module, "SMALL_ATTENTION_SCORES", 63)
    mod(x)
    assert seen == [1 if attention_module._openmp() else 2, 2]
    assert torch.get_num_threads() == 2


def test_small_and_large_paths_agree(monkeypatch, two_threads):
    """Same outputs either way, and cached decoding equals the full forward."""
    for kw in ({"pos": "rope", "num_kv_heads": 2}, {"pos": "alibi"}, {"window": 3}):
        mod = MultiHeadAttention(DIM, H, **kw).eval()
        x = _randn(B, 6, DIM)
        kpm = torch.zeros(B, 6, dtype=torch.bool)
        kpm[1, :2] = True
        outs = []
        for limit in (10**9, -1):  # every call small / none
            monkeypatch.setattr(attention_module, "SMALL_ATTENTION_SCORES", limit)
            cache = KVCache(8)
            steps = [mod(x[:, :3], is_causal=True, kv_cache=cache)]
            steps += [mod(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(3, 6)]
            outs.append((mod(x, is_causal=True, key_padding_mask=kpm), torch.cat(steps, 1)))
        assert_close(outs[0], outs[1])
        assert_close(outs[0][1], mod(x, is_causal=True))


def test_calling_thread_only(monkeypatch, two_threads):
    with calling_thread_only():
        inside = torch.get_num_threads()
    assert inside == (1 if attention_module._openmp() else 2)
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), calling_thread_only():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2  # restored after an error too
    monkeypatch.setattr(attention_module, "_openmp", lambda: False)
    with calling_thread_only():
        assert torch.get_num_threads() == 2  # other parallel backends: left alone
    monkeypatch.setattr(attention_module, "_openmp", lambda: True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with calling_thread_only():
        assert torch.get_num_threads() == 2  # under torch.compile: left alone
    torch.set_num_threads(1)
    with calling_thread_only():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 1


def test_openmp_detection():
    info = torch.__config__.parallel_info()
    assert attention_module._openmp() == ("parallel backend: OpenMP" in info)

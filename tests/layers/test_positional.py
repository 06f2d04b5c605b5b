import math

import pytest
import torch
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers.positional import (
    ALiBiBias,
    RelativePositionBias,
    RotaryEmbedding,
    alibi_slopes,
    apply_rotary,
    rotate_half,
    t5_relative_bucket,
)


def test_alibi_slopes_power_of_two():
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    assert_close(torch.tensor(alibi_slopes(4)), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))


def test_alibi_slopes_non_power_of_two():
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads (2^-0.5, 2^-1.5, ...).
    expected = [2.0**-i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    assert_close(torch.tensor(alibi_slopes(12)), torch.tensor(expected))
    assert len(alibi_slopes(5)) == 5 and len(alibi_slopes(1)) == 1
    with pytest.raises(SpecError):
        alibi_slopes(0)


def test_alibi_bias_matches_formula():
    bias = ALiBiBias(2)(torch.arange(3), torch.arange(3))
    slopes = alibi_slopes(2)
    for h in range(2):
        for i in range(3):
            for j in range(3):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h] * abs(i - j))


def _hf_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    # Copy of transformers' T5Attention._relative_position_bucket.
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    relative_buckets += torch.where(is_small, relative_position, large)
    return relative_buckets


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_bucket_matches_reference(bidirectional):
    rel = torch.arange(-300, 300)
    ours = t5_relative_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert torch.equal(ours, _hf_bucket(rel, bidirectional, 32, 128))


def test_relative_bias_clipped_and_bucketed():
    rb = RelativePositionBias(3, max_distance=4)
    assert rb.bias.shape == (7, 3)
    q, k = torch.arange(6), torch.arange(6)
    b = rb(q, k)
    assert b.shape == (3, 6, 6)
    for i in range(6):
        for j in range(6):
            row = max(-3, min(3, j - i)) + 3
            assert torch.equal(b[:, i, j], rb.bias[row])
    t5 = RelativePositionBias(2, max_distance=16, num_buckets=8)
    assert t5.bias.shape == (8, 2)
    assert torch.equal(t5.bucket(q, k), _hf_bucket(k[None] - q[:, None], True, 8, 16))
    with pytest.raises(SpecError, match="max_positions"):
        RelativePositionBias(2, max_distance=0)
    with pytest.raises(SpecError, match="num_buckets"):
        RelativePositionBias(2, max_distance=2, num_buckets=8)


def test_rotary_matches_explicit_rotation():
    D, base = 8, 100.0
    rope = RotaryEmbedding(D, base=base, scaling=2.0)
    x = torch.randn(1, 2, 5, D, generator=torch.Generator().manual_seed(0))
    cos, sin = rope(3, 5)
    out = apply_rotary(x, cos, sin)
    half = D // 2
    expected = torch.empty_like(x)
    for t in range(5):
        p = (3 + t) / 2.0
        for i in range(half):
            theta = p * base ** (-2 * i / D)
            a, b = x[..., t, i], x[..., t, i + half]
            expected[..., t, i] = a * math.cos(theta) - b * math.sin(theta)
            expected[..., t, i + half] = b * math.cos(theta) + a * math.sin(theta)
    assert_close(out, expected)
    assert torch.equal(
        rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0])
    )


def test_rotary_cache_grows_and_resets():
    rope = RotaryEmbedding(4)
    c1, _ = rope(0, 10)
    c2, _ = rope(500, 10, torch.float64)
    assert c2.dtype == torch.float64 and rope._cache[0].shape[0] >= 510
    assert_close(c1, rope(0, 10)[0])
    rope.to(torch.float64)
    assert rope._cache is None
    assert "base=10000.0" in repr(rope)


def test_rotary_bad_args():
    with pytest.raises(SpecError, match="even"):
        RotaryEmbedding(5)
    with pytest.raises(SpecError, match="base"):
        RotaryEmbedding(4, base=1.0)
    with pytest.raises(SpecError, match="scaling"):
        RotaryEmbedding(4, scaling=0.0)


def test_positional_modules_build_on_meta():
    rope = RotaryEmbedding(8, device="meta")
    assert rope.inv_freq.device.type == "meta"
    assert ALiBiBias(4, device="meta").slopes.device.type == "meta"
    rb = RelativePositionBias(4, device="meta", dtype=torch.float64)
    assert rb.bias.is_meta and rb.bias.dtype == torch.float64
    assert "num_buckets=None" in repr(rb)

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
    rope_scaling_config,
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


def llama3(factor=8.0, low=1.0, high=4.0, context=8192):
    return {
        "type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
        "original_max_positions": context,
    }


def _hf_inv_freq(head_dim: int, base: float, scaling: dict) -> torch.Tensor:
    """transformers' own rescaled inverse frequencies for the same settings."""
    tf = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    names = {"type": "rope_type", "original_max_positions": "original_max_position_embeddings"}
    rope = {names.get(k, k): v for k, v in scaling.items()}
    config = tf.LlamaConfig(
        hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
        max_position_embeddings=4 * rope.get("original_max_position_embeddings", 64),
        rope_parameters={**rope, "rope_theta": base},
    )
    return ROPE_INIT_FUNCTIONS[rope["rope_type"]](config)[0]


@pytest.mark.parametrize(
    ("head_dim", "base", "scaling"),
    [
        (128, 500000.0, llama3()),  # LLaMA-3.1-8B
        (64, 500000.0, llama3(factor=32.0)),  # LLaMA-3.2-1B
        (16, 10000.0, llama3(factor=4.0, context=32)),
        (32, 100.0, llama3(factor=2.0, low=2.0, high=8.0, context=64)),
        (16, 10000.0, {"type": "linear", "factor": 4.0}),
    ],
)
def test_scaled_inverse_frequencies_match_transformers(head_dim, base, scaling):
    rope = RotaryEmbedding(head_dim, base=base, scaling=scaling)
    plain = RotaryEmbedding(head_dim, base=base).inv_freq
    assert_close(rope.inv_freq, _hf_inv_freq(head_dim, base, scaling))
    if scaling["type"] == "llama3":  # every band occurs: kept, interpolated, divided by factor
        ratio = plain / rope.inv_freq
        kept, divided = torch.isclose(ratio, torch.tensor(1.0)), torch.isclose(
            ratio, torch.tensor(scaling["factor"])
        )
        assert kept.any() and divided.any() and (~kept & ~divided).any()


def test_scaling_applies_to_the_tables_and_is_plain_data():
    scaled = RotaryEmbedding(16, scaling=llama3(factor=4.0, context=32))
    cos, sin = scaled(40, 8)
    angles = torch.arange(40, 48, dtype=torch.float64)[:, None] * scaled.inv_freq.double()
    assert_close(cos, torch.cat([angles, angles], -1).cos().float())
    assert_close(sin, torch.cat([angles, angles], -1).sin().float())
    assert scaled.scaling == llama3(factor=4.0, context=32) and type(scaled.scaling) is dict
    assert "llama3" in repr(scaled)
    # a number is linear interpolation; 1 and None change nothing
    assert RotaryEmbedding(8, scaling=2).scaling == {"type": "linear", "factor": 2.0}
    assert_close(RotaryEmbedding(8, scaling=1.0).inv_freq, RotaryEmbedding(8).inv_freq)
    meta = RotaryEmbedding(8, scaling=llama3(), device="meta", dtype=torch.float64)
    assert meta.inv_freq.is_meta and meta.inv_freq.dtype == torch.float64


@pytest.mark.parametrize(
    ("scaling", "path"),
    [
        ("llama3", "rope_scaling"),
        ({"factor": 2.0}, "rope_scaling.type"),
        ({"type": "yarn", "factor": 2.0}, "rope_scaling.type"),
        ({"type": "linear"}, "rope_scaling.factor"),
        ({"type": "linear", "factor": 2.0, "low_freq_factor": 1.0}, "rope_scaling.low_freq_factor"),
        ({**llama3(), "high_freq_factor": None}, "rope_scaling.high_freq_factor"),
        ({k: v for k, v in llama3().items() if k != "original_max_positions"},
         "rope_scaling.original_max_positions"),
        (llama3(factor=0.0), "rope_scaling.factor"),
        (llama3(factor=-8.0), "rope_scaling.factor"),
        ({"type": "linear", "factor": True}, "rope_scaling.factor"),
        (llama3(factor=float("nan")), "rope_scaling.factor"),
        (llama3(low=0.0), "rope_scaling.low_freq_factor"),
        (llama3(low=4.0, high=4.0), "rope_scaling.low_freq_factor"),
        (llama3(low=5.0, high=4.0), "rope_scaling.low_freq_factor"),
        (llama3(context=0), "rope_scaling.original_max_positions"),
        (llama3(context=8192.5), "rope_scaling.original_max_positions"),
    ],
)
def test_bad_rope_scaling_names_the_key(scaling, path):
    with pytest.raises(SpecError) as info:
        RotaryEmbedding(8, scaling=scaling)
    assert info.value.path == path and path in str(info.value)


def test_rope_scaling_config_suggests_and_copies():
    with pytest.raises(SpecError, match="did you mean 'llama3'"):
        rope_scaling_config({"type": "llama", "factor": 2.0})
    given = llama3(context=8192.0)
    config = rope_scaling_config(given)
    assert config == llama3() and type(config["original_max_positions"]) is int
    assert config is not given and rope_scaling_config(None) is None


def test_scaled_rope_in_a_spec_round_trips(tmp_path):
    import netarchitect as na

    scaling = llama3(factor=4.0, context=8)
    spec = {
        "name": "rope", "inputs": {"x": {"shape": [12, 16]}}, "outputs": ["attn"],
        "nodes": [{"id": "attn", "block": "multi_head_attention", "inputs": ["x"],
                   "params": {"num_heads": 2, "pos": "rope", "rope_scaling": scaling}}],
    }
    model = na.build(spec, seed=0)
    again = na.build(model.spec, seed=0)
    assert na.spec_hash(again.spec) == na.spec_hash(model.spec) == na.spec_hash(na.load_spec(spec))
    assert again.nodes["attn"].rotary.scaling == scaling
    saved = na.load_spec(na.save_spec(model.spec, tmp_path / "rope.yaml"))
    assert na.spec_hash(saved) == na.spec_hash(model.spec)
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))
    assert_close(again(x), model(x))

"""GPT-2 family and the shared decoder LM: reference sizes, caching, causality, padding, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models._lm_base import CausalLM
from netarchitect.models.gpt import gpt

TINY = {"vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 32}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def ids(*shape: int, seed: int = 0, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def tiny(**kwargs) -> CausalLM:
    torch.manual_seed(0)
    return gpt(**{**TINY, **kwargs}).eval()


def test_gpt2_small_has_exactly_124_439_808_parameters() -> None:
    model = na.create_model("gpt2", device="meta")
    assert n_params(model) == 124_439_808
    assert model.head.weight is model.tok_embed.weight


def test_gpt2_medium_parameter_count() -> None:
    assert n_params(na.create_model("gpt2-medium", device="meta")) == 354_823_168


def test_gpt2_structure() -> None:
    model = na.create_model("gpt2", device="meta")
    block = model.blocks[0]
    assert type(block.mlp.fn.act).__name__ == "GELUTanh"
    assert block.attn.mode == "pre" and model.norm.eps == 1e-5
    assert block.attn.fn.q_proj.bias is not None and model.pos_embed.weight.shape == (1024, 768)
    assert "gpt2-tiny" in na.list_models("gpt2*")


def test_forward_shape_and_features() -> None:
    model = tiny()
    x = ids(3, 9)
    logits = model(x)
    assert logits.shape == (3, 9, 64)
    torch.testing.assert_close(model.head(model.forward_features(x)), logits)


@pytest.mark.parametrize("max_length", [None, 12])
def test_kv_cache_decoding_equals_full_forward(max_length) -> None:
    model, x = tiny(), ids(2, 12)
    full = model(x)
    cache = model.new_cache(max_length)
    pieces = [model(x[:, :5], kv_cache=cache)]
    pieces += [model(x[:, t : t + 1], kv_cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0].length == 12


def test_causal_mask_blocks_the_future() -> None:
    model, x = tiny(), ids(1, 8)
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = model.tok_embed.register_forward_hook(keep)
    t = 4
    model(x)[0, t].sum().backward()
    handle.remove()
    grad = captured["emb"].grad[0].abs().sum(-1)  # (T,)
    assert torch.all(grad[t + 1 :] == 0)
    assert torch.all(grad[: t + 1] > 0)


def test_right_padding_keeps_unpadded_outputs() -> None:
    model = tiny()
    a, b = ids(1, 8, seed=1), ids(1, 5, seed=2)
    batch = torch.cat((a, F.pad(b, (0, 3))), dim=0)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    out = model(batch, attention_mask=mask)
    torch.testing.assert_close(out[0], model(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :5], model(b)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_left_padding_keeps_unpadded_outputs(pos) -> None:
    model = tiny(pos=pos)
    a, b = ids(1, 8, seed=1), ids(1, 5, seed=2)
    batch = torch.cat((a, F.pad(b, (3, 0))), dim=0)
    mask = torch.tensor([[1] * 8, [0] * 3 + [1] * 5])
    out = model(batch, attention_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], model(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 3:], model(b)[0], atol=1e-5, rtol=1e-5)


def test_left_padded_cached_decoding_matches_unpadded() -> None:
    model = tiny()
    b = ids(1, 6, seed=2)
    padded, mask = F.pad(b, (2, 0)), torch.tensor([[0, 0] + [1] * 6])
    cache = model.new_cache()
    first = model(padded[:, :5], attention_mask=mask[:, :5], kv_cache=cache)
    rest = model(padded[:, 5:], attention_mask=mask, kv_cache=cache)
    got = torch.cat((first, rest), dim=1)[:, 2:]
    torch.testing.assert_close(got, model(b), atol=1e-5, rtol=1e-5)


def test_explicit_position_ids() -> None:
    model, x = tiny(), ids(2, 6)
    positions = torch.arange(6)[None].expand(2, 6)
    torch.testing.assert_close(model(x, position_ids=positions), model(x))
    sin = tiny(pos="sinusoidal")
    torch.testing.assert_close(sin(x, position_ids=positions), sin(x), atol=1e-6, rtol=1e-6)


def test_all_ones_mask_equals_no_mask() -> None:
    model, x = tiny(), ids(2, 6)
    torch.testing.assert_close(model(x, attention_mask=torch.ones(2, 6)), model(x))


def test_untied_head_and_mlp_bias() -> None:
    model = tiny(tie_embeddings=False, mlp_bias=False)
    assert model.head.weight is not model.tok_embed.weight
    assert model.blocks[0].mlp.fn.fc1.bias is None
    assert "tie_embeddings=False" in repr(model)


def test_per_layer_mlp_types() -> None:
    model = tiny(mlp_layer=["mlp", "swiglu"])
    assert [type(b.mlp.fn).__name__ for b in model.blocks] == ["MLP", "SwiGLU"]
    with pytest.raises(SpecError, match="mlp_layer has 1 entries"):
        tiny(mlp_layer=["mlp"])


def test_grad_checkpointing_matches() -> None:
    x = ids(2, 6)
    plain, ckpt = tiny().train(), tiny().train()
    ckpt.set_grad_checkpointing()
    plain(x).square().mean().backward()
    ckpt(x).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_bad_inputs() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.randn(2, 4))
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids(2, 4), attention_mask=torch.ones(2, 5))
    with pytest.raises(TypeError, match="kv_cache must be"):
        model(ids(2, 4), kv_cache=[])
    with pytest.raises(ValueError, match="exceed max_positions"):
        model(ids(1, 33))
    with pytest.raises(ValueError, match="past max_positions"):
        model(ids(1, 4), position_ids=torch.tensor([[0, 1, 2, 40]]))
    with pytest.raises(ValueError, match="absolute positions"):
        tiny(pos="rope")(ids(1, 4), position_ids=torch.arange(4)[None])
    with pytest.raises(SpecError, match="pos="):
        tiny(pos="bogus")
    with pytest.raises(SpecError):
        tiny(depth=0)


def test_tiny_lm_overfits_short_text() -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 3
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])[None]
    torch.manual_seed(0)
    model = gpt(vocab_size=len(chars), dim=64, depth=2, num_heads=4, max_positions=256)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        logits = model(data[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), data[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


def test_sliding_window_and_qk_norm_with_cache() -> None:
    model, x = tiny(pos="rope", window=3, qk_norm="rmsnorm"), ids(2, 9)
    cache = model.new_cache()
    steps = [model(x[:, :4], kv_cache=cache)] + [
        model(x[:, t : t + 1], kv_cache=cache) for t in range(4, 9)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=1e-5)
    changed = x.clone()
    changed[:, 0] = (x[:, 0] + 1) % 64
    # two layers of window 3 see 4 tokens back: position 0 no longer reaches position 5
    torch.testing.assert_close(model(changed)[:, 5:], model(x)[:, 5:])


def test_logits_to_keep() -> None:
    model, x = tiny(), ids(2, 6)
    torch.testing.assert_close(model(x, logits_to_keep=2), model(x)[:, -2:])

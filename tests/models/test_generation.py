"""generate(): greedy with and without the KV cache, seeded sampling, eos handling, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.generation import filter_logits, generate
from netarchitect.models.gpt import gpt
from netarchitect.models.llama import llama
from netarchitect.models.moe_decoder import moe_decoder

SMALL = {"vocab_size": 50, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 64}


def prompt(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(seed))


def make(builder=gpt, **kwargs):
    torch.manual_seed(0)
    return builder(**{**SMALL, **kwargs}).eval()


@pytest.mark.parametrize("builder", [gpt, llama, moe_decoder])
def test_greedy_with_cache_equals_without(builder) -> None:
    kwargs = {"num_experts": 4, "hidden_dim": 32} if builder is moe_decoder else {}
    model, x = make(builder, **kwargs), prompt(3, 5)
    cached = generate(model, x, 20, temperature=0)
    uncached = generate(model, x, 20, temperature=0, use_cache=False)
    assert cached.shape == (3, 25)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :5], x)


def test_greedy_is_argmax_of_full_forward() -> None:
    model, x = make(), prompt(2, 4)
    out = generate(model, x, 6, do_sample=False)
    tokens = x
    for _ in range(6):
        tokens = torch.cat((tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, tokens)


def test_seeded_sampling_is_reproducible() -> None:
    model, x = make(), prompt(2, 3)
    a = generate(model, x, 15, temperature=1.5, top_k=10, top_p=0.9, seed=3)
    b = generate(model, x, 15, temperature=1.5, top_k=10, top_p=0.9, seed=3)
    c = generate(model, x, 15, temperature=1.5, top_k=10, top_p=0.9, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(1)
    d = generate(model, x, 5)
    torch.manual_seed(1)
    assert torch.equal(d, generate(model, x, 5))


def test_top_k_one_is_greedy() -> None:
    model, x = make(), prompt(2, 3)
    assert torch.equal(generate(model, x, 8, top_k=1, seed=0), generate(model, x, 8, temperature=0))


def test_eos_stops_and_pads_finished_sequences() -> None:
    model, x = make(), prompt(2, 4)
    free = generate(model, x, 12, temperature=0)
    eos = int(free[0, 6])  # the first sequence emits this token at step 3
    out = generate(model, x, 12, temperature=0, eos_token_id=[eos], pad_token_id=0)
    row = out[0, 4:].tolist()
    first = row.index(eos)
    assert all(t == 0 for t in row[first + 1 :])
    for i in range(2):
        new = out[i, 4:].tolist()
        if eos in new:
            assert new[: new.index(eos) + 1] == free[i, 4 : 4 + new.index(eos) + 1].tolist()
    both = generate(model, x[:1], 12, temperature=0, eos_token_id=eos)
    assert both.shape[1] == 4 + first + 1  # stops once every sequence is finished


def test_left_padded_batch_generates_like_each_prompt_alone() -> None:
    model = make()
    a, b = prompt(1, 6, seed=1), prompt(1, 3, seed=2)
    batch = torch.cat((a, F.pad(b, (3, 0))), dim=0)
    mask = torch.tensor([[1] * 6, [0] * 3 + [1] * 3])
    out = generate(model, batch, 8, temperature=0, attention_mask=mask)
    assert torch.equal(out[0], generate(model, a, 8, temperature=0)[0])
    assert torch.equal(out[1, 3:], generate(model, b, 8, temperature=0)[0])
    uncached = generate(model, batch, 8, temperature=0, attention_mask=mask, use_cache=False)
    assert torch.equal(out, uncached)


def test_mode_is_restored_and_zero_tokens() -> None:
    model, x = make().train(), prompt(1, 3)
    assert torch.equal(generate(model, x, 0), x)
    generate(model, x, 2, temperature=0)
    assert model.training


def test_filter_logits() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert filter_logits(logits, top_k=2).isinf().tolist() == [[True, False, False, True]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = ~filter_logits(probs, top_p=0.7).isinf()
    assert kept.tolist() == [[True, True, False, False]]
    assert (~filter_logits(probs, top_p=0.1).isinf()).sum() == 1  # the top token always stays
    assert torch.equal(filter_logits(logits, top_k=9, top_p=1.0), logits)


def test_bad_arguments() -> None:
    model, x = make(), prompt(1, 3)
    for kwargs, match in [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"do_sample": True, "temperature": 0.0}, "do_sample"),
    ]:
        with pytest.raises(ValueError, match=match):
            generate(model, x, 2, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, x, -1)
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, x.float(), 2)

    class NoCache(nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 5)

    with pytest.raises(TypeError, match="new_cache"):
        generate(NoCache(), x, 2)
    assert generate(NoCache(), x, 2, use_cache=False, temperature=0).shape == (1, 5)


@pytest.mark.parametrize("small_limit", [10**9, -1])  # explicit small attention / SDPA only
def test_greedy_tokens_equal_transformers(small_limit, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from netarchitect.interop import to_hf
    from netarchitect.layers import attention

    monkeypatch.setattr(attention, "SMALL_ATTENTION_SCORES", small_limit)
    model, x = make(), prompt(2, 6)
    with torch.no_grad():  # random weights: scale them up so the argmax is not a near-tie
        for p in model.parameters():
            p.mul_(4)
    peer = to_hf(model, attn_implementation="sdpa").eval()
    peer.generation_config.eos_token_id = None
    peer.generation_config.pad_token_id = 0
    ours = generate(model, x, 12, temperature=0)
    theirs = peer.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, generate(model, x, 12, temperature=0, use_cache=False))

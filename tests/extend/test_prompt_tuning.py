"""Prompt and prefix tuning on our GPT-2, BERT and LLaMA: zero-length equals the base model,
gradients reach only the prompts, masks and output shapes are kept."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.extend import (
    PromptTuningError,
    add_prefix_tuning,
    add_prompt_tuning,
    prompt_parameters,
    remove_prompts,
)
from netarchitect.models.bert import bert
from netarchitect.models.gpt import gpt
from netarchitect.models.llama import llama

G = torch.Generator().manual_seed(0)
IDS = torch.randint(0, 64, (2, 10), generator=G)
MASK = torch.ones(2, 10, dtype=torch.long)
MASK[0, -3:] = 0

SMALL = {"vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 32, "seed": 0}
MODELS: dict[str, Callable[[], nn.Module]] = {
    "gpt2": lambda: gpt(**SMALL),
    "bert": lambda: bert(**SMALL, head="classification"),
    "llama": lambda: llama(**SMALL, num_kv_heads=2),
}
ADD = {"prompt": add_prompt_tuning, "prefix": add_prefix_tuning}


def run(model: nn.Module) -> torch.Tensor:
    return model(IDS, attention_mask=MASK)


@pytest.mark.parametrize("kind", list(ADD))
@pytest.mark.parametrize("name", list(MODELS))
def test_zero_length_equals_base_and_only_prompts_train(name: str, kind: str) -> None:
    model = MODELS[name]().eval()
    base = run(model)
    empty = copy.deepcopy(model)
    ADD[kind](empty, 0)
    assert_close(run(empty), base)
    ADD[kind](model, 3, seed=1)
    out = run(model)
    assert out.shape == base.shape
    assert not torch.allclose(out, base, atol=1e-5)
    out.pow(2).mean().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == any(k in n for k in ("soft_prompt", "prefix_kv")), n
    assert prompt_parameters(model)
    remove_prompts(model)
    assert_close(run(model), base)
    assert all(p.requires_grad for p in model.parameters())


def test_prompt_is_prepended_to_the_embeddings() -> None:
    """Causal LM: the real tokens' outputs equal the base model run on [prompt; tokens]."""
    model = gpt(**SMALL, pos=None).eval()  # no absolute positions: both runs see the same
    base = copy.deepcopy(model)
    prompt = add_prompt_tuning(model, 2, seed=0)
    embed = base.get_submodule("nodes.embed")
    x = torch.cat([prompt.prompt.detach()[None].expand(2, -1, -1), embed(IDS)], dim=1)
    h = x
    for i in range(2):
        h = base.get_submodule(f"nodes.block_{i}")(h, is_causal=True)
    logits = base.get_submodule("nodes.head")(base.get_submodule("nodes.norm")(h))
    assert_close(model(IDS), logits[:, 2:], rtol=1e-5, atol=1e-5)


def test_prefix_from_vocab_init_and_padding() -> None:
    model = gpt(**SMALL).eval()
    prompt = add_prompt_tuning(model, 4, from_vocab=True, seed=0)
    table = model.get_submodule("nodes.embed.token").weight
    assert all(any(torch.equal(row, t) for t in table) for row in prompt.prompt)
    random = gpt(**SMALL).eval()
    assert add_prompt_tuning(random, 4, from_vocab=False).prompt.std() < 0.1


def test_bad_input() -> None:
    model = gpt(**SMALL)
    with pytest.raises(SpecError, match="num_tokens must be an int >= 0"):
        add_prompt_tuning(model, -1)
    add_prefix_tuning(model, 2)
    with pytest.raises(PromptTuningError, match="already has prompts"):
        add_prompt_tuning(model, 2)
    with pytest.raises(PromptTuningError, match="needs one TokenEmbedding"):
        add_prompt_tuning(nn.Linear(2, 2), 2)
    with pytest.raises(PromptTuningError, match="kv_cache"):
        model(IDS, kv_cache=model.new_cache())

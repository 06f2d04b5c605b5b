"""Surgery on transformers models built from tiny configs (no downloads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import ShapeError, SpecError
from netarchitect.extend import (
    freeze,
    remove_layers,
    replace_head,
    resize_token_embeddings,
    swap_modules,
    trainable_summary,
)

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
PIX = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def bert_config(**kw):
    return transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=32, **kw)


def gpt2_config(**kw):
    kw = {"n_layer": 2, **kw}
    return transformers.GPT2Config(vocab_size=64, n_embd=32, n_head=4, n_positions=32,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0, **kw)


def vit_config(**kw):
    return transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, image_size=16, patch_size=8, **kw)


def make(cls, config):
    torch.manual_seed(0)
    return cls(config).eval()


HEADS = [
    (lambda: make(transformers.BertForSequenceClassification, bert_config(num_labels=3)),
     IDS, lambda m, x: m.bert(x).last_hidden_state),
    (lambda: make(transformers.GPT2ForSequenceClassification, gpt2_config(num_labels=3)),
     IDS, lambda m, x: m.transformer(x).last_hidden_state),
    (lambda: make(transformers.ViTForImageClassification, vit_config(num_labels=3)),
     PIX, lambda m, x: m.vit(x).last_hidden_state),
]


@pytest.mark.parametrize(("factory", "x", "features"), HEADS, ids=["bert", "gpt2", "vit"])
def test_replace_head_keeps_the_transformers_backbone(factory, x, features) -> None:
    model = factory()
    new = replace_head(model, 5, seed=0).eval()
    with torch.no_grad():
        assert_close(features(new, x), features(model, x), rtol=0, atol=0)
        assert new(x).logits.shape == (2, 5)
        assert model(x).logits.shape == (2, 3)
    assert new.config.num_labels == 5 and model.config.num_labels == 3


def test_replace_head_needs_a_classifier() -> None:
    with pytest.raises(SpecError, match="no classification head"):
        replace_head(make(transformers.BertModel, bert_config()), 3)


def test_frozen_transformers_weights_are_bit_identical_after_a_step() -> None:
    model = make(transformers.BertForSequenceClassification, bert_config(num_labels=3)).train()
    names = freeze(model, ["bert.embeddings", "bert.encoder.layer.0.*"])
    assert "bert.embeddings.word_embeddings.weight" in names
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model(IDS, labels=torch.tensor([0, 2])).loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) is (name in names), name
    summary = trainable_summary(model)
    assert 0 < summary.trainable < summary.total
    with pytest.raises(SpecError, match="did you mean 'bert.encoder"):
        freeze(model, "bert.encodr.*")


def test_resize_keeps_transformers_gpt2_tied() -> None:
    model = make(transformers.GPT2LMHeadModel, gpt2_config())
    new = resize_token_embeddings(model, 80, seed=0)
    assert new.lm_head.weight is new.transformer.wte.weight
    assert new.lm_head.weight.shape == (80, 32) and new.config.vocab_size == 80
    assert model.lm_head.weight.shape == (64, 32)
    with torch.no_grad():
        assert_close(new(IDS).logits[..., :64], model(IDS).logits, rtol=0, atol=0)


def test_remove_a_transformers_layer_renumbers() -> None:
    model = make(transformers.GPT2LMHeadModel, gpt2_config(n_layer=3))
    new = remove_layers(model, "transformer.h.1")
    assert len(new.transformer.h) == 2 and new.config.num_hidden_layers == 2
    assert [b.attn.layer_idx for b in new.transformer.h] == [0, 1]
    assert new(IDS).logits.shape == (2, 8, 64) and len(model.transformer.h) == 3


def test_swap_transformers_layer_norms() -> None:
    model = make(transformers.GPT2LMHeadModel, gpt2_config())
    with pytest.raises(ShapeError, match="bias"):
        swap_modules(model, nn.LayerNorm, "rmsnorm")
    new = swap_modules(model, nn.LayerNorm, "rmsnorm", weights="init")
    assert not any(isinstance(m, nn.LayerNorm) for m in new.modules())
    assert new(IDS).logits.shape == (2, 8, 64)


# --------------------------------------------------------------------------- attention


def _padded_mask() -> torch.Tensor:
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    return mask


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_swap_transformers_attention_for_ours_is_exact(family, implementation) -> None:
    from netarchitect.extend import HFAttention, swap_hf_attention
    from netarchitect.layers.attention import MultiHeadAttention

    if family == "gpt2":
        model = make(transformers.GPT2LMHeadModel, gpt2_config())
    else:
        model = make(transformers.BertForSequenceClassification, bert_config(num_labels=3))
    model.config._attn_implementation = implementation
    new = swap_hf_attention(model).eval()
    assert sum(isinstance(m, HFAttention) for m in new.modules()) == 2
    assert sum(isinstance(m, MultiHeadAttention) for m in model.modules()) == 0
    mask = _padded_mask()
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            want = model(IDS, use_cache=False, **kwargs).logits
            got = new(IDS, **kwargs).logits
            rows = slice(None) if family == "bert" else (0,)  # padded GPT-2 rows differ in junk
            assert_close(got[rows], want[rows], rtol=1e-5, atol=1e-5)
    new.train()
    new(IDS).logits.sum().backward()
    attn = next(m for m in new.modules() if isinstance(m, MultiHeadAttention))
    assert attn.q_proj.weight.grad is not None and attn.v_proj.weight.grad is not None


def test_swap_transformers_attention_refusals() -> None:
    from netarchitect.errors import NetArchitectError
    from netarchitect.extend import swap_hf_attention

    with pytest.raises(SpecError, match="no transformers attention"):
        swap_hf_attention(nn.Sequential(nn.Linear(2, 2)))
    model = swap_hf_attention(make(transformers.GPT2LMHeadModel, gpt2_config()))
    assert model.config.use_cache is False
    with pytest.raises(NetArchitectError, match="use_cache=False"):
        model(IDS, use_cache=True)
    cross = make(transformers.BertModel, bert_config(is_decoder=True, add_cross_attention=True))
    with pytest.raises(SpecError, match="cross-attention"):
        swap_hf_attention(cross)


def test_swap_transformers_attention_refuses_what_it_cannot_carry() -> None:
    from netarchitect.errors import NetArchitectError
    from netarchitect.extend import HFAttention, swap_hf_attention

    with pytest.raises(SpecError, match="GPT-2 cross-attention"):
        swap_hf_attention(make(transformers.GPT2LMHeadModel, gpt2_config(add_cross_attention=True)))
    bert = make(transformers.BertModel, bert_config())
    bert.encoder.layer[0].attention.self.position_embedding_type = "relative_key"
    with pytest.raises(SpecError, match="absolute positions only"):
        swap_hf_attention(bert)
    attn = next(m for m in swap_hf_attention(make(transformers.BertModel, bert_config())).modules()
                if isinstance(m, HFAttention))
    with pytest.raises(NetArchitectError, match="self-attention only"):
        attn(torch.randn(1, 3, 32), encoder_hidden_states=torch.randn(1, 2, 32))

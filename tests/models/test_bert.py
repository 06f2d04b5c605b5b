"""BERT encoders and heads: reference sizes, padding, segments, heads, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models._classifier import ClassifierNetwork
from netarchitect.models._lm_base import SequenceEncoder
from netarchitect.models.bert import BertEncoder, BertOutput, bert

TINY = {"vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 16}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def tiny(**kwargs):
    torch.manual_seed(0)
    return bert(**{**TINY, **kwargs}).eval()


def test_bert_base_has_exactly_109_482_240_parameters() -> None:
    assert n_params(na.create_model("bert-base", device="meta")) == 109_482_240


@pytest.mark.parametrize(
    ("name", "head", "count"),
    [("bert-base", "mlm", 109_514_298), ("bert-large", None, 335_141_888)],
)
def test_other_reference_counts(name: str, head: str | None, count: int) -> None:
    assert n_params(na.create_model(name, head=head, device="meta")) == count


def test_encoder_outputs_and_structure() -> None:
    model = tiny()
    out = model(ids(3, 7))
    assert isinstance(out, BertOutput)
    assert out.last_hidden_state.shape == (3, 7, 32) and out.pooler_output.shape == (3, 32)
    assert isinstance(model, BertEncoder)
    assert model.blocks[0].attn.mode == "post" and model.embedding.norm.eps == 1e-12
    assert tiny(pooler=False)(ids(1, 4)).pooler_output is None


def test_padding_does_not_change_real_tokens() -> None:
    model = tiny()
    a, b = ids(1, 8, seed=1), ids(1, 5, seed=2)
    batch = torch.cat((a, F.pad(b, (0, 3))), dim=0)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    out = model(batch, attention_mask=mask)
    ref_b = model(b)
    torch.testing.assert_close(out.last_hidden_state[1, :5], ref_b.last_hidden_state[0])
    torch.testing.assert_close(out.pooler_output[1], ref_b.pooler_output[0])
    torch.testing.assert_close(out.last_hidden_state[0], model(a).last_hidden_state[0])


def test_segments_change_the_output() -> None:
    model, x = tiny(), ids(1, 6)
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    zeros = model(x, token_type_ids=torch.zeros_like(types)).last_hidden_state
    torch.testing.assert_close(zeros, model(x).last_hidden_state)
    assert not torch.allclose(model(x, token_type_ids=types).last_hidden_state, zeros)
    with pytest.raises(ValueError, match="no segments"):
        tiny(type_vocab_size=0)(x, token_type_ids=types)
    assert tiny(type_vocab_size=0).embedding.segment is None


def test_masked_lm_head_is_tied() -> None:
    model = tiny(head="mlm")
    assert isinstance(model, SequenceEncoder)
    assert model.head.weight is model.tok_embed.weight
    assert "pooler" not in model.nodes
    assert model(ids(2, 5)).shape == (2, 5, 64)
    rebuilt = na.build(model.spec, seed=0)
    assert rebuilt.head.weight is rebuilt.tok_embed.weight


def test_sequence_classification_contract() -> None:
    model = tiny(head="classification", num_classes=3)
    assert isinstance(model, ClassifierNetwork)
    x, mask = ids(2, 5), torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    feats = model.forward_features(x, attention_mask=mask)
    assert feats.shape == (2, 5, model.num_features)  # every token (the pooler is the head's)
    torch.testing.assert_close(model.forward_head(feats), model(x, attention_mask=mask))
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, 32) and bool((pooled.abs() <= 1).all())  # tanh pooler
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.feature_info[0]["num_chs"] == 32
    with pytest.raises(SpecError):
        model.reset_classifier(-1)


def test_pre_norm_variant_and_checkpointing() -> None:
    model = tiny(norm="pre")
    assert isinstance(model.norm, torch.nn.LayerNorm)
    x = ids(2, 5)
    ref = model(x).last_hidden_state
    for m in (model, tiny(head="mlm"), tiny(head="classification")):
        m.set_grad_checkpointing()
        m.train()
        out = m(x)
        (out.last_hidden_state if isinstance(out, BertOutput) else out).sum().backward()
    torch.testing.assert_close(model.eval()(x).last_hidden_state, ref)


def test_bad_arguments() -> None:
    with pytest.raises(SpecError, match="head="):
        bert(head="nsp")
    with pytest.raises(SpecError, match="norm="):
        bert(vocab_size=64, dim=32, depth=1, num_heads=4, norm="sandwich")
    with pytest.raises(ValueError, match="integer token ids"):
        tiny()(torch.randn(2, 3))

"""Hugging Face interop: GPT-2, BERT and LLaMA convert both ways with equal outputs (1e-5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

tf = pytest.importorskip("transformers")

from netarchitect.interop import from_hf, to_hf
from netarchitect.models._lm_base import CausalLM
from netarchitect.models.bert import BertEncoder, bert
from netarchitect.models.gpt import gpt
from netarchitect.models.llama import llama
from netarchitect.models.perceiver import perceiver

TOL = {"atol": 1e-5, "rtol": 1e-5}
V = 64


GPT2 = {"vocab_size": V, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}
LLAMA = {
    "vocab_size": V, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
}
BERT = {
    "vocab_size": V, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "max_position_embeddings": 16,
}


def gpt2_config(**kw):
    return tf.GPT2Config(**{**GPT2, "bos_token_id": None, "eos_token_id": None, **kw})


def llama_config(**kw):
    return tf.LlamaConfig(**{**LLAMA, **kw})


def bert_config(**kw):
    return tf.BertConfig(**{**BERT, **kw})


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Shared random weights, larger than any init, so parity is a real test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def hf_logits(hf_model, x, **kw):
    out = hf_model(x, **kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def ours_logits(model, x, **kw):
    out = model(x, **kw)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


HF_CASES = {
    "gpt2": lambda: tf.GPT2LMHeadModel(gpt2_config()),
    "gpt2-untied-relu": lambda: tf.GPT2LMHeadModel(
        gpt2_config(tie_word_embeddings=False, activation_function="relu", n_inner=40)
    ),
    "llama": lambda: tf.LlamaForCausalLM(llama_config()),
    "llama-bias-tied": lambda: tf.LlamaForCausalLM(
        llama_config(attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                     rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    ),
    "bert": lambda: tf.BertModel(bert_config()),
    "bert-no-pooler": lambda: tf.BertModel(bert_config(), add_pooling_layer=False),
    "bert-mlm": lambda: tf.BertForMaskedLM(bert_config()),
    "bert-cls": lambda: tf.BertForSequenceClassification(bert_config(num_labels=3)),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_from_hf_then_back_gives_the_same_outputs(case: str) -> None:
    hf_model = randomize(HF_CASES[case]())
    x = ids(2, 10)
    ref = hf_logits(hf_model, x)
    ours = from_hf(hf_model)
    assert not ours.training
    torch.testing.assert_close(ours_logits(ours, x), ref, **TOL)
    back = to_hf(ours)
    assert type(back) is type(hf_model)
    torch.testing.assert_close(hf_logits(back, x), ref, **TOL)
    state = back.state_dict()
    for key, value in hf_model.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


OURS_CASES = {
    "gpt": lambda: gpt(vocab_size=V, dim=32, depth=2, num_heads=4, max_positions=16),
    "llama": lambda: llama(vocab_size=V, dim=32, depth=2, num_heads=4, num_kv_heads=1,
                           hidden_dim=40, max_positions=32),
    "bert": lambda: bert(vocab_size=V, dim=32, depth=2, num_heads=4, max_positions=16),
    "bert-mlm": lambda: bert(head="mlm", vocab_size=V, dim=32, depth=2, num_heads=4,
                             max_positions=16, act_layer="gelu_tanh"),
    "bert-cls": lambda: bert(head="classification", num_classes=4, vocab_size=V, dim=32,
                             depth=1, num_heads=2, max_positions=16),
}


@pytest.mark.parametrize("case", list(OURS_CASES))
def test_to_hf_gives_the_same_outputs(case: str) -> None:
    ours = randomize(OURS_CASES[case]())
    x = ids(2, 9)
    hf_model = to_hf(ours)
    torch.testing.assert_close(hf_logits(hf_model, x), ours_logits(ours, x), **TOL)
    again = from_hf(hf_model)
    assert type(again) is type(ours)
    torch.testing.assert_close(ours_logits(again, x), ours_logits(ours, x), **TOL)


def test_padded_batches_agree_with_transformers() -> None:
    x = ids(2, 8)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    for hf_model in (tf.GPT2LMHeadModel(gpt2_config()), tf.BertForMaskedLM(bert_config())):
        hf_model = randomize(hf_model)
        ours = from_hf(hf_model)
        got, ref = ours(x, attention_mask=mask), hf_logits(hf_model, x, attention_mask=mask)
        torch.testing.assert_close(got[0], ref[0], **TOL)
        torch.testing.assert_close(got[1, :5], ref[1, :5], **TOL)


def test_base_decoders_convert_to_features() -> None:
    x = ids(2, 7)
    for hf_model in (tf.GPT2Model(gpt2_config()), tf.LlamaModel(llama_config())):
        hf_model = randomize(hf_model)
        ours = from_hf(hf_model)
        assert isinstance(ours, CausalLM)
        ref = hf_model(x).last_hidden_state
        torch.testing.assert_close(ours.forward_features(x), ref, **TOL)
        back = to_hf(ours, base=True)
        assert type(back) is type(hf_model)
        torch.testing.assert_close(back(x).last_hidden_state, ref, **TOL)


def test_options_dtype_and_mode() -> None:
    ours = randomize(OURS_CASES["gpt"]()).train()
    hf_model = to_hf(ours, attn_implementation="eager")
    assert hf_model.config._attn_implementation == "eager" and hf_model.training
    double = from_hf(randomize(tf.GPT2LMHeadModel(gpt2_config())).double())
    assert next(double.parameters()).dtype == torch.float64
    mlm = randomize(OURS_CASES["bert-mlm"]())
    assert "mlm_head" in mlm.nodes
    encoder = to_hf(mlm, base=True)
    assert type(encoder) is tf.BertModel and encoder.pooler is None
    assert isinstance(from_hf(encoder), BertEncoder)


def test_unsupported_models_and_configs() -> None:
    with pytest.raises(TypeError, match="cannot convert"):
        from_hf(tf.GPT2ForSequenceClassification(gpt2_config()))
    with pytest.raises(TypeError, match="cannot convert"):
        to_hf(perceiver(in_features=4, num_latents=2, latent_dim=8, depth=1, num_heads=2))
    bad_rope = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(ValueError, match="rope_type"):
        from_hf(tf.LlamaForCausalLM(llama_config(rope_parameters=bad_rope)))
    partial = {**LLAMA3_ROPE, "partial_rotary_factor": 0.5}
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        from_hf(tf.LlamaForCausalLM(llama_config(**LONG, rope_parameters=partial)))
    with pytest.raises(ValueError, match="hidden_act"):
        from_hf(tf.LlamaForCausalLM(llama_config(hidden_act="gelu")))
    with pytest.raises(ValueError, match="activation"):
        from_hf(tf.GPT2LMHeadModel(gpt2_config(activation_function="gelu_fast")))
    with pytest.raises(ValueError, match="scale"):
        from_hf(tf.GPT2LMHeadModel(gpt2_config(scale_attn_by_inverse_layer_idx=True)))
    with pytest.raises(ValueError, match="is_decoder"):
        from_hf(tf.BertModel(bert_config(is_decoder=True)))


def test_models_without_a_transformers_equivalent() -> None:
    small = {"vocab_size": V, "dim": 32, "depth": 1, "num_heads": 4, "max_positions": 16}
    for model, error, match in [
        (gpt(**small, pos="alibi"), ValueError, "needs pos='rope'"),
        (gpt(**small, mlp_layer="swiglu"), TypeError, "MLP feed-forwards"),
        (gpt(**small, bias=False), ValueError, "attention biases"),
        (gpt(**small, num_kv_heads=2), ValueError, "grouped-query"),
        (gpt(**small, act_layer="mish"), ValueError, "no transformers name"),
        (llama(**small, hidden_dim=16, act_layer="gelu"), TypeError, "SwiGLU"),
        (bert(**small, norm="pre"), ValueError, "post-norm"),
    ]:
        with pytest.raises(error, match=match):
            to_hf(model)


def test_mismatched_weights_and_other_structures() -> None:
    from netarchitect.interop.hf import Rule, convert_state

    with pytest.raises(ValueError, match="no 'missing'"):
        convert_state({}, [Rule("missing", ("x",))], to="ours")
    with pytest.raises(ValueError, match="cross-attention"):
        from_hf(tf.GPT2LMHeadModel(gpt2_config(add_cross_attention=True)))
    small = {"vocab_size": V, "dim": 32, "depth": 1, "num_heads": 4, "max_positions": 16}
    with pytest.raises(ValueError, match="qk-norm"):
        to_hf(gpt(**small, qk_norm="layernorm"))


# head_dim 16, base 10000: wavelengths 6.3, 19.9, 62.8, ... straddle the llama3 bands
# (kept below 32 / 4 = 8, divided by the factor above 32 / 1), at positions up to 48 > 32.
LONG = {"head_dim": 16, "max_position_embeddings": 64}
LLAMA3_ROPE = {
    "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.mark.parametrize(
    "rope", [LLAMA3_ROPE, {"rope_type": "linear", "factor": 3.0}], ids=["llama3", "linear"]
)
def test_scaled_rope_converts_both_ways(rope: dict) -> None:
    hf_model = randomize(tf.LlamaForCausalLM(llama_config(**LONG, rope_scaling=dict(rope))))
    x = ids(2, 48)
    ref = hf_logits(hf_model, x)
    ours = from_hf(hf_model)
    scaling = ours.blocks[1].attn.fn.rotary.scaling
    assert scaling["type"] == rope["rope_type"] and scaling["factor"] == rope["factor"]
    torch.testing.assert_close(ours_logits(ours, x), ref, **TOL)
    back = to_hf(ours)
    assert {k: back.config.rope_parameters[k] for k in rope} == rope
    torch.testing.assert_close(hf_logits(back, x), ref, **TOL)
    plain = randomize(tf.LlamaForCausalLM(llama_config(**LONG)))
    assert not torch.allclose(hf_logits(plain, x), ref, **TOL)  # the scaling matters here


def test_scaled_llama_to_hf_matches() -> None:
    scaling = {
        "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_positions": 32,
    }
    ours = randomize(llama(vocab_size=V, dim=32, depth=1, num_heads=2, num_kv_heads=1,
                           hidden_dim=40, max_positions=64, rope_scaling=scaling))
    x = ids(1, 48)
    hf_model = to_hf(ours)
    assert hf_model.config.rope_parameters["original_max_position_embeddings"] == 32
    torch.testing.assert_close(hf_logits(hf_model, x), ours_logits(ours, x), **TOL)
    assert from_hf(hf_model).blocks[0].attn.fn.rotary.scaling == scaling

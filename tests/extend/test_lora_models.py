"""LoRA on whole models — ours (GPT-2, BERT, ViT) and transformers' (GPT-2, BERT) from tiny
configs: merge/unmerge exactness, only adapters get gradients, a training step moves only
adapters."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.extend import apply_lora, lora_parameters, merge_lora, unmerge_lora
from netarchitect.models.bert import bert
from netarchitect.models.gpt import gpt
from netarchitect.models.vit import vit

transformers = pytest.importorskip("transformers")

G = torch.Generator().manual_seed(0)
IDS = torch.randint(0, 64, (2, 40), generator=G)  # 80 tokens: our fused q/k/v path
IMG = torch.randn(2, 3, 16, 16, generator=G)


def _hf_gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _hf_bert() -> nn.Module:
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg)


def _out(out: Any) -> torch.Tensor:
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out


MODELS: dict[str, tuple[Callable[[], nn.Module], Any, list[str]]] = {
    "gpt2": (lambda: gpt(vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=64, seed=0),
             IDS, ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"]),
    "bert": (lambda: bert(vocab_size=64, dim=32, depth=2, num_heads=4, max_positions=64, seed=0,
                          head="classification"),
             IDS, ["attn.fn.*", "pooler"]),
    "vit": (lambda: vit(patch_size=4, embed_dim=16, depth=2, num_heads=2, img_size=16,
                        num_classes=5, seed=0), IMG, ["qkv", "q_proj", "v_proj", "patch_embed"]),
    "hf_gpt2": (_hf_gpt2, IDS, ["c_attn", "attn.c_proj", "mlp.c_fc", "wpe"]),
    "hf_bert": (_hf_bert, IDS, ["query", "key", "value", "attention.output.dense"]),
}


def _targets(model: nn.Module, wanted: list[str]) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return [t for t in wanted if "." in t or "*" in t or t in names]


@pytest.mark.parametrize("name", list(MODELS))
def test_merge_unmerge_exact_and_only_adapters_train(name: str) -> None:
    make, x, wanted = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    base = copy.deepcopy(model)
    reference = _out(base(x))
    adapted = apply_lora(model, _targets(model, wanted), rank=4, alpha=8)
    assert adapted
    assert_close(_out(model(x)), reference)  # B = 0 at start
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    model.train()
    _out(model(x)).float().pow(2).mean().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_adapters" in n), n
    opt.step()
    model.eval()
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n  # frozen weights bit-identical
    out = _out(model(x))
    assert not torch.allclose(out, reference, atol=1e-5)
    merge_lora(model)
    assert_close(_out(model(x)), out, rtol=0, atol=1e-5)
    unmerge_lora(model)
    for n, p in model.named_parameters():
        if n in before:
            assert_close(p, before[n], rtol=0, atol=1e-6)
    assert_close(_out(model(x)), out, rtol=0, atol=1e-5)


def test_tied_gpt2_embedding_adapts_the_lookup_only() -> None:
    model = gpt(vocab_size=64, dim=32, depth=1, num_heads=4, max_positions=64, seed=0)
    apply_lora(model, "embed.token", rank=4)
    head = model.get_submodule("nodes.head")
    assert type(head).__name__ == "LMHead"  # the tied head reads the base table


def test_hf_mixtral_stacked_experts() -> None:
    cfg = transformers.MixtralConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=24,
                                     num_attention_heads=2, num_key_value_heads=1,
                                     num_local_experts=3, num_experts_per_tok=2, vocab_size=64)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg).eval()
    ids = IDS[:, :12]
    reference = model(ids).logits
    names = apply_lora(model, "experts", rank=2)
    assert names == ["model.layers.0.mlp.experts"]
    assert_close(model(ids).logits, reference)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.1 * torch.randn_like(p))
    out = model(ids).logits
    assert not torch.allclose(out, reference, atol=1e-5)
    merge_lora(model)
    assert_close(model(ids).logits, out, rtol=0, atol=1e-5)

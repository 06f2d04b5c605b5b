"""Attention-head and hidden-unit pruning of GPT-2, BERT, LLaMA (GQA) and MoE-shaped models."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.network import build
from netarchitect.optimize.pruning import apply_plan, plan_pruning, zero_pruned
from netarchitect.registry import model_example


def _model(name: str, **overrides):
    ex = model_example(name)
    return na.create_model(name, seed=0, **{**ex.kwargs, **overrides}).eval(), ex.inputs


def _logits(out):
    return getattr(out, "logits", out)


@pytest.mark.parametrize(
    "name",
    ["gpt2", "bert-tiny", "llama-tiny", "moe-decoder-s", "t5-small", "transformer-base",
     "perceiver", "highway_net_50", "plain_net_50", "conformer-s"],
)
def test_sequence_and_mlp_models_prune_exactly(name: str) -> None:
    model, inputs = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_pruning(model, 0.5)
    pruned = apply_plan(model, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in build(plan.spec, device="meta").parameters()) == sum(
        p.numel() for p in pruned.parameters()
    )
    with torch.no_grad():
        expected = _logits(zero_pruned(model, plan)(*inputs))
        torch.testing.assert_close(_logits(pruned(*inputs)), expected, rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gpt2_heads_and_mlp_halve_and_head_width_stays() -> None:
    model, _ = _model("gpt2")
    plan = plan_pruning(model, 0.5)
    params = plan.spec.node("block_0").params
    assert params["num_heads"] == 2 and params["head_dim"] == 8 and params["hidden_dim"] == 64
    attn = apply_plan(model, plan).nodes["block_0"].attn.fn
    assert attn.q_proj.out_features == 16 and attn.out_proj.in_features == 16
    assert attn.q_proj.in_features == 32  # the residual stream is kept


def test_gqa_prunes_whole_key_value_groups() -> None:
    model, _ = _model("llama-tiny")  # 4 query heads sharing 2 key/value heads
    plan = plan_pruning(model, 0.5)
    params = plan.spec.node("block_0").params
    assert params["num_heads"] == 2 and params["num_kv_heads"] == 1
    # the kept query heads are the two that share the kept key/value head
    kv = plan.indices["nodes.block_0.attn.fn.k_proj.weight"][0]
    q = plan.indices["nodes.block_0.attn.fn.q_proj.weight"][0]
    group = int(kv[0]) // 8
    assert torch.equal(q, torch.arange(16) + 16 * group)


def test_moe_experts_each_lose_hidden_units() -> None:
    model, _ = _model("moe-decoder-s")
    pruned = apply_plan(model, plan_pruning(model, 0.5))
    experts = pruned.nodes["block_0"].mlp.fn.experts
    assert len(experts) == 4 and all(e.gate_proj.out_features == 16 for e in experts)


def test_vit_keeps_heads_but_prunes_its_mlp() -> None:
    model, _ = _model("vit_ti_16")
    plan = plan_pruning(model, 0.5)
    node = next(n for n in plan.spec.nodes if n.block == "vit_block")
    assert node.params["num_heads"] == model.spec.node(node.id).params["num_heads"]
    assert node.params["mlp_ratio"] < model.spec.node(node.id).params.get("mlp_ratio", 4.0)
    reasons = [g.frozen for g in plan.groups if g.frozen]
    assert any("head_dim" in r for r in reasons)

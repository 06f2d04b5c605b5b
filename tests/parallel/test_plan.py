"""Plans derived from block roles: entries, refusals with reasons, data round trips."""

import json

import pytest
import torch
from torch import nn

from netarchitect.layers.transformer import TransformerBlock
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.plan import ModulePlan, ParallelPlan, derive_plan, plan_from
from netarchitect.parallel.roles import ROLES, find_roles
from tests.parallel._ranks_plans import tiny_gpt, tiny_llama, tiny_resnet


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt()


def test_gpt_roles(gpt):
    roles = {p: r.kind for p, r in find_roles(gpt).items()}
    assert roles["nodes.block_0"] == "block"
    assert roles["nodes.block_0.attn.fn"] == "attention"
    assert roles["nodes.block_0.attn.fn.k_proj"] == "attn_in"
    assert roles["nodes.block_0.attn.fn.out_proj"] == "attn_out"
    assert roles["nodes.block_1.mlp.fn.fc1"] == "mlp_in"
    assert roles["nodes.block_1.mlp.fn.fc2"] == "mlp_out"
    assert roles["nodes.block_1.mlp.norm"] == roles["nodes.norm"] == "norm"
    assert roles["nodes.embed"] == "embedding" and roles["nodes.head"] == "head"
    assert set(roles.values()) <= set(ROLES)


def test_gpt_plan_shards_heads_and_hidden(gpt):
    plan = derive_plan(gpt, tp=2)
    assert plan.fsdp_units == ["nodes.block_0", "nodes.block_1"]  # tied embed/head: the root
    styles = plan.tp_styles
    assert [styles[f"nodes.block_0.attn.fn.{n}"] for n in ("q_proj", "k_proj", "v_proj")] == [
        "colwise"] * 3
    assert styles["nodes.block_0.attn.fn.out_proj"] == "rowwise"
    assert styles["nodes.block_0.mlp.fn.fc2"] == "rowwise"
    assert len(styles) == 12 and "nodes.norm" not in styles
    assert derive_plan(gpt).tp_styles == {}
    assert derive_plan(gpt, fsdp=False).fsdp_units == []


def test_llama_gated_mlp_and_gqa():
    plan = derive_plan(tiny_llama(), tp=2)
    assert plan.tp_styles["nodes.block_0.mlp.fn.gate_proj"] == "colwise"
    assert plan.tp_styles["nodes.block_0.mlp.fn.up_proj"] == "colwise"
    assert plan.tp_styles["nodes.block_0.mlp.fn.down_proj"] == "rowwise"
    with pytest.raises(ParallelError, match="block_0.attn.fn: 2 kv heads do not divide over tp=4"):
        derive_plan(tiny_llama(), tp=4)


def test_sequence_parallel_entries(gpt):
    styles = derive_plan(gpt, tp=2, sequence_parallel=True).tp_styles
    assert styles["nodes.embed"] == "shard_output" and styles["nodes.head"] == "gather_input"
    assert styles["nodes.block_0.attn.norm"] == styles["nodes.norm"] == "sequence"
    assert styles["nodes.block_1.mlp.fn"] == "gather_input"
    with pytest.raises(ParallelError, match="sequence_parallel needs tp > 1"):
        derive_plan(gpt, sequence_parallel=True)
    blocks = nn.Sequential(TransformerBlock(8, 2, dtype=torch.float64))
    with pytest.raises(ParallelError, match="spec-built model with an embedding and a head"):
        derive_plan(blocks, tp=2, sequence_parallel=True)


def test_tp_refusals_name_module_and_numbers(gpt):
    with pytest.raises(ParallelError, match=r"^nodes.block_0.attn.fn: 2 heads do not divide over "
                       r"tp=3; nodes.block_0.mlp.fn: hidden size 256 does not divide over tp=3 "
                       r"\(and 2 more\)$"):
        derive_plan(gpt, tp=3)
    with pytest.raises(ParallelError, match="tp=2: ClassifierNetwork has no attention or MLP"):
        derive_plan(tiny_resnet(), tp=2)
    with pytest.raises(ParallelError, match=r"per-head position bias \(pos='alibi'\)"):
        derive_plan(tiny_gpt(pos="alibi"), tp=2)
    with pytest.raises(ParallelError, match="tp must be a positive integer, got 0"):
        derive_plan(gpt, tp=0)


def test_fused_qkv_is_left_replicated_with_a_note():
    model = nn.Sequential(TransformerBlock(8, 2), nn.MultiheadAttention(8, 2))
    plan = derive_plan(model, tp=2)
    assert plan.fsdp_units == ["0"]
    assert "1.in_proj" not in str(plan.tp_styles)
    assert any("1: fused q/k/v in_proj_weight left replicated" in n for n in plan.notes)
    assert "note: 1: fused q/k/v" in str(plan)


def test_resnet_blocks_are_fsdp_units():
    plan = derive_plan(tiny_resnet())
    assert plan.fsdp_units == ["nodes.stem", "nodes.s1_b0", "nodes.s2_b0", "nodes.head"]
    assert plan.notes == ()  # GroupNorm: nothing depends on the batch split


def test_batch_norm_under_data_parallel_gets_a_note():
    from netarchitect.models.resnet import resnet

    model = resnet(layers=(1, 1), widths=(8, 16), stem_width=8, num_classes=10, img_size=16)
    (note,) = derive_plan(model).notes
    assert note.startswith("nodes.stem.norm and 5 more: BatchNorm normalises each rank's share")


def test_plan_prints_a_table(gpt):
    text = str(derive_plan(gpt, tp=2))
    lines = text.splitlines()
    assert lines[0] == "ParallelPlan(data parallel: FSDP2, tp=2)"
    assert lines[1].split() == ["module", "role", "fsdp", "tp"]
    assert lines[2].split() == ["nodes.block_0", "block", "unit"]
    assert lines[3].split() == ["nodes.block_0.attn.fn.q_proj", "attn_in", "colwise"]
    assert "sequence parallel" in str(derive_plan(gpt, tp=2, sequence_parallel=True))
    assert str(derive_plan(gpt, fsdp=False)).startswith("ParallelPlan(data parallel: DDP, tp=1)")


def test_plan_round_trips_through_json(gpt):
    plan = derive_plan(gpt, tp=2, sequence_parallel=True)
    assert ParallelPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_overrides_per_glob(gpt):
    plan = derive_plan(gpt, tp=2, overrides={"*.mlp.fn.fc?": {"tp": None}})
    assert not any(".mlp." in p for p in plan.tp_styles)
    plan = plan.override("nodes.norm", fsdp=True)
    assert plan.fsdp_units[-1] == "nodes.norm"
    with pytest.raises(ParallelError, match=r"unknown fields \['shard'\]"):
        plan.override("*", shard=True)
    with pytest.raises(ParallelError, match="unknown tensor-parallel style 'diagonal'"):
        plan.override("nodes.norm", tp="diagonal")


def test_globs_resolve_against_the_model(gpt):
    plan = ParallelPlan.from_dict({"tp": 2, "modules": {"*.attn.fn.?_proj": {"tp": "colwise"}}})
    resolved = plan.resolve(gpt)
    assert sorted(resolved.tp_styles) == sorted(
        f"nodes.block_{i}.attn.fn.{n}_proj" for i in range(2) for n in "qkv")
    with pytest.raises(ParallelError, match="plan entry 'nodes.blok_0' matches no module of "
                       "CausalLM .did you mean 'nodes.block_0'"):
        ParallelPlan.from_dict({"modules": {"nodes.blok_0": {"fsdp": True}}}).resolve(gpt)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tp": 2, "mode": "x"}, r"unknown plan keys \['mode'\]"),
        ({"modules": {"a": {"fsdp": True, "shard": 1}}},
         r"plan entry 'a': unknown fields \['shard'\]"),
        ({"tp": "2"}, "plan tp must be a positive integer, got '2'"),
    ],
)
def test_bad_plan_dicts(data, message):
    with pytest.raises(ParallelError, match=message):
        ParallelPlan.from_dict(data)


def test_plan_from(gpt):
    assert plan_from(gpt, "auto", 2) == derive_plan(gpt, tp=2)
    assert plan_from(gpt, {"tp": 1}, 1) == ParallelPlan()
    assert plan_from(gpt, derive_plan(gpt), 1).fsdp_units == ["nodes.block_0", "nodes.block_1"]
    with pytest.raises(ParallelError, match="a ParallelPlan or a dict, got 'fast'"):
        plan_from(gpt, "fast", 1)
    with pytest.raises(ParallelError, match="got int"):
        plan_from(gpt, 3, 1)
    assert ModulePlan().tp is None

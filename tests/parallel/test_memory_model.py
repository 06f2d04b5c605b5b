"""Per-block figures of the planner vs netarchitect.analysis and the FSDP2/TP sharding rules."""

from __future__ import annotations

import pytest
import torch

from netarchitect import create_model
from netarchitect.analysis.flops import count_flops
from netarchitect.analysis.memory import memory
from netarchitect.analysis.params import count_params
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.memory_model import ParamInfo, fsdp_rows, profile_model, tp_role

SMALL = {"vocab_size": 63, "dim": 32, "depth": 3, "num_heads": 4, "num_kv_heads": 2,
         "hidden_dim": 48, "max_positions": 16}
SEQ = 16


def ids(batch: int, device: str = "meta") -> torch.Tensor:
    return torch.zeros(batch, SEQ, dtype=torch.long, device=device)


@pytest.fixture(scope="module")
def small():
    with torch.device("meta"):
        model = create_model("llama-7b", **SMALL)
    return model, profile_model(model, ids, seq_len=SEQ, name="small")


def test_fsdp_rows_follow_torch_chunk():
    for d0, world in [(10, 4), (2, 4), (63, 2), (32000, 64), (7, 7)]:
        chunks = [len(c) for c in torch.arange(d0).chunk(world)]
        chunks += [0] * (world - len(chunks))
        assert [fsdp_rows(d0, world, r) for r in range(world)] == chunks


def test_tensor_parallel_shapes():
    assert tp_role("attn_in") == "col" and tp_role("mlp_out") == "row"
    assert tp_role("norm") == tp_role("embedding") == "rep"
    assert ParamInfo("w", (48, 32), "col").tp_shape(4) == (12, 32)
    assert ParamInfo("w", (32, 48), "row").tp_shape(4) == (32, 12)
    assert ParamInfo("b", (32,), "row").tp_shape(4) == (32,)  # a row-parallel bias is whole
    assert ParamInfo("b", (48,), "col").tp_shape(4) == (12,)
    assert ParamInfo("n", (32,), "rep").tp_shape(4) == (32,)


def test_profile_counts_match_analysis(small):
    model, profile = small
    assert profile.num_params == count_params(model).trainable
    assert [u.name for u in profile.units] == [f"nodes.block_{i}" for i in range(3)]
    assert sum(u.params for u in profile.units) + profile.pre.params + profile.post.params \
        == profile.num_params
    flops = count_flops(model, ids(3), backward=True)
    assert 3 * profile.flops_per_seq == flops.total_flops


@pytest.mark.parametrize("batch", [1, 3])
def test_activations_match_analysis_memory(small, batch):
    model, profile = small
    parts = [profile.pre, *profile.units, profile.post]
    units = [u.name for u in profile.units]
    ref = memory(model, ids(batch), checkpointing=units)
    assert sum(u.activations(batch, 1) for u in parts) == ref.activations
    assert profile.outputs * batch == ref.outputs
    kept = sum(u.inputs * batch for u in profile.units)
    recompute = max(u.activations(batch, 1, checkpointed=True) for u in profile.units)
    sides = profile.pre.activations(batch, 1) + profile.post.activations(batch, 1)
    assert sides + kept + recompute == ref.checkpointed_activations


def test_tensor_parallel_divides_the_attention_and_mlp_activations(small):
    _, profile = small
    block = profile.units[0]
    assert 0 < block.sharded < block.saved
    expected = block.saved_fixed + 2 * (block.saved - block.sharded / 2)
    assert block.activations(2, 2) == pytest.approx(expected)


def test_tp_problems_name_the_module(small):
    _, profile = small
    assert profile.tp_problems(1) == [] and profile.tp_problems(2) == []
    problems = profile.tp_problems(4)  # 4 heads but 2 kv heads
    assert any("num_kv_heads=2 is not divisible by tp=4" in p for p in problems)
    assert any("hidden features=48" in p for p in profile.tp_problems(5))


def test_pipeline_stages_are_contiguous_and_balanced(small):
    _, profile = small
    assert profile.stages(1) == [[0, 1, 2]]
    assert profile.stages(3) == [[0], [1], [2]]
    two = profile.stages(2)
    assert sorted(i for s in two for i in s) == [0, 1, 2] and all(two)
    with pytest.raises(ParallelError, match="3 blocks"):
        profile.stages(4)


def test_frozen_parameters_are_not_planned():
    with torch.device("meta"):
        model = create_model("llama-7b", **{**SMALL, "depth": 2})
    model.nodes.norm.weight.requires_grad_(False)
    profile = profile_model(model, ids, seq_len=SEQ)
    assert profile.num_params == count_params(model).trainable
    assert "nodes.norm.weight" not in {p.path for p in profile.params}


def test_balance_minimises_the_largest_stage():
    from netarchitect.parallel.memory_model import _balance

    assert _balance((5, 1, 1, 1, 1, 1), 2) == [[0], [1, 2, 3, 4, 5]]
    assert _balance((1, 1, 1, 1), 2) == [[0, 1], [2, 3]]
    assert _balance((1, 2, 3), 3) == [[0], [1], [2]]
    groups = _balance(tuple([10] * 80), 4)
    assert [len(g) for g in groups] == [20] * 4

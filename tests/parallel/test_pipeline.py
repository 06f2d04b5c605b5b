"""Pipeline stages cut at block boundaries with balanced measured FLOPs; a 2-stage GPipe and
1F1B step on two gloo processes equals the unsplit model's."""

import itertools
import types

import numpy as np
import pytest
import torch

import netarchitect as na
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.pipeline import (
    PipelineRunner,
    StageModule,
    _balance,
    _boundaries,
    pipeline_stage,
    split_model,
    split_points,
)
from tests.parallel import _ranks_plans as R


@pytest.mark.slow
def test_two_stage_pipeline_equals_the_unsplit_model():
    """GPipe and 1F1B; "tied": 1F1B with the head tied to the token embedding (stages 0 and
    1 both hold it and get the gradient of both uses)."""
    results = [r["pipeline"] for r in R.two_rank_results()]
    untied, tied = R.pipeline_model(), R.tiny_gpt(depth=4)
    refs = {name: R.step(m, m, *R.gpt_batch()) for name, m in (("untied", untied), ("tied", tied))}
    refs["tied"]["grads"]["nodes.head.weight"] = refs["tied"]["grads"]["nodes.embed.token.weight"]
    for schedule in ("gpipe", "1f1b", "tied"):
        ref = refs["tied" if schedule == "tied" else "untied"]
        first, last = results[0][schedule], results[1][schedule]
        assert first["points"] == ["block_2"]
        assert first["loss"] is None
        assert last["loss"] == pytest.approx(ref["loss"], abs=1e-12)
        assert sorted({*first["grads"], *last["grads"]}) == sorted(ref["grads"])
        for grads in (first["grads"], last["grads"]):
            for name, grad in grads.items():
                np.testing.assert_allclose(grad, ref["grads"][name], atol=1e-12, err_msg=name)


@pytest.fixture(scope="module")
def deep_gpt():
    model = R.pipeline_model()
    return model, R.gpt_batch()[0]


def test_split_points_balance_measured_flops(deep_gpt):
    from netarchitect.analysis import count_flops

    model, ids = deep_gpt
    result = count_flops(model, ids, backward=True)
    per_node = [result.by_module[f"nodes.{n}"].total_flops
                + result.by_module_backward[f"nodes.{n}"].total_flops for n in model.nodes]
    order = list(model.nodes)
    for stages in (2, 3, 4):
        split = split_model(model, ids, stages)
        assert sum(split.flops) == sum(per_node)
        # the best of every cut at a block boundary (brute force)
        best = min(
            max(sum(per_node[a + 1: b + 1]) for a, b in itertools.pairwise([-1, *cuts, 6]))
            for cuts in itertools.combinations(range(6), stages - 1)
        )
        assert max(split.flops) == best
        assert [s[0] for s in split.stages[1:]] == split.points
        assert sum(len(s) for s in split.stages) == len(order)
    split = split_model(model, ids, 2)
    assert split.points == split_points(model, ids, 2) == ["block_2"]
    assert split.inputs == ("input_ids", "block_1")
    assert split.imbalance < 1.05
    assert str(split).splitlines()[1].startswith("  stage 0: embed .. block_1 (3 nodes, ")


def test_boundaries_skip_values_that_cross_a_cut():
    spec = {
        "name": "skip", "inputs": {"x": {"shape": [4]}},
        "nodes": [
            {"id": "a", "block": "linear", "params": {"out_features": 4}},
            {"id": "b", "block": "linear", "params": {"out_features": 4}},
            {"id": "c", "block": "linear", "params": {"out_features": 4}, "inputs": ["b", "a"],
             "merge": "add"},
            {"id": "d", "block": "linear", "params": {"out_features": 4}},
        ],
        "outputs": ["d"],
    }
    model = na.build(spec, seed=0)
    assert _boundaries(model) == [0, 2]  # not after b: a still flows into c
    assert split_points(model, torch.randn(2, 4), 3) == ["b", "d"]
    with pytest.raises(ParallelError, match="skip: 2 block boundaries allow at most 3 pipeline "
                       "stages, not 4"):
        split_model(model, torch.randn(2, 4), 4)


def test_balance_is_exact():
    assert _balance([1, 1, 1, 9], [0, 1, 2], 2) == [2]
    assert _balance([5, 1, 1, 1, 5], [0, 1, 2, 3], 3) == [0, 3]
    assert _balance([1, 2], [0], 1) == []


def test_bad_splits(deep_gpt):
    model, ids = deep_gpt
    with pytest.raises(ParallelError, match="cut from a spec-built Network, got Linear"):
        split_model(torch.nn.Linear(2, 2), torch.randn(1, 2), 2)
    two_outputs = {"name": "two", "inputs": {"x": {"shape": [4]}}, "outputs": ["a", "b"],
                   "nodes": [{"id": "a", "block": "linear", "params": {"out_features": 4}},
                             {"id": "b", "block": "linear", "params": {"out_features": 4}}]}
    with pytest.raises(ParallelError, match=r"two: a pipeline needs one input and one output "
                       r"\(the last node\); the spec has inputs \['x'\] and outputs \['a', 'b'\]"):
        split_model(na.build(two_outputs, seed=0), torch.randn(1, 4), 2)
    with pytest.raises(ParallelError, match="stages must be a positive integer, got 0"):
        split_model(model, ids, 0)
    split = split_model(model, ids, 2)
    with pytest.raises(ParallelError, match="stage 2 of a 2-stage split"):
        StageModule(model, split, 2)


def test_tied_weights_are_shared_across_stages(deep_gpt):
    _, ids = deep_gpt
    tied = R.tiny_gpt(depth=4)
    split = split_model(tied, ids, 3)
    stages = [StageModule(tied, split, i) for i in range(3)]
    weight = tied.nodes.embed.token.weight
    assert [[(p is weight, held) for p, held in s.tied] for s in stages] == [
        [(True, True)], [(True, False)], [(True, True)]]
    assert StageModule(R.pipeline_model(), split, 0).tied == []
    owned = [[p for p in s.owned_parameters()] for s in stages]
    assert [any(p is weight for p in o) for o in owned] == [True, False, False]
    assert sorted(id(p) for o in owned for p in o) == sorted(id(p) for p in tied.parameters())


def test_stage_module_runs_its_part(deep_gpt):
    model, ids = deep_gpt
    split = split_model(model, ids, 2)
    first, last = StageModule(model, split, 0), StageModule(model, split, 1)
    assert [n for n, _ in first.named_children()] == ["nodes"]
    assert sum(p.numel() for p in first.parameters()) + sum(
        p.numel() for p in last.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(last(first(ids)), model(ids))


def test_one_stage_pipeline_in_process(one_rank):
    ids, target = R.gpt_batch()
    model = R.pipeline_model()
    ref = R.step(model, model, ids, target)
    model = R.pipeline_model()
    stage = pipeline_stage(model, split_model(model, ids, 1))
    loss = PipelineRunner(stage, n_microbatches=2, loss_fn=R.loss_fn).step(ids, target=target)
    assert float(loss) == pytest.approx(ref["loss"], abs=1e-12)
    np.testing.assert_allclose(model.nodes.block_0.attn.fn.q_proj.weight.grad.numpy(),
                               ref["grads"]["nodes.block_0.attn.fn.q_proj.weight"], atol=1e-12)
    with pytest.raises(ParallelError, match="2 pipeline stages on a group of 1 ranks"):
        pipeline_stage(model, split_model(model, ids, 2))


def test_shared_gradients_are_summed_over_the_group(one_rank):
    held, other = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    held.grad = torch.full((2,), 3.0)
    runner = PipelineRunner.__new__(PipelineRunner)
    runner.stage = types.SimpleNamespace(
        submod=types.SimpleNamespace(tied=[(held, True), (other, False)]), group=None)
    runner._sum_shared_gradients()  # one rank: the sum is the rank's own gradient
    assert held.grad.tolist() == [3.0, 3.0] and other.grad is None


def test_runner_refuses_bad_schedules():
    stage = types.SimpleNamespace(num_stages=2)
    with pytest.raises(ParallelError, match="unknown pipeline schedule 'zb'"):
        PipelineRunner(stage, n_microbatches=2, loss_fn=R.loss_fn, schedule="zb")
    with pytest.raises(ParallelError, match=r"1F1B needs at least as many micro-batches as "
                       r"stages \(1 < 2\)"):
        PipelineRunner(stage, n_microbatches=1, loss_fn=R.loss_fn, schedule="1f1b")

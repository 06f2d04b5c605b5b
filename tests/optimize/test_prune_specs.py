"""Pruning hand-written specs: the example specs' merges (add, concat, gate), flattening and
concatenations along other dimensions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from netarchitect.network import build, sample_inputs
from netarchitect.optimize.pruning import PruneError, apply_plan, plan_pruning, zero_pruned

SPECS = sorted(Path(__file__).resolve().parents[2].joinpath("examples", "specs").glob("*.yaml"))


def _check_exact(net, plan) -> None:
    if hasattr(net, "sample_inputs"):  # a GNN: the graph comes with its inputs
        x = net.sample_inputs(num_nodes=6)
    else:
        x = sample_inputs(net.spec, 2, int_high=10)
    pruned = apply_plan(net, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(pruned(*x), zero_pruned(net, plan)(*x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_specs_prune_exactly(path: Path) -> None:
    net = build(path, seed=0).eval()
    _check_exact(net, plan_pruning(net, 0.5))


def test_dense_concatenation_slices_each_part() -> None:
    net = build(next(p for p in SPECS if p.stem == "dense_block"), seed=0).eval()
    plan = plan_pruning(net, 0.5)
    # cat3 = [stem 16, l1 8, l2 8, l3 8] -> [8, 4, 4, 4]: the head reads 20 channels
    assert plan.spec.node("stem").params["out_channels"] == 8
    assert len(plan.indices["nodes.head.weight"][1]) == 20


def _spec(nodes: list[dict]) -> dict:
    return {"name": "t", "inputs": {"x": {"shape": [3, 6, 6]}}, "nodes": nodes, "outputs": ["head"]}


def test_flatten_of_positions_and_concat_along_width_keep_their_channels() -> None:
    net = build(_spec([
        {"id": "a", "block": "conv2d", "params": {"out_channels": 4, "kernel_size": 1}},
        {"id": "b", "block": "conv2d", "params": {"out_channels": 4, "kernel_size": 1},
         "inputs": ["x"]},
        {"id": "wide", "block": "identity", "inputs": ["a", "b"], "merge": "concat",
         "merge_dim": 2},
        {"id": "c", "block": "conv2d", "params": {"out_channels": 8, "kernel_size": 1}},
        {"id": "flat", "block": "flatten"},
        {"id": "head", "block": "linear", "params": {"out_features": 3}},
    ]), seed=0).eval()
    with pytest.raises(PruneError, match=r"merge along dimension 2.*flattened together"):
        plan_pruning(net, 0.5)


def test_gate_merge_ties_its_three_inputs() -> None:
    net = build(next(p for p in SPECS if p.stem == "highway_mlp"), seed=0).eval()
    plan = plan_pruning(net, 0.5)
    for node in ("proj", "h1", "t1", "h2", "t2"):
        assert plan.spec.node(node).params["out_features"] == 32
    idx = plan.indices["nodes.proj.weight"][0]
    assert torch.equal(plan.indices["nodes.t1.weight"][0], idx)

"""Bad pruning requests raise a PruneError naming the problem, and leave the model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.errors import NetArchitectError
from netarchitect.network import build
from netarchitect.optimize.pruning import PruneError, plan_pruning, prune
from netarchitect.registry import model_example


def _model(name: str, **overrides):
    ex = model_example(name)
    return na.create_model(name, seed=0, **{**ex.kwargs, **overrides}).eval()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in after.items():
        assert torch.equal(v, before[k]), k


def test_prune_error_is_a_netarchitect_error() -> None:
    assert issubclass(PruneError, NetArchitectError) and issubclass(PruneError, ValueError)


@pytest.mark.parametrize("amount", [-0.5, 1.0, 2, None])
def test_amount_outside_unit_interval(amount) -> None:
    model = _model("resnet18")
    before = _snapshot(model)
    with pytest.raises(PruneError, match=r"amount=.* must be a number in \[0, 1\)"):
        prune(model, amount)
    _assert_untouched(model, before)


def test_a_dimension_that_would_reach_zero() -> None:
    model = _model("resnet18", stem_width=1, widths=(1, 1))
    before = _snapshot(model)
    with pytest.raises(PruneError, match="would leave none"):
        plan_pruning(model, 0.9)
    _assert_untouched(model, before)


def test_a_model_without_a_pruning_rule_names_its_blocks() -> None:
    spec = {"name": "opaque", "inputs": {"x": {"shape": [8]}},
            "nodes": [{"id": "act", "block": "prelu"}], "outputs": ["act"]}
    model = build(spec, seed=0)
    before = _snapshot(model)
    with pytest.raises(PruneError, match="no prunable dimension.*block 'prelu'"):
        prune(model, 0.5)
    _assert_untouched(model, before)


def test_a_plain_module_is_refused_with_its_name() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(PruneError, match="Sequential"):
        prune(model, 0.5, example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(PruneError, match="Sequential"):
        plan_pruning(model, 0.5)


def test_unknown_criterion_and_taylor_without_data() -> None:
    model = _model("resnet18")
    with pytest.raises(PruneError, match="criterion"):
        plan_pruning(model, 0.5, criterion="random")
    with pytest.raises(PruneError, match="data="):
        plan_pruning(model, 0.5, criterion="taylor")


def test_bad_data_for_taylor() -> None:
    model = _model("resnet18")
    with pytest.raises(PruneError, match="no batch"):
        plan_pruning(model, 0.5, criterion="taylor", data=[])
    with pytest.raises(PruneError, match="pairs"):
        plan_pruning(model, 0.5, criterion="taylor", data=[torch.randn(2, 3, 32, 32)])


def test_widths_that_change_a_block_s_layers_are_refused() -> None:
    model = _model("resnet18")  # stem 8 -> 4 and s1_b0 4 -> 4: its projection would vanish
    before = _snapshot(model)
    with pytest.raises(PruneError, match=r"change the layers of node\(s\) \['s1_b0'\].*round_to"):
        plan_pruning(model, 0.5, round_to=4)
    _assert_untouched(model, before)


def test_a_rule_that_mislabels_its_block_is_caught_before_pruning(monkeypatch) -> None:
    from netarchitect.optimize.pruning import dependency

    model = _model("resnet18")
    rule = dependency._RULES["basic_block"]

    def forgetful(ctx, inp):  # labels the block, then forgets its second convolution
        out = rule(ctx, inp)
        ctx.graph.labels.pop(f"nodes.{ctx.node.id}.conv2.weight", None)
        return out

    monkeypatch.setitem(dependency._RULES, "basic_block", forgetful)
    with pytest.raises(PruneError, match=r"conv2.weight.*does not match its block"):
        plan_pruning(model, 0.5)


def test_channels_first_1d_data_is_refused_not_mis_scored() -> None:
    """Found by the optimize fuzzer: a conv1d over (C, L) data was traced as L channels."""
    spec = {"inputs": {"x": {"shape": [4, 10]}},
            "nodes": [{"id": "n", "block": "conv1d",
                       "params": {"in_channels": 4, "out_channels": 6, "kernel_size": 3}}]}
    model = na.build(spec, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruneError, match=r"node 'n' \(conv1d\): nodes.n.weight has 4 entries along dim 1"):
        prune(model, 0.5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

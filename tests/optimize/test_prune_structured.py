"""Structured pruning of every registered vision family: a smaller valid spec whose network
carries the surviving weights, and equals the unpruned one once the pruned units are zero."""

from __future__ import annotations

import functools

import pytest
import torch

import netarchitect as na
from netarchitect.network import build
from netarchitect.optimize.pruning import apply_plan, plan_pruning, zero_pruned
from netarchitect.registry import list_models, model_example
from netarchitect.spec import NetworkSpec, load_spec, spec_hash
from netarchitect.testing import check_module

# denoisers take t (and y) beside the image, each a separate node input the pruner keeps, and
# spectral-norm weights are parametrized: neither has a prunable channel group today
NOT_PRUNABLE = ("diffusion_unet_", "dcgan_discriminator_sn")


def _is_vision(name: str) -> bool:
    if name.startswith(NOT_PRUNABLE):
        return False
    ex = model_example(name)
    x = ex.inputs[0] if ex is not None else None
    return torch.is_tensor(x) and x.dim() == 4 and x.is_floating_point()


VISION = [m for m in list_models() if _is_vision(m)]


def _model(name: str, **overrides):
    ex = model_example(name)
    return na.create_model(name, seed=0, **{**ex.kwargs, **overrides}).eval(), ex.inputs


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_sweep_covers_the_vision_families() -> None:
    for family in ("resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small",
                   "efficientnet_b0", "densenet121", "convnext_tiny", "vit_ti_16", "coatnet_lite_0"):
        assert family in VISION


@pytest.mark.parametrize("amount", [0.3, 0.5])
@pytest.mark.parametrize("name", VISION)
def test_vision_family_prunes_exactly(name: str, amount: float) -> None:
    model, inputs = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_pruning(model, amount)
    pruned = apply_plan(model, plan)
    # smaller, and a valid spec: it round-trips and rebuilds to the same parameter count
    assert _n_params(pruned) < _n_params(model)
    assert isinstance(pruned.spec, NetworkSpec) and pruned.spec == plan.spec
    again = load_spec(plan.spec.to_dict())
    assert again == plan.spec and spec_hash(again) == spec_hash(plan.spec)
    assert _n_params(build(plan.spec, device="meta")) == _n_params(pruned)
    assert type(pruned) is type(model)
    # exactness: zeroing the pruned units first gives the same output
    with torch.no_grad():
        expected = zero_pruned(model, plan)(*inputs)
        torch.testing.assert_close(pruned(*inputs), expected, rtol=1e-5, atol=1e-5)
    # the input model is untouched, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0",
                                  "densenet121", "convnext_tiny", "resnext50_32x4d"])
def test_pruned_spec_passes_conformance(name: str) -> None:
    model, inputs = _model(name)
    plan = plan_pruning(model, 0.5)
    check_module(functools.partial(build, plan.spec), inputs)


def test_resnet_widths_halve_and_residual_groups_stay_aligned() -> None:
    model, _ = _model("resnet18", layers=(2, 2))
    plan = plan_pruning(model, 0.5)
    widths = {n.id: n.params.get("out_channels") for n in plan.spec.nodes}
    assert widths["stem"] == 4 and widths["s1_b0"] == 2 and widths["s2_b1"] == 4
    assert plan.spec.node("head").params["out_features"] == 5  # the classes are kept
    # the identity shortcut of s1_b1 ties its output to s1_b0's channels
    first = plan.indices["nodes.s1_b0.conv2.weight"][0]
    assert torch.equal(plan.indices["nodes.s1_b1.conv2.weight"][0], first)
    assert torch.equal(plan.indices["nodes.s1_b1.conv1.weight"][1], first)
    assert not torch.equal(plan.indices["nodes.s1_b1.conv1.weight"][0], first)  # own mid


def test_grouped_convolution_keeps_whole_groups_aligned() -> None:
    model, inputs = _model("resnext50_32x4d", groups=2, base_width=16, widths=(16, 16))
    conv = model.nodes["s1_b0"].conv2
    assert conv.groups == 2 and conv.in_channels == 8
    plan = plan_pruning(model, 0.5)
    pruned = apply_plan(model, plan)
    new = pruned.nodes["s1_b0"].conv2
    assert new.groups == 2 and new.in_channels == 4
    idx = plan.indices["nodes.s1_b0.conv2.weight"][0]
    assert [int(i) for i in idx[:2] + 4] == [int(i) for i in idx[2:]]  # same positions per group
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), zero_pruned(model, plan)(*inputs))


def test_depthwise_convolutions_prune_with_their_input() -> None:
    model, _ = _model("mobilenet_v2")
    plan = plan_pruning(model, 0.5)
    pruned = apply_plan(model, plan)
    for node_id, module in pruned.nodes.items():
        dw = getattr(module, "conv_dw", None)
        if dw is not None:
            assert dw.conv.groups == dw.conv.in_channels == dw.conv.out_channels, node_id


def test_amount_zero_keeps_everything() -> None:
    model, inputs = _model("resnet18")
    plan = plan_pruning(model, 0.0)
    assert plan.spec == model.spec
    pruned = apply_plan(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), model(*inputs), rtol=0, atol=0)


def test_groups_report_sizes_and_why_they_are_kept() -> None:
    model, _ = _model("convnext_tiny")
    plan = plan_pruning(model, 0.5)
    frozen = [g for g in plan.groups if g.frozen]
    pruned = [g for g in plan.groups if not g.frozen]
    assert any("LayerNorm" in g.frozen or "layernorm" in g.frozen for g in frozen)
    assert pruned and all(g.kept < g.size for g in pruned)

"""The classifier contract, checked on the smallest instance of every registered image classifier."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect import network as network_module
from netarchitect.errors import SpecError
from netarchitect.models._classifier import ClassifierNetwork
from netarchitect.models._stages import (
    SpecBuilder,
    Stage,
    check_image_args,
    drop_path_rates,
    round_repeats,
)
from netarchitect.registry import model_example


def _is_image_classifier(name: str) -> bool:
    model = na.create_model(name, **model_example(name).kwargs, device="meta")
    return isinstance(model, ClassifierNetwork) and len(model.spec.inputs[0].shape) == 3


#: Every registered image classifier (from the registry, never a hand-kept list).
FAMILIES = [n for n in na.list_models() if _is_image_classifier(n)]


def tiny(name: str, seed: int = 0, **overrides) -> tuple[ClassifierNetwork, torch.Tensor]:
    ex = model_example(name)
    model = na.create_model(name, **{**ex.kwargs, "seed": seed, **overrides})
    return model, ex.inputs[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_feature_info_matches_the_stage_outputs(name: str) -> None:
    model, x = tiny(name)
    info = model.feature_info
    assert info and all(set(i) == {"node", "module", "num_chs", "reduction"} for i in info)
    outs = model.eval()(x, return_nodes=[i["node"] for i in info])
    for item in info:
        y = outs[item["node"]]
        assert model.get_submodule(item["module"]) is model.nodes[item["node"]]
        if y.dim() == 4:  # (B, C, H, W)
            assert y.shape[1] == item["num_chs"]
            assert x.shape[-1] // y.shape[-1] == item["reduction"]
        elif y.dim() == 3:  # (B, N, D) tokens: N patch tokens (+ class token) at that stride
            assert y.shape[-1] == item["num_chs"]
            assert y.shape[1] - (x.shape[-1] // item["reduction"]) ** 2 in (0, 1)
        else:
            assert y.shape[1] == item["num_chs"] and item["reduction"] == 1
    reductions = [i["reduction"] for i in info]
    assert reductions == sorted(reductions)
    final, inter = model.forward_intermediates(x)
    assert len(inter) == len(info)
    for item, y in zip(info, inter):
        torch.testing.assert_close(y, outs[item["node"]])
    torch.testing.assert_close(final, model.forward_features(x))
    last = model.forward_intermediates(x, 1, intermediates_only=True)
    torch.testing.assert_close(last[0], inter[-1])
    assert model.forward_intermediates(x, [0], intermediates_only=True)[0].shape == inter[0].shape
    assert model.forward_intermediates(x, 0, intermediates_only=True) == []


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_is_head_of_features(name: str) -> None:
    model, x = tiny(name)
    model.eval()
    feats = model.forward_features(x)
    dim = -1 if feats.dim() == 3 else 1
    assert feats.shape[dim] == model.num_features
    logits = model(x)
    assert logits.shape == (x.shape[0], model.num_classes)
    torch.testing.assert_close(model.forward_head(feats), logits)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (x.shape[0], model.get_classifier().in_features)


@pytest.mark.parametrize("name", FAMILIES)
def test_spec_round_trip(name: str, tmp_path) -> None:
    model, x = tiny(name)
    rebuilt = na.build(model.spec, seed=1)
    assert na.spec_hash(rebuilt.spec) == na.spec_hash(model.spec)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    path = na.save_spec(model.spec, tmp_path / "model.yaml")
    assert na.spec_hash(na.load_spec(path)) == na.spec_hash(model.spec)
    again = ClassifierNetwork(na.load_spec(path), **model.roles, seed=0)
    assert again.feature_info == model.feature_info
    torch.testing.assert_close(again.eval()(x), model(x))


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "mobilenet_v3_small"])
def test_reset_classifier_updates_head_and_spec(name: str) -> None:
    model, x = tiny(name)
    model.reset_classifier(7, seed=3)
    assert model.num_classes == 7 and model.eval()(x).shape == (x.shape[0], 7)
    assert model.spec.node("head").params["out_features"] == 7
    rebuilt = na.build(model.spec, seed=3)
    torch.testing.assert_close(rebuilt.nodes["head"].weight, model.nodes["head"].weight)
    assert [i.shape for i in model.node_info()][-1] == (7,)
    model.reset_classifier(0)
    pre = model(x)
    assert model.num_classes == 0 and pre.dim() == 2
    torch.testing.assert_close(pre, model.forward_head(model.forward_features(x), pre_logits=True))
    assert na.build(model.spec).spec.node("head").block == "identity"
    model.reset_classifier(4)
    assert model(x).shape == (x.shape[0], 4)
    with pytest.raises(SpecError, match="num_classes"):
        model.reset_classifier(-1)


def test_reset_classifier_on_meta_stays_on_meta() -> None:
    model = na.create_model("resnet18", device="meta")
    model.reset_classifier(10)
    assert model.get_classifier().weight.device.type == "meta"
    assert na.count_params(model).total == 11_689_512 - 990 * 513


def test_grad_checkpointing_recomputes_body_nodes(monkeypatch) -> None:
    model, x = tiny("resnet18")
    calls = []

    def spy(fn, *args, **kwargs):
        calls.append(fn)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(network_module, "checkpoint", spy)
    ref = model(x)
    assert not calls
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    torch.testing.assert_close(model(x), ref)
    assert {id(m) for m in calls} <= {id(m) for m in model.nodes.values()} and len(calls) >= 3
    calls.clear()
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    assert not calls
    model.set_grad_checkpointing(False)
    model(x).sum().backward()
    assert not calls


def test_seeded_builds_are_identical_and_seed_dependent() -> None:
    a, _ = tiny("efficientnet_b0", seed=5)
    b, _ = tiny("efficientnet_b0", seed=5)
    c, _ = tiny("efficientnet_b0", seed=6)
    for (k, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values()
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert any(not torch.equal(va, vc) for va, vc in zip(a.parameters(), c.parameters()))


OVERFIT_LR = {"vit_b_16": 3e-3, "coatnet_lite_nano": 3e-3}


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_variant_overfits_a_small_batch(name: str) -> None:
    model, x = tiny(name, num_classes=4)
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(8, *x.shape[1:], generator=g)
    ys = torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR.get(name, 1e-2))
    model.train()
    losses = []
    for _ in range(80):
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] <= 0.05 * losses[0]:
            break
    assert min(losses[-3:]) <= 0.1 * losses[0], losses


# --------------------------------------------------------------------- roles and helpers


def _builder() -> SpecBuilder:
    b = SpecBuilder("t", (3, 8, 8))
    b.add("conv", "conv_norm_act", {"out_channels": 4, "stride": 2})
    b.stage()
    b.add_head(3)
    return b


def test_bad_roles_raise_spec_errors() -> None:
    spec = _builder().spec()
    with pytest.raises(SpecError, match="unknown node 'conv2'"):
        ClassifierNetwork(spec, features="conv2")
    with pytest.raises(SpecError, match="do not feed the features node"):
        ClassifierNetwork(spec, features="conv", stages=["head_pool"])
    two = na.NetworkSpec("t", spec.inputs, spec.nodes, ("conv", "head"))
    with pytest.raises(SpecError, match="one output"):
        ClassifierNetwork(two, features="conv")
    skip = spec.replace_node("head_pool", inputs=["x"])
    with pytest.raises(SpecError, match="may only read the features node"):
        ClassifierNetwork(skip, features="conv")
    with pytest.raises(SpecError, match="add_head"):
        SpecBuilder("t", (3,)).build()


def test_features_node_equal_to_pre_logits() -> None:
    b = SpecBuilder("t", (6,))
    b.add("fc", "linear", {"out_features": 5})
    b.add_head(2, None)
    model = b.build(seed=0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(
        model.forward_head(model.forward_features(x), pre_logits=True), model.forward_features(x)
    )
    assert model.feature_info == [] and model.num_features == 5
    with pytest.raises(SpecError, match="unknown node"):
        model(x, return_nodes=["nope"])
    assert set(model(x, return_nodes=["fc", "x"])) == {"fc", "x"}


def test_stage_marks_and_drop_path_schedule() -> None:
    b = SpecBuilder("t", (3, 16, 16))
    stages = [
        Stage("conv_norm_act", 2, {"out_channels": 4}, first={"stride": 2}),
        Stage("conv_norm_act", 1, {"out_channels": 4}),
        Stage("conv_norm_act", 1, {"out_channels": 8}, first={"stride": 2}),
    ]
    b.add_stages(stages, mark="stride")
    assert b.stages == ["s2_b0", "s3_b0"]
    b2 = SpecBuilder("t", (3, 16, 16))
    b2.add_stages(stages[:1], mark="block", start=4, prefix="x")
    assert b2.stages == ["x4_b0", "x4_b1"]
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert drop_path_rates(0.3, 1) == [0.0]
    with pytest.raises(SpecError, match="drop_path_rate"):
        drop_path_rates(1.0, 3)
    assert round_repeats(3, 1.1) == 4 and round_repeats(1, 3.1) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_chans": 0}, "in_chans=0 must be a positive integer"),
        ({"in_chans": 2.0}, "in_chans"),
        ({"img_size": -1}, "img_size"),
        ({"num_classes": -2}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"width_mult": 0.0}, "width_mult=0.0 must be a positive number"),
    ],
)
def test_check_image_args(kwargs, match) -> None:
    args = {"in_chans": 3, "num_classes": 10, "img_size": 32, **kwargs}
    with pytest.raises(SpecError, match=match):
        check_image_args(**args)


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_common_arguments_raise_clear_errors(name: str) -> None:
    bad = {"in_features": 0} if name.startswith("highway") else {"in_chans": 0}
    with pytest.raises(SpecError, match="must be a positive integer"):
        na.create_model(name, **bad, device="meta")
    with pytest.raises(SpecError, match="num_classes"):
        na.create_model(name, num_classes=-1, device="meta")


def test_unknown_variant_suggests_names() -> None:
    with pytest.raises(na.RegistryError, match="did you mean 'resnet50'"):
        na.create_model("resnet51")


def test_grad_checkpointing_updates_batchnorm_statistics_once() -> None:
    plain, x = tiny("resnet18")
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    for model in (plain, checkpointed):
        model.train()(x).sum().backward()  # the backward recomputes every body node
    torch.testing.assert_close(checkpointed.state_dict(), plain.state_dict(), rtol=0, atol=0)
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)

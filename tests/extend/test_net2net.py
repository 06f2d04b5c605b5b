"""Net2Net growth: function preservation on MLPs, CNNs with BatchNorm, Transformer blocks and
spec-built registered models; training continues; bad inputs raise clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.extend.net2net import (
    deepen,
    identity_layer,
    widen,
    widen_heads,
    widen_mlp,
    widen_units,
    wider_mapping,
)
from netarchitect.layers.transformer import TransformerBlock

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _warm_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()


def _mlp_spec(hidden: int = 16) -> dict:
    return {
        "name": "mlp",
        "inputs": {"x": {"shape": [64]}},
        "nodes": [
            {"id": "flat", "block": "flatten", "inputs": ["x"]},
            {"id": "fc1", "block": "linear", "params": {"out_features": hidden}},
            {"id": "act1", "block": "relu"},
            {"id": "drop", "block": "dropout", "params": {"p": 0.0}},
            {"id": "fc2", "block": "linear", "params": {"out_features": 10}},
        ],
        "outputs": ["fc2"],
    }


def _cnn_spec() -> dict:
    return {
        "name": "cnn",
        "inputs": {"x": {"shape": [1, 8, 8]}},
        "nodes": [
            {"id": "c1", "block": "conv_norm_act", "params": {"out_channels": 4}, "inputs": ["x"]},
            {"id": "c2", "block": "conv2d", "params": {"out_channels": 6, "kernel_size": 3}},
            {"id": "bn", "block": "batchnorm2d"},
            {"id": "act", "block": "relu"},
            {"id": "pool", "block": "maxpool2d", "params": {"kernel_size": 2}},
            {"id": "flat", "block": "flatten"},
            {"id": "head", "block": "linear", "params": {"out_features": 10}},
        ],
        "outputs": ["head"],
    }


# --------------------------------------------------------------------------- module level


def test_wider_mapping_keeps_old_units_and_refuses_narrowing() -> None:
    g = wider_mapping(4, 7, generator=torch.Generator().manual_seed(0))
    assert g[:4].tolist() == [0, 1, 2, 3]
    assert len(g) == 7 and int(g[4:].max()) < 4
    with pytest.raises(SpecError, match="cannot widen 4 units to 3"):
        wider_mapping(4, 3)


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_widen_mlp_units_preserves_function(noise: float) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    before = model(x)
    index = widen_units(model[0], model[2], 24, noise=noise, seed=3)
    assert model[0].weight.shape == (24, 8) and model[2].weight.shape == (4, 24)
    assert model[0].out_features == 24 and model[2].in_features == 24
    assert len(index) == 24
    assert_close(model(x), before, **TOL)
    replicas = (index == index[-1]).nonzero().flatten()
    cols = model[2].weight[:, replicas]
    assert (noise > 0) == (not torch.allclose(cols[:, 0], cols[:, 1]))


def test_widen_cnn_with_batchnorm_and_flatten_preserves_function() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )
    x = torch.randn(4, 3, 4, 4)
    _warm_bn(model, x)
    before = model(x)
    widen_units(model[0], model[3], 13, between=[model[1]], noise=0.05)
    widen_units(model[3], model[7], 9, between=[model[4]])
    assert model[1].running_mean.shape == (13,) and model[1].num_features == 13
    assert model[7].in_features == 9 * 16
    assert_close(model(x), before, **TOL)


def test_widen_refuses_mixing_norms_and_groups() -> None:
    with pytest.raises(SpecError, match="LayerNorm"):
        widen_units(nn.Linear(4, 4), nn.Linear(4, 2), 6, between=[nn.LayerNorm(4)])
    with pytest.raises(SpecError, match="grouped"):
        widen_units(nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(4, 2, 1), 6)
    with pytest.raises(SpecError, match="expected a Linear"):
        widen_units(nn.ReLU(), nn.Linear(4, 2), 6)
    with pytest.raises(SpecError, match="not a multiple"):
        widen_units(nn.Linear(4, 3), nn.Linear(4, 2), 6)


@pytest.mark.parametrize("kwargs", [
    {"pos": "relative"},
    {"mlp_layer": "swiglu", "pos": "rope", "qk_norm": "rmsnorm"},
    {"cross_attention": True, "context_dim": 8, "causal": True},
])
def test_widen_transformer_block_preserves_function(kwargs: dict) -> None:
    block = TransformerBlock(16, 2, mlp_ratio=2.0, **kwargs).eval()
    with torch.no_grad():  # non-zero biases everywhere
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    args = (x, ctx) if kwargs.get("cross_attention") else (x,)
    before = block(*args)
    widen_mlp(block, 48, noise=0.01)
    widen_heads(block, 5, noise=0.01)
    assert block.attn.fn.num_heads == 5 and block.attn.fn.q_proj.out_features == 40
    assert_close(block(*args), before, **TOL)


def test_widen_heads_refuses_gqa_and_alibi() -> None:
    with pytest.raises(SpecError, match="grouped-query"):
        widen_heads(TransformerBlock(16, 4, num_kv_heads=2), 6)
    with pytest.raises(SpecError, match="ALiBi"):
        widen_heads(TransformerBlock(16, 2, pos="alibi"), 4)
    with pytest.raises(SpecError, match="MultiHeadAttention"):
        widen_heads(nn.Linear(2, 2), 4)
    with pytest.raises(SpecError, match="gated MLP"):
        widen_mlp(nn.Linear(2, 2), 4)


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(8, 6),
    lambda: nn.Conv2d(3, 6, 3),
    lambda: nn.BatchNorm2d(6),
    lambda: TransformerBlock(6, 2, norm="sandwich"),
    lambda: na.registry.get_block("basic_block")(6, 6),
    lambda: na.registry.get_block("conv_norm_act")(6, 6),
    lambda: nn.ReLU(),
])
def test_identity_layer(make) -> None:
    module = make()
    new = identity_layer(module).eval()
    shape = {nn.Linear: (3, 6), TransformerBlock: (2, 4, 6)}.get(type(module), (2, 6, 5, 5))
    x = torch.randn(shape).abs()  # non-negative: ReLU-terminated blocks are then the identity
    assert_close(new(x), x, **TOL)


def test_identity_layer_refusals() -> None:
    with pytest.raises(SpecError, match="post-norm"):
        identity_layer(TransformerBlock(8, 2, norm="post"))
    with pytest.raises(SpecError, match="no skip"):
        identity_layer(na.registry.get_block("basic_block")(4, 8))
    with pytest.raises(SpecError, match="cannot initialise LayerNorm"):
        identity_layer(nn.LayerNorm(4))
    with pytest.raises(SpecError, match="odd kernels"):
        identity_layer(nn.Conv2d(3, 3, 2))
    block = na.registry.get_block("conv_norm_act")(4, 4, norm_layer="groupnorm")
    with pytest.raises(SpecError, match="GroupNorm"):
        identity_layer(block)


# --------------------------------------------------------------------------- specs


def test_widen_and_deepen_spec_mlp_then_training_continues() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:64] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:64])
    model = na.build(_mlp_spec(), seed=0).eval()
    before = model(x)
    wide = widen(model, "fc1", 24, noise=0.01)
    deep = deepen(wide, "act1", block="linear", params={"out_features": 24}, act="relu")
    assert wide.spec.node("fc1").params["out_features"] == 24
    assert [n.id for n in deep.spec.nodes][:5] == ["flat", "fc1", "act1", "act1_deep0",
                                                   "act1_deep0_act"]
    assert deep.spec.node("drop").inputs == ("act1_deep0_act",)
    assert not deep.training
    assert_close(wide(x), before, **TOL)
    assert_close(deep(x), before, **TOL)
    rebuilt = na.build(deep.spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in deep.state_dict().items()}

    deep.train()
    opt = torch.optim.SGD(deep.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(deep(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_widen_and_deepen_spec_cnn_with_batchnorm() -> None:
    model = na.build(_cnn_spec(), seed=0)
    x = torch.randn(8, 1, 8, 8)
    _warm_bn(model, x)
    before = model(x)
    grown = widen(model, "c1", 7)
    grown = widen(grown, "c2", 10, noise=0.02)
    grown = deepen(grown, "c1")
    assert grown.spec.node("c1_deep0").block == "conv_norm_act"
    assert grown.nodes["bn"].num_features == 10
    assert_close(grown(x), before, **TOL)


def test_spec_registered_gpt2_grows() -> None:
    model = na.create_model("gpt2-tiny", seed=0).eval()
    ids = torch.randint(0, 100, (2, 7))
    before = model(ids)
    wide = widen(model, "block_0", hidden_dim=320, num_heads=3, noise=0.01)
    deep = deepen(wide, "block_1")
    params = deep.spec.node("block_0").params
    assert params["hidden_dim"] == 320 and params["num_heads"] == 3 and params["head_dim"] == 32
    assert deep.roles["blocks"] == ["block_0", "block_1", "block_1_deep0"]
    assert dict(deep.spec.node("block_1_deep0").context) == dict(model.spec.node("block_1").context)
    assert deep.nodes["head"].weight is deep.nodes["embed"].token.weight  # ties survive
    assert_close(deep(ids), before, **TOL)
    assert na.build(deep.spec, device="meta").spec == deep.spec


def test_spec_registered_resnet_deepens() -> None:
    model = na.create_model("resnet18", img_size=32, num_classes=10, seed=0)
    x = torch.randn(2, 3, 32, 32)
    _warm_bn(model, x)
    before = model(x)
    deep = deepen(model, "s4_b1", node_id="extra")
    assert deep.features_node == "extra" and deep.roles["stages"][-1] == "extra"
    assert_close(deep(x), before, **TOL)
    assert_close(deep.forward_features(x), model.forward_features(x), **TOL)


def test_spec_growth_errors() -> None:
    model = na.build(_mlp_spec(), seed=0)
    with pytest.raises(SpecError, match="cannot widen 16 units to 8"):
        widen(model, "fc1", 8)
    with pytest.raises(SpecError, match="unknown node 'fc3'"):
        widen(model, "fc3", 20)
    with pytest.raises(SpecError, match="is an output"):
        widen(model, "fc2", 20)
    with pytest.raises(SpecError, match="width= widens"):
        widen(model, "act1", 20)
    with pytest.raises(SpecError, match="give width="):
        widen(model, "fc1")
    with pytest.raises(SpecError, match="no hidden_dim"):
        widen(model, "fc1", hidden_dim=20)
    with pytest.raises(SpecError, match="already exists"):
        deepen(model, "act1", node_id="fc2")
    with pytest.raises(TypeError, match="spec-built Network"):
        widen(nn.Linear(2, 2), "fc1", 4)
    resnet = na.create_model("resnet18", img_size=32, num_classes=10, seed=0, device="meta")
    with pytest.raises(SpecError, match="mixes units"):
        widen(na.build(resnet.spec.replace_node("stem", params={
            **resnet.spec.node("stem").params}), device="meta"), "stem", 80)
    merge = {
        "name": "m", "inputs": {"x": {"shape": [4]}},
        "nodes": [{"id": "a", "block": "linear", "params": {"out_features": 4}, "inputs": ["x"]},
                  {"id": "b", "block": "identity", "inputs": ["a", "x"], "merge": "add"},
                  {"id": "c", "block": "linear", "params": {"out_features": 2}}],
        "outputs": ["c"],
    }
    with pytest.raises(SpecError, match="single consumer"):
        widen(na.build(merge), "a", 6)
    vit = {"name": "v", "inputs": {"x": {"shape": [3, 8]}},
           "nodes": [{"id": "b", "block": "vit_block", "params": {"num_heads": 2},
                      "inputs": ["x"]}, {"id": "o", "block": "identity"}], "outputs": ["o"]}
    with pytest.raises(SpecError, match="no head_dim"):
        widen(na.build(vit), "b", num_heads=4)


def test_more_refusals_and_roles() -> None:
    block = na.registry.get_block("conv_norm_act")(3, 4, norm_layer="groupnorm")
    with pytest.raises(SpecError, match="GroupNorm: it mixes units"):
        widen_units(block, nn.Conv2d(4, 2, 1), 6)
    model = na.build(_mlp_spec(), seed=0)
    with pytest.raises(SpecError, match=r"turns shape \(16,\) into \(20,\)"):
        deepen(model, "act1", block="linear", params={"out_features": 20})
    from netarchitect.extend.net2net import _make_identity

    with pytest.raises(SpecError, match="not square"):
        _make_identity(nn.Linear(3, 4))
    spec = na.build({**_mlp_spec(), "roles": {"kind": "classifier", "features": "act1",
                                              "stages": ["fc1", "act1"],
                                              "reductions": {"act1": 1}}}, seed=0)
    deep = deepen(spec, "act1", block="relu")
    assert deep.roles["features"] == "act1_deep0"
    assert deep.roles["stages"] == ["fc1", "act1_deep0"]
    assert deep.roles["reductions"] == {"act1_deep0": 1}

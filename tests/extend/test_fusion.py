"""Feature-level fusion of two backbones: spec-built (with the backbones' weights) and plain
modules; shapes, gradients, spec round trip and bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.extend.fusion import FusionModel, fuse_backbones, fused_spec
from netarchitect.models._classifier import ClassifierNetwork


def _cnn(num_classes: int = 10, pool: bool = True) -> ClassifierNetwork:
    nodes = [
        {"id": "c1", "block": "conv_norm_act", "params": {"out_channels": 4}, "inputs": ["img"]},
        {"id": "c2", "block": "conv_norm_act", "params": {"out_channels": 6}},
    ]
    if pool:
        nodes.append({"id": "head_pool", "block": "global_pool"})
    nodes.append({"id": "head", "block": "linear", "params": {"out_features": num_classes}})
    if not pool:
        nodes.insert(2, {"id": "flat", "block": "identity"})
    spec = {"name": "cnn", "inputs": {"img": {"shape": [1, 8, 8]}}, "nodes": nodes,
            "outputs": ["head"], "roles": {"kind": "classifier", "features": "c2"}}
    return na.build(spec, seed=1)


def _vit(num_classes: int = 10) -> ClassifierNetwork:
    spec = {"name": "vit", "inputs": {"x": {"shape": [1, 8, 8]}},
            "nodes": [
                {"id": "embed", "block": "patch_embed", "params": {"dim": 8, "patch_size": 4},
                 "inputs": ["x"]},
                {"id": "block", "block": "transformer_block", "params": {"num_heads": 2}},
                {"id": "norm", "block": "layernorm"},
                {"id": "head_pool", "block": "token_pool", "params": {"pool_type": "avg"}},
                {"id": "head", "block": "linear", "params": {"out_features": num_classes}}],
            "outputs": ["head"], "roles": {"kind": "classifier", "features": "norm"}}
    return na.build(spec, seed=2)


@pytest.mark.parametrize("method", ["concat", "gated", "cross_attention"])
def test_spec_fusion_keeps_backbones_and_trains(method: str) -> None:
    a, b = _cnn().eval(), _vit().eval()
    fused = fuse_backbones(a, b, num_classes=3, method=method, dim=12, num_heads=2)
    assert isinstance(fused, ClassifierNetwork) and fused.features_node == "fusion"
    x = torch.randn(4, 1, 8, 8)
    out = fused(x)
    assert out.shape == (4, 3)
    feats = fused(x, return_nodes=["a_c2", "b_norm"])
    assert_close(feats["a_c2"], a.forward_features(x))
    assert_close(feats["b_norm"], b.forward_features(x))
    expected = {"concat": 14, "gated": 12, "cross_attention": 6}[method]
    assert fused.num_features == expected
    fused.train()
    fused(x).square().sum().backward()
    for name in ("nodes.a_c1.conv.weight", "nodes.b_embed.proj.weight", "nodes.head.weight"):
        assert fused.get_parameter(name).grad.abs().sum() > 0, name
    rebuilt = na.build(fused.spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in fused.state_dict().items()}
    assert rebuilt.spec == fused.spec


def test_spec_fusion_of_registered_models_keeps_ties() -> None:
    vit = na.create_model("vit_ti_16", img_size=16, patch_size=8, num_classes=5, seed=0)
    fused = fuse_backbones(vit.eval(), _vit_like(vit).eval(), num_classes=2)
    x = torch.randn(2, 3, 16, 16)
    assert_close(fused(x, return_nodes=["a_norm"])["a_norm"], vit.forward_features(x))
    assert fused.spec.name == "vit_ti_16+vit_ti_16"


def _vit_like(vit: ClassifierNetwork) -> ClassifierNetwork:
    return na.build(vit.spec, seed=5)


def test_module_fusion_two_inputs_and_dims() -> None:
    a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())  # (B, 4, H, W) maps
    b = nn.Sequential(nn.Linear(5, 7))  # (B, 7) vectors
    with pytest.raises(SpecError, match="pass dims="):
        fuse_backbones(a, b, num_classes=3)
    xa, xb = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    for method, width in [("concat", 11), ("gated", 9), ("cross_attention", 4)]:
        fused = fuse_backbones(a, b, num_classes=3, method=method, dims=(4, 7), dim=9,
                               num_heads=2)
        assert isinstance(fused, FusionModel) and fused.num_features == width
        out = fused(xa, xb)
        assert out.shape == (2, 3)
        assert fused.forward_head(fused.forward_features(xa, xb), pre_logits=True).shape == (
            2, width)
        out.sum().backward()
        assert a[0].weight.grad is not None and b[0].weight.grad is not None
        a.zero_grad()
        b.zero_grad()


def test_module_fusion_uses_forward_features_and_num_features() -> None:
    a, b = _cnn(), _cnn()
    b_other = na.build(b.spec.replace(inputs=(na.spec.InputSpec("img", (1, 9, 9)),)))
    fused = fuse_backbones(a, b_other, num_classes=4, method="cross_attention", num_heads=2)
    assert isinstance(fused, FusionModel)
    out = fused(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 9, 9))
    assert out.shape == (2, 4)
    tokens = FusionModel(nn.Identity(), nn.Identity(), num_classes=2, dims=(4, 4), num_heads=2,
                         method="cross_attention")
    assert tokens(torch.randn(2, 3, 4)).shape == (2, 2)


def test_fusion_bad_inputs() -> None:
    a, b = _cnn(), _vit()
    with pytest.raises(SpecError, match="unknown fusion method 'sum'"):
        fuse_backbones(a, b, num_classes=2, method="sum")
    with pytest.raises(SpecError, match="num_classes=0"):
        fuse_backbones(a, b, num_classes=0)
    with pytest.raises(SpecError, match="not a single-input spec-built classifier"):
        fused_spec(a, nn.Linear(2, 2), num_classes=2)
    other = na.build(b.spec.replace(inputs=(na.spec.InputSpec("x", (1, 16, 16)),)))
    with pytest.raises(SpecError, match="different inputs"):
        fused_spec(a, other, num_classes=2)
    with pytest.raises(SpecError, match="not a pooled vector"):
        fused_spec(_cnn(pool=False), b, num_classes=2)
    vec = na.build({"name": "v", "inputs": {"x": {"shape": [1, 8, 8]}},
                    "nodes": [{"id": "flat", "block": "flatten", "inputs": ["x"]},
                              {"id": "fc", "block": "linear", "params": {"out_features": 6}},
                              {"id": "head", "block": "linear", "params": {"out_features": 2}}],
                    "outputs": ["head"], "roles": {"kind": "classifier", "features": "fc"}})
    with pytest.raises(SpecError, match="token or map features"):
        fused_spec(a, vec, num_classes=2, method="cross_attention")

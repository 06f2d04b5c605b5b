"""Vision Transformers: torchvision's parameter counts and MACs, token layout, init."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.models.vit import vit


@pytest.mark.parametrize(
    "name, expected",
    [
        ("vit_b_16", 86_567_656),
        ("vit_l_16", 304_326_632),
        # timm publishes 5.72 M and 22.05 M for ViT-Ti/16 and ViT-S/16.
        ("vit_ti_16", 5_717_416),
        ("vit_s_16", 22_050_664),
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


def test_base_macs_at_224() -> None:
    model = na.create_model("vit_b_16", device="meta").eval()
    macs = count_flops(model, torch.empty(1, 3, 224, 224, device="meta")).macs
    assert macs == pytest.approx(17.564e9, rel=0.005)


def test_layout() -> None:
    model = na.create_model("vit_b_16", device="meta")
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6}
    assert model.nodes["pos_embed"].weight.shape == (197, 768)
    assert model.nodes["cls_token"].token.shape == (1, 1, 768)
    assert len(model.feature_info) == 12
    assert {(i["num_chs"], i["reduction"]) for i in model.feature_info} == {(768, 16)}
    assert model.spec.node("head_pool").params == {"pool_type": "cls"}


def test_token_and_avg_pool() -> None:
    kw = {
        "patch_size": 4,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "img_size": 16,
        "num_classes": 3,
        "seed": 0,
    }
    x = torch.randn(2, 3, 16, 16)
    tok, avg = vit(**kw).eval(), vit(global_pool="avg", **kw).eval()
    feats = tok.forward_features(x)
    assert feats.shape == (2, 17, 16)
    torch.testing.assert_close(tok.forward_head(feats, pre_logits=True), feats[:, 0])
    torch.testing.assert_close(avg.forward_head(feats, pre_logits=True), feats[:, 1:].mean(1))


def test_init() -> None:
    model = vit(embed_dim=64, depth=1, num_heads=2, img_size=32, patch_size=8, seed=0)
    fc1 = model.nodes["s1_b0"].mlp.fn.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.1)  # truncated at 2σ
    assert fc1.bias.eq(0).all() and model.nodes["cls_token"].token.abs().max() < 1e-4


def test_dropouts_reach_the_spec() -> None:
    model = vit(depth=2, drop_rate=0.1, attn_drop_rate=0.2, drop_path_rate=0.3, device="meta")
    block = model.spec.node("s1_b1").params
    assert block["drop"] == 0.1 and block["attn_drop"] == 0.2 and block["drop_path"] == 0.3
    assert model.spec.node("pos_drop").params == {"p": 0.1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"img_size": 100}, "not a multiple of patch_size=16"),
        ({"global_pool": "max"}, "global_pool='max'"),
        ({"num_heads": 0}, "num_heads"),
        ({"embed_dim": 30, "num_heads": 4}, "does not divide"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        vit(**kwargs, device="meta")

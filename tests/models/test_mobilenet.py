"""MobileNetV2 / V3: torchvision's parameter counts and MACs, channel rounding, SE layout."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.layers.activation import HardSigmoid, HardSwish
from netarchitect.models.mobilenet import mobilenet_v2, mobilenet_v3


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mobilenet_v2", 3_504_872),
        ("mobilenet_v3_large", 5_483_032),
        ("mobilenet_v3_small", 2_542_856),
        # Regression values of this implementation; timm publishes 1.97 M / 6.11 M for these.
        ("mobilenet_v2_050", 1_968_680),
        ("mobilenet_v2_140", 6_108_776),
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


def test_mobilenet_v2_macs_at_224() -> None:
    model = na.create_model("mobilenet_v2", device="meta").eval()
    macs = count_flops(model, torch.empty(1, 3, 224, 224, device="meta")).macs
    assert macs == pytest.approx(0.301e9, rel=0.005)


@pytest.mark.parametrize(
    "width, stem, final, last_block",
    [(0.5, 16, 1280, 160), (0.75, 24, 1280, 240), (1.0, 32, 1280, 320), (1.4, 48, 1792, 448)],
)
def test_v2_width_multiplier_rounds_to_multiples_of_8(width, stem, final, last_block) -> None:
    model = mobilenet_v2(width_mult=width, device="meta")
    assert model.nodes["stem"].out_channels == stem
    assert model.nodes["final_conv"].out_channels == final == model.num_features
    assert model.feature_info[-1]["num_chs"] == last_block
    assert all(i["num_chs"] % 8 == 0 for i in model.feature_info)


def test_v3_layout() -> None:
    model = na.create_model("mobilenet_v3_large", device="meta")
    block = model.nodes["s4_b0"]  # 24 -> 40, hidden 72, 5x5, SE, ReLU
    assert block.conv_dw.conv.kernel_size == (5, 5) and block.se.rd_channels == 24
    assert isinstance(block.se.gate, HardSigmoid)
    assert isinstance(model.nodes["s7_b0"].conv_pw.act, HardSwish)
    assert model.nodes["s1_b0"].has_skip and isinstance(
        model.nodes["s1_b0"].conv_pw, torch.nn.Identity
    )
    assert model.get_classifier().in_features == 1280 and model.num_features == 960
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    small = na.create_model("mobilenet_v3_small", device="meta")
    assert small.num_features == 576 and small.get_classifier().in_features == 1024


def test_init_follows_torchvision() -> None:
    model = mobilenet_v2(width_mult=0.5, num_classes=200, img_size=32, seed=0)
    head = model.get_classifier()
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert head.bias.eq(0).all()


@pytest.mark.parametrize("width", [0, -1.0])
def test_bad_width_multiplier(width) -> None:
    with pytest.raises(SpecError, match="width_mult"):
        mobilenet_v2(width_mult=width, device="meta")
    with pytest.raises(SpecError, match="width_mult"):
        mobilenet_v3(width_mult=width, device="meta")


def test_unknown_arch() -> None:
    with pytest.raises(SpecError, match="arch='medium' must be one of"):
        mobilenet_v3(arch="medium", device="meta")


def _batchnorms(model) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_batchnorm_hyperparameters_follow_torchvision() -> None:
    v3 = na.create_model("mobilenet_v3_small", device="meta")
    assert {(bn.eps, bn.momentum) for bn in _batchnorms(v3)} == {(1e-3, 0.01)}
    v2 = na.create_model("mobilenet_v2", device="meta")
    assert {(bn.eps, bn.momentum) for bn in _batchnorms(v2)} == {(1e-5, 0.1)}
    custom = mobilenet_v2(width_mult=0.5, img_size=32, device="meta",
                          norm_layer={"name": "batchnorm2d", "eps": 1e-4})
    assert {bn.eps for bn in _batchnorms(custom)} == {1e-4}
    rebuilt = na.build(custom.spec, device="meta")
    assert {bn.eps for bn in _batchnorms(rebuilt)} == {1e-4}

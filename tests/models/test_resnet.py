"""ResNet / ResNeXt / Wide ResNet: torchvision's parameter counts and MACs, v1.5 layout, init."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.models.resnet import resnet

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
}


@pytest.mark.parametrize("name, expected", TORCHVISION_PARAMS.items())
def test_parameter_count_matches_torchvision(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


@pytest.mark.parametrize("name, giga_macs", [("resnet18", 1.814), ("resnet50", 4.089)])
def test_macs_at_224(name: str, giga_macs: float) -> None:
    model = na.create_model(name, device="meta").eval()
    macs = count_flops(model, torch.empty(1, 3, 224, 224, device="meta")).macs
    assert macs == pytest.approx(giga_macs * 1e9, rel=0.005)


def test_resnet50_structure_v1_5_and_feature_info() -> None:
    model = na.create_model("resnet50", device="meta")
    first = model.nodes["s2_b0"]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # v1.5
    assert first.downsample is not None and model.nodes["s2_b1"].downsample is None
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [
        (64, 2),
        (256, 4),
        (512, 8),
        (1024, 16),
        (2048, 32),
    ]
    assert model.num_features == 2048 and model.get_classifier().in_features == 2048
    resnext = na.create_model("resnext50_32x4d", device="meta")
    assert resnext.nodes["s1_b0"].conv2.groups == 32 and resnext.nodes["s1_b0"].width == 128
    assert na.create_model("wide_resnet50_2", device="meta").nodes["s1_b0"].width == 128


def test_kaiming_fan_out_init() -> None:
    model = resnet(widths=(64, 64), layers=(1, 1), num_classes=10, img_size=32, seed=0)
    w = model.nodes["s1_b0"].conv1.weight  # 64 x 64 x 3 x 3, fan_out = 576
    assert w.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert model.nodes["s1_b0"].bn2.weight.eq(1).all()


def test_zero_init_last_makes_blocks_start_as_identity() -> None:
    model = resnet(
        widths=(8, 16), layers=(2, 1), stem_width=8, zero_init_last=True, img_size=32, seed=0
    ).eval()
    assert all(model.nodes[n].bn2.weight.eq(0).all() for n in ("s1_b0", "s1_b1", "s2_b0"))
    x = torch.relu(torch.randn(2, 8, 8, 8))
    torch.testing.assert_close(model.nodes["s1_b1"](x), x)
    bottleneck = resnet(
        block="bottleneck", widths=(4,), layers=(1,), zero_init_last=True, img_size=32, seed=0
    )
    assert bottleneck.nodes["s1_b0"].bn3.weight.eq(0).all()
    assert bottleneck.spec.node("s1_b0").params["zero_init_last"] is True


def test_drop_path_and_dropout_are_in_the_spec() -> None:
    model = resnet(
        layers=(2, 2), widths=(8, 8), drop_path_rate=0.2, drop_rate=0.1, img_size=32, device="meta"
    )
    assert "drop_path" not in model.spec.node("s1_b0").params
    assert model.spec.node("s2_b1").params["drop_path"] == pytest.approx(0.2)
    assert model.spec.node("head_drop").params == {"p": 0.1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block": "basic"}, "block='basic' must be one of"),
        ({"layers": (1, 1), "widths": (8,)}, "same non-zero length"),
        ({"stem_width": 0}, "stem_width"),
        ({"in_chans": 0}, "in_chans=0"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        resnet(**kwargs, device="meta")


def test_in_chans_and_num_classes() -> None:
    model = na.create_model(
        "resnet18", in_chans=1, num_classes=3, img_size=32, widths=(8, 8), layers=(1, 1), seed=0
    )
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert model.nodes["stem"].conv.in_channels == 1

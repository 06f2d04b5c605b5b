"""DenseNet-BC: torchvision's parameter counts, transitions, init and argument checks."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.densenet import densenet


@pytest.mark.parametrize(
    "name, expected",
    [("densenet121", 7_978_856), ("densenet169", 14_149_480), ("densenet201", 20_013_928)],
)
def test_parameter_count_matches_torchvision(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


def test_structure_and_feature_info() -> None:
    model = na.create_model("densenet121", device="meta")
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [
        (64, 2),
        (256, 4),
        (512, 8),
        (1024, 16),
        (1024, 32),
    ]
    assert model.nodes["s2_transition"].conv.out_channels == 128
    assert model.nodes["s4_dense"].out_channels == 1024
    assert model.spec.node("head").inputs == ("head_pool",)


def test_init_and_forward() -> None:
    model = densenet(
        growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=3, img_size=32, seed=0
    )
    assert model.get_classifier().bias.eq(0).all()
    w = model.nodes["stem"].conv.weight  # fan_in = 3 * 49
    assert w.std().item() == pytest.approx((2 / 147) ** 0.5, rel=0.1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_dropout_options_reach_the_spec() -> None:
    model = densenet(block_config=(1, 1), drop_rate=0.1, head_drop_rate=0.2, device="meta")
    assert model.spec.node("s1_dense").params["drop_rate"] == 0.1
    assert model.spec.node("head_drop").params == {"p": 0.2}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_config": (6, 0)}, r"block_config\[1\]=0"),
        ({"growth_rate": 0}, "growth_rate"),
        ({"compression": -0.5}, "compression"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        densenet(**kwargs, device="meta")

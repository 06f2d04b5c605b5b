"""The C-C-T-T conv/transformer hybrid: stage strides, token stages, arguments."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.hybrid import hybrid


def test_coatnet_lite_0_layout() -> None:
    model = na.create_model("coatnet_lite_0", device="meta")
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [
        (64, 2),
        (96, 4),
        (192, 8),
        (384, 16),
        (768, 32),
    ]
    assert model.nodes["s3_pos"].weight.shape == (196, 384)
    assert model.nodes["s4_pos"].weight.shape == (49, 768)
    assert model.nodes["s3_b0"].attn.fn.num_heads == 12
    assert type(model.nodes["s1_b0"]).__name__ == "InvertedResidual"
    assert 20e6 < na.count_params(model).total < 30e6


def test_tokens_and_maps_alternate() -> None:
    model = hybrid(
        stem_width=8,
        depths=(1, 1, 1, 1),
        dims=(8, 16, 16, 32),
        head_dim=8,
        img_size=64,
        num_classes=3,
        seed=0,
    ).eval()
    out = model(torch.randn(2, 3, 64, 64), return_nodes=["s2_b0", "s3_b0", "s4_grid", "s4_b0"])
    assert out["s2_b0"].shape == (2, 16, 8, 8)
    assert out["s3_b0"].shape == (2, 16, 16)
    assert out["s4_grid"].shape == (2, 16, 4, 4)
    assert out["s4_b0"].shape == (2, 4, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"img_size": 48}, "multiple of 32"),
        ({"depths": (1, 1, 1)}, "four stages"),
        ({"head_dim": 40}, "head_dim=40 does not divide"),
        ({"stem_width": 0}, "stem_width"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        hybrid(**kwargs, device="meta")

"""ConvNeXt-Tiny/Small: torchvision's parameter counts and MACs, layout, init."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.models.convnext import convnext


@pytest.mark.parametrize(
    "name, expected", [("convnext_tiny", 28_589_128), ("convnext_small", 50_223_688)]
)
def test_parameter_count_matches_torchvision(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


def test_tiny_macs_at_224() -> None:
    model = na.create_model("convnext_tiny", device="meta").eval()
    macs = count_flops(model, torch.empty(1, 3, 224, 224, device="meta")).macs
    assert macs == pytest.approx(4.456e9, rel=0.005)


def test_layout() -> None:
    model = na.create_model("convnext_tiny", device="meta")
    eps = {m.eps for n, m in model.named_modules() if "Norm" in type(m).__name__}
    assert eps == {1e-6}
    assert model.nodes["stem_conv"].stride == (4, 4) and model.nodes["s2_down"].stride == (2, 2)
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [
        (96, 4),
        (192, 8),
        (384, 16),
        (768, 32),
    ]
    assert model.spec.node("head_norm").inputs == ("head_pool",)


def test_init_and_layerscale_option() -> None:
    model = convnext(depths=(1, 1), dims=(32, 64), num_classes=200, img_size=32, seed=0)
    assert model.get_classifier().weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.1)
    assert model.nodes["s1_b0"].fc1.bias.eq(0).all()
    plain = convnext(depths=(1,), dims=(8,), layerscale_init=None, device="meta")
    assert isinstance(plain.nodes["s1_b0"].ls, torch.nn.Identity)
    assert plain.spec.node("s1_b0").params["layerscale_init"] is None


def test_bad_arguments() -> None:
    with pytest.raises(SpecError, match="same non-zero length"):
        convnext(depths=(1, 1), dims=(8,), device="meta")
    with pytest.raises(SpecError, match="kernel_size"):
        convnext(kernel_size=0, device="meta")

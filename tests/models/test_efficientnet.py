"""EfficientNet B0–B7 by compound scaling: torchvision's counts, MACs, the scaling rule."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.models.efficientnet import compound_scaling, efficientnet

TORCHVISION_PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}


@pytest.mark.parametrize("name, expected", TORCHVISION_PARAMS.items())
def test_parameter_count_matches_torchvision(name: str, expected: int) -> None:
    assert na.count_params(na.create_model(name, device="meta")).total == expected


def test_b0_macs_at_224() -> None:
    model = na.create_model("efficientnet_b0", device="meta").eval()
    macs = count_flops(model, torch.empty(1, 3, 224, 224, device="meta")).macs
    assert macs == pytest.approx(0.386e9, rel=0.005)


def test_compound_scaling_rule() -> None:
    assert compound_scaling(0) == (1.0, 1.0, 224)
    w, d, r = compound_scaling(1)
    assert (w, d, r) == (pytest.approx(1.1), pytest.approx(1.2), 256)
    assert compound_scaling(2)[2] == 296 and compound_scaling(-1)[2] == 192
    with pytest.raises(SpecError, match="phi"):
        compound_scaling("big")


def test_custom_phi_scales_from_b0() -> None:
    b0 = na.create_model("efficientnet_b0", device="meta")
    phi0 = na.create_model("efficientnet_custom", phi=0, device="meta")
    assert na.count_params(phi0).total == TORCHVISION_PARAMS["efficientnet_b0"]
    assert [n.block for n in phi0.spec.nodes] == [n.block for n in b0.spec.nodes]
    phi3 = na.create_model("efficientnet_custom", phi=3, device="meta")
    assert phi3.spec.inputs[0].shape == (3, 344, 344)
    # depth 1.2^3 = 1.728: stage 6 has ceil(1.728 * 4) = 7 blocks; width 1.1^3 = 1.331
    assert sum(1 for n in phi3.spec.nodes if n.id.startswith("s6_b")) == 7
    assert phi3.nodes["stem"].out_channels == 40  # make_divisible(32 * 1.331, 8)


def test_b7_depth_and_width_rounding() -> None:
    model = na.create_model("efficientnet_b7", device="meta")
    depths = [sum(1 for n in model.spec.nodes if n.id.startswith(f"s{i}_b")) for i in range(1, 8)]
    assert depths == [4, 7, 7, 10, 10, 13, 4]  # ceil(3.1 * n)
    assert model.nodes["stem"].out_channels == 64 and model.num_features == 2560
    assert model.spec.inputs[0].shape == (3, 600, 600)
    assert model.spec.node("head_drop").params == {"p": 0.5}


def test_mbconv_layout_and_init() -> None:
    model = efficientnet(width_mult=0.25, depth_mult=1.0, num_classes=100, img_size=32, seed=0)
    block = model.nodes["s2_b0"]  # 8 -> 8 channels, expand 6, SE from input / 4
    assert block.se.rd_channels == 2 and block.conv_dw.conv.kernel_size == (3, 3)
    head = model.get_classifier()
    assert head.weight.abs().max().item() <= 0.1 and head.bias.eq(0).all()
    rates = [
        model.spec.node(n.id).params.get("drop_path", 0.0) for n in model.spec.nodes if "_b" in n.id
    ]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert na.create_model("efficientnet_b0", num_classes=0, device="meta").num_classes == 0


@pytest.mark.parametrize("kwargs", [{"width_mult": 0}, {"depth_mult": -1.0}])
def test_bad_multipliers(kwargs) -> None:
    with pytest.raises(SpecError, match="must be a positive number"):
        efficientnet(**kwargs, device="meta")


def test_b5_to_b7_use_tensorflow_batchnorm_as_torchvision() -> None:
    def norms(name: str) -> set[tuple[float, float]]:
        model = na.create_model(name, device="meta")
        return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert norms("efficientnet_b0") == {(1e-5, 0.1)}
    assert norms("efficientnet_b5") == norms("efficientnet_b7") == {(1e-3, 0.01)}

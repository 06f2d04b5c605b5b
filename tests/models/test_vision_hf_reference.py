"""Vision families against a second reference: Hugging Face transformers' models built from
configs on the meta device (no download, no weights) have our parameter counts, which are
also torchvision's published ones.

transformers' EfficientNet and MobileNetV2 are ports of the TensorFlow models: the counts
match torchvision's, but their forward passes use TensorFlow "SAME" padding (asymmetric zero
padding before strided convolutions) and TensorFlow BatchNorm settings, so only the
architecture (and the parameter count) is shared with our torchvision-layout models.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import netarchitect as na

tf = pytest.importorskip("transformers")


def hf_count(model_cls: Any, config: Any) -> int:
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


def ours(name: str) -> int:
    return na.count_params(na.create_model(name, device="meta")).total


# --- ResNet --------------------------------------------------------------------------------
# transformers' defaults are torchvision's v1.5 layout: stride on the 3×3 convolution
# (downsample_in_bottleneck=False), no stride in stage 1 (downsample_in_first_stage=False),
# a 64-wide 7×7 stem (embedding_size). hidden_sizes are the stage *output* widths.
BASIC, BOTTLENECK = (64, 128, 256, 512), (256, 512, 1024, 2048)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), BASIC, 11_689_512),
    "resnet34": ("basic", (3, 4, 6, 3), BASIC, 21_797_672),
    "resnet50": ("bottleneck", (3, 4, 6, 3), BOTTLENECK, 25_557_032),
    "resnet101": ("bottleneck", (3, 4, 23, 3), BOTTLENECK, 44_549_160),
    "resnet152": ("bottleneck", (3, 8, 36, 3), BOTTLENECK, 60_192_808),
}


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_matches_transformers(name: str) -> None:
    layer_type, depths, hidden_sizes, torchvision = RESNETS[name]
    config = tf.ResNetConfig(
        layer_type=layer_type,
        depths=list(depths),
        hidden_sizes=list(hidden_sizes),
        embedding_size=64,
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        num_labels=1000,
    )
    assert ours(name) == hf_count(tf.ResNetForImageClassification, config) == torchvision


# --- ConvNeXt ------------------------------------------------------------------------------
CONVNEXTS = {
    "convnext_tiny": ((3, 3, 9, 3), 28_589_128),
    "convnext_small": ((3, 3, 27, 3), 50_223_688),
}


@pytest.mark.parametrize("name", CONVNEXTS)
def test_convnext_matches_transformers(name: str) -> None:
    depths, torchvision = CONVNEXTS[name]
    config = tf.ConvNextConfig(
        depths=list(depths), hidden_sizes=[96, 192, 384, 768], num_labels=1000
    )
    assert ours(name) == hf_count(tf.ConvNextForImageClassification, config) == torchvision


def test_convnext_stem_patches_do_not_overlap() -> None:
    """Regression: the 4×4 stride-4 stem had the default "same" padding 1, which kept the
    count and the output size but shifted every patch (transformers/torchvision: padding 0)."""
    stem = na.create_model("convnext_tiny", device="meta").nodes["stem_conv"]
    assert stem.padding == (0, 0) and stem.stride == (4, 4)


# --- ViT -----------------------------------------------------------------------------------
# torchvision publishes B/16 and L/16; Ti/16 and S/16 are timm's sizes (5.72 M, 22.05 M).
VITS = {
    "vit_ti_16": (192, 12, 3, 5_717_416),
    "vit_s_16": (384, 12, 6, 22_050_664),
    "vit_b_16": (768, 12, 12, 86_567_656),
    "vit_l_16": (1024, 24, 16, 304_326_632),
}


@pytest.mark.parametrize("name", VITS)
def test_vit_matches_transformers(name: str) -> None:
    dim, depth, heads, expected = VITS[name]
    config = tf.ViTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
        num_labels=1000,
    )
    assert ours(name) == hf_count(tf.ViTForImageClassification, config) == expected


# --- EfficientNet --------------------------------------------------------------------------
# (width, depth, resolution, dropout) of the released models, torchvision's counts.
EFFICIENTNETS = {
    "b0": (1.0, 1.0, 224, 0.2, 5_288_548),
    "b1": (1.0, 1.1, 240, 0.2, 7_794_184),
    "b2": (1.1, 1.2, 260, 0.3, 9_109_994),
    "b3": (1.2, 1.4, 300, 0.3, 12_233_232),
    "b4": (1.4, 1.8, 380, 0.4, 19_341_616),
    "b5": (1.6, 2.2, 456, 0.4, 30_389_784),
    "b6": (1.8, 2.6, 528, 0.5, 43_040_704),
    "b7": (2.0, 3.1, 600, 0.5, 66_347_960),
}


def _round_filters(channels: int, width: float) -> int:
    """transformers' (and torchvision's) channel rounding: nearest multiple of 8, >= 90%."""
    value = channels * width
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


@pytest.mark.parametrize("key", EFFICIENTNETS)
def test_efficientnet_matches_transformers(key: str) -> None:
    width, depth, resolution, dropout, torchvision = EFFICIENTNETS[key]
    # transformers sizes the head BatchNorm and classifier by config.hidden_dim, whose default
    # (2560) is B7's round_filters(1280); the released configs set it per variant. With the
    # default, B0–B6 would count 256,512–1,282,560 more parameters (and could not run).
    config = tf.EfficientNetConfig(
        width_coefficient=width,
        depth_coefficient=depth,
        image_size=resolution,
        dropout_rate=dropout,
        hidden_dim=_round_filters(1280, width),
        num_labels=1000,
    )
    hf = hf_count(tf.EfficientNetForImageClassification, config)
    assert ours(f"efficientnet_{key}") == hf == torchvision


# --- MobileNetV2 ---------------------------------------------------------------------------
# Same blocks and widths (transformers' finegrained_output keeps the 1280-wide last conv
# below width 1.0, as torchvision's max(1.0, width) rule); tf_padding=True (the default),
# BatchNorm eps 1e-3 and classifier dropout 0.8 only change the forward pass.
MOBILENETS = {
    "mobilenet_v2": (1.0, 3_504_872),
    "mobilenet_v2_050": (0.5, 1_968_680),
    "mobilenet_v2_075": (0.75, 2_636_424),
    "mobilenet_v2_140": (1.4, 6_108_776),
}


@pytest.mark.parametrize("name", MOBILENETS)
def test_mobilenet_v2_matches_transformers(name: str) -> None:
    width, expected = MOBILENETS[name]
    config = tf.MobileNetV2Config(depth_multiplier=width, num_labels=1000)
    hf = hf_count(tf.MobileNetV2ForImageClassification, config)
    assert ours(name) == hf == expected

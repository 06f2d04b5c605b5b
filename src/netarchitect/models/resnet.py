"""ResNet (He et al., 2016), ResNeXt (Xie et al., 2017) and Wide ResNet (Zagoruyko &
Komodakis, 2016) in torchvision's "v1.5" layout (stride on the 3×3 convolution).

The spec is a 7×7 stem ``conv_norm_act``, a 3×3 max-pool, one node per residual block
(``basic_block`` / ``bottleneck``), global average pooling and a linear head. Init:
Kaiming-normal (fan-out) convolutions; ``zero_init_last=True`` zeroes the last BN of
every residual branch (Goyal et al., 2017) so each block starts as the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import INIT_KAIMING_FAN_OUT, SpecBuilder, Stage, check_image_args, variant

__all__ = [
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
]

_EXPANSION = {"basic_block": 1, "bottleneck": 4}


def resnet(
    *,
    block: str = "basic_block",
    layers: tuple[int, ...] = (2, 2, 2, 2),
    widths: tuple[int, ...] = (64, 128, 256, 512),
    stem_width: int = 64,
    groups: int = 1,
    base_width: int = 64,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    zero_init_last: bool = False,
    act_layer: str = "relu",
    norm_layer: str = "batchnorm2d",
    name: str = "resnet",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The ResNet family builder: every knob; the named variants only set numbers.

    ``widths`` are the bottleneck "planes" of each stage (block output is
    ``planes · expansion``, 4 for ``bottleneck``); stage ``i > 1`` halves the resolution.
    ``groups``/``base_width`` give ResNeXt (32, 4) and Wide ResNet (1, 128).
    """
    check_image_args(in_chans, num_classes, img_size, stem_width=stem_width)
    if block not in _EXPANSION:
        raise SpecError(f"block={block!r} must be one of {sorted(_EXPANSION)}", path="block")
    if len(layers) != len(widths) or not layers:
        raise SpecError(f"layers={layers} and widths={widths} need the same non-zero length")
    norm_act = {"act_layer": act_layer, "norm_layer": norm_layer}
    common: dict[str, Any] = dict(norm_act)
    if block == "bottleneck":
        common.update(groups=groups, base_width=base_width)
    if zero_init_last:
        common["zero_init_last"] = True
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add(
        "stem",
        "conv_norm_act",
        {"out_channels": stem_width, "kernel_size": 7, "stride": 2, "padding": 3, **norm_act},
    )
    b.stage()
    b.add("s1_pool", "maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1})
    stages = [
        Stage(
            block,
            depth,
            {"out_channels": planes * _EXPANSION[block], **common},
            first={"stride": 1 if i == 0 else 2},
        )
        for i, (depth, planes) in enumerate(zip(layers, widths))
    ]
    b.add_stages(stages, drop_path_rate=drop_path_rate)
    b.add_head(num_classes, drop_rate=drop_rate)
    return b.build(INIT_KAIMING_FAN_OUT, device=device, dtype=dtype, seed=seed)


def _example(**kwargs: Any) -> Example:
    small = {
        "widths": (4, 8),
        "layers": (1, 1),
        "stem_width": 8,
        "num_classes": 5,
        "img_size": 32,
        **kwargs,
    }
    return Example(small, (example_tensor(2, 3, 32, 32),))


@register_model("resnet18", example=_example)
def resnet18(**kwargs: Any) -> ClassifierNetwork:
    """ResNet-18: basic blocks (2, 2, 2, 2); 11,689,512 parameters at 1000 classes."""
    return variant(resnet, {"layers": (2, 2, 2, 2), "name": "resnet18"}, kwargs)


@register_model("resnet34", example=_example)
def resnet34(**kwargs: Any) -> ClassifierNetwork:
    """ResNet-34: basic blocks (3, 4, 6, 3); 21,797,672 parameters."""
    return variant(resnet, {"layers": (3, 4, 6, 3), "name": "resnet34"}, kwargs)


def _bottleneck_example() -> Example:
    return _example(widths=(2, 4))


@register_model("resnet50", example=_bottleneck_example)
def resnet50(**kwargs: Any) -> ClassifierNetwork:
    """ResNet-50 (v1.5): bottlenecks (3, 4, 6, 3); 25,557,032 parameters."""
    return variant(
        resnet, {"block": "bottleneck", "layers": (3, 4, 6, 3), "name": "resnet50"}, kwargs
    )


@register_model("resnet101", example=_bottleneck_example)
def resnet101(**kwargs: Any) -> ClassifierNetwork:
    """ResNet-101 (v1.5): bottlenecks (3, 4, 23, 3); 44,549,160 parameters."""
    return variant(
        resnet, {"block": "bottleneck", "layers": (3, 4, 23, 3), "name": "resnet101"}, kwargs
    )


@register_model("resnet152", example=_bottleneck_example)
def resnet152(**kwargs: Any) -> ClassifierNetwork:
    """ResNet-152 (v1.5): bottlenecks (3, 8, 36, 3); 60,192,808 parameters."""
    return variant(
        resnet, {"block": "bottleneck", "layers": (3, 8, 36, 3), "name": "resnet152"}, kwargs
    )


@register_model("resnext50_32x4d", example=lambda: _example(widths=(16, 16), groups=4))
def resnext50_32x4d(**kwargs: Any) -> ClassifierNetwork:
    """ResNeXt-50 32×4d: ResNet-50 with 32 groups of width 4; 25,028,904 parameters."""
    defaults = {
        "block": "bottleneck",
        "layers": (3, 4, 6, 3),
        "groups": 32,
        "base_width": 4,
        "name": "resnext50_32x4d",
    }
    return variant(resnet, defaults, kwargs)


@register_model("wide_resnet50_2", example=_bottleneck_example)
def wide_resnet50_2(**kwargs: Any) -> ClassifierNetwork:
    """Wide ResNet-50-2: ResNet-50 with twice as wide 3×3 convolutions; 68,883,240 parameters."""
    defaults = {
        "block": "bottleneck",
        "layers": (3, 4, 6, 3),
        "base_width": 128,
        "name": "wide_resnet50_2",
    }
    return variant(resnet, defaults, kwargs)

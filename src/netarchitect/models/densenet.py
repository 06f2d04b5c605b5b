"""DenseNet-BC (Huang et al., 2017), torchvision layout.

Spec: a 7×7 stem ``conv_norm_act`` and 3×3 max-pool, then per stage one ``dense_block``
node (each layer adds ``growth_rate`` channels), separated by ``dense_transition`` nodes
(BN-ReLU-1×1 conv halving the channels, 2×2 average pool); a final BN + ReLU, global
average pooling and a linear head. Init as torchvision: Kaiming-normal (fan-in)
convolutions, zero biases.
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import SpecBuilder, check_image_args, check_positive, variant

__all__ = ["densenet", "densenet121", "densenet169", "densenet201"]

_INIT = (
    {"init": "kaiming_normal", "modules": ["Conv2d"]},
    {"init": "zeros", "modules": ["Linear"], "params": ["bias"]},
)


def densenet(
    *,
    growth_rate: int = 32,
    block_config: tuple[int, ...] = (6, 12, 24, 16),
    num_init_features: int = 64,
    bn_size: int = 4,
    compression: float = 0.5,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    head_drop_rate: float = 0.0,
    name: str = "densenet",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The DenseNet family builder. ``drop_rate`` is the dropout after each dense layer,
    ``compression`` the channel factor of each transition."""
    check_image_args(
        in_chans,
        num_classes,
        img_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        num_init_features=num_init_features,
        compression=compression,
    )
    for i, depth in enumerate(block_config):
        check_positive(f"block_config[{i}]", depth)
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add(
        "stem",
        "conv_norm_act",
        {"out_channels": num_init_features, "kernel_size": 7, "stride": 2, "padding": 3},
    )
    b.stage()
    b.add("s1_pool", "maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1})
    channels = num_init_features
    for i, depth in enumerate(block_config, 1):
        if i > 1:
            channels = int(channels * compression)
            b.add(f"s{i}_transition", "dense_transition", {"out_channels": channels})
        params: dict[str, Any] = {
            "num_layers": depth,
            "growth_rate": growth_rate,
            "bn_size": bn_size,
        }
        if drop_rate:
            params["drop_rate"] = drop_rate
        b.add(f"s{i}_dense", "dense_block", params)
        channels += depth * growth_rate
        if i < len(block_config):
            b.stage()
    b.add(f"s{len(block_config)}_norm", "batchnorm2d")
    b.add(f"s{len(block_config)}_act", "relu")
    b.stage()
    b.add_head(num_classes, drop_rate=head_drop_rate)
    return b.build(_INIT, device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {
        "growth_rate": 4,
        "block_config": (1, 1),
        "num_init_features": 8,
        "bn_size": 2,
        "num_classes": 5,
        "img_size": 32,
    }
    return Example(kwargs, (example_tensor(2, 3, 32, 32),))


@register_model("densenet121", example=_example)
def densenet121(**kwargs: Any) -> ClassifierNetwork:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16); 7,978,856 parameters."""
    return variant(densenet, {"block_config": (6, 12, 24, 16), "name": "densenet121"}, kwargs)


@register_model("densenet169", example=_example)
def densenet169(**kwargs: Any) -> ClassifierNetwork:
    """DenseNet-169: growth 32, blocks (6, 12, 32, 32); 14,149,480 parameters."""
    return variant(densenet, {"block_config": (6, 12, 32, 32), "name": "densenet169"}, kwargs)


@register_model("densenet201", example=_example)
def densenet201(**kwargs: Any) -> ClassifierNetwork:
    """DenseNet-201: growth 32, blocks (6, 12, 48, 32); 20,013,928 parameters."""
    return variant(densenet, {"block_config": (6, 12, 48, 32), "name": "densenet201"}, kwargs)

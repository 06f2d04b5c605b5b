"""MobileNetV2 (Sandler et al., 2018) and MobileNetV3 (Howard et al., 2019), torchvision
definitions.

Both are a 3×3 stride-2 stem, a table of inverted residuals, a 1×1 ``final_conv`` and a
linear head. Every width is ``make_divisible(c · width_mult, 8)`` (torchvision's
``_make_divisible``: nearest multiple of 8, never below 90% of the target).
MobileNetV3 uses hard-swish in its later blocks and head, squeeze-excitation with a
hard-sigmoid gate, and a hidden 1280/1024-wide head layer. Init as torchvision:
Kaiming-normal (fan-out) convolutions, ``N(0, 0.01)`` linear weights, zero biases.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import (
    INIT_KAIMING_FAN_OUT,
    TF_BATCHNORM,
    SpecBuilder,
    Stage,
    check_image_args,
    make_divisible,
    variant,
)

__all__ = [
    "MOBILENET_V2_SETTINGS",
    "MOBILENET_V3_CONFIGS",
    "mobilenet_v2",
    "mobilenet_v2_050",
    "mobilenet_v2_075",
    "mobilenet_v2_100",
    "mobilenet_v2_140",
    "mobilenet_v3",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]

_INIT = (
    *INIT_KAIMING_FAN_OUT,
    {"init": "normal", "modules": ["Linear"], "args": {"std": 0.01}},
    {"init": "zeros", "modules": ["Linear"], "params": ["bias"]},
)

#: MobileNetV2 stages: expansion t, channels c, repeats n, first stride s.
MOBILENET_V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

_RE, _HS = "relu", "hardswish"
#: MobileNetV3 blocks (kernel, hidden, out, SE, activation, stride) and the head width.
MOBILENET_V3_CONFIGS: dict[str, tuple[tuple[tuple[int, int, int, bool, str, int], ...], int]] = {
    "large": (
        (
            (3, 16, 16, False, _RE, 1),
            (3, 64, 24, False, _RE, 2),
            (3, 72, 24, False, _RE, 1),
            (5, 72, 40, True, _RE, 2),
            (5, 120, 40, True, _RE, 1),
            (5, 120, 40, True, _RE, 1),
            (3, 240, 80, False, _HS, 2),
            (3, 200, 80, False, _HS, 1),
            (3, 184, 80, False, _HS, 1),
            (3, 184, 80, False, _HS, 1),
            (3, 480, 112, True, _HS, 1),
            (3, 672, 112, True, _HS, 1),
            (5, 672, 160, True, _HS, 2),
            (5, 960, 160, True, _HS, 1),
            (5, 960, 160, True, _HS, 1),
        ),
        1280,
    ),
    "small": (
        (
            (3, 16, 16, True, _RE, 2),
            (3, 72, 24, False, _RE, 2),
            (3, 88, 24, False, _RE, 1),
            (5, 96, 40, True, _HS, 2),
            (5, 240, 40, True, _HS, 1),
            (5, 240, 40, True, _HS, 1),
            (5, 120, 48, True, _HS, 1),
            (5, 144, 48, True, _HS, 1),
            (5, 288, 96, True, _HS, 2),
            (5, 576, 96, True, _HS, 1),
            (5, 576, 96, True, _HS, 1),
        ),
        1024,
    ),
}

_Common = dict[str, Any]


def _common(in_chans: int, num_classes: int, img_size: int, width_mult: float) -> None:
    check_image_args(in_chans, num_classes, img_size, width_mult=width_mult)


def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    settings: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_SETTINGS,
    round_nearest: int = 8,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    norm_layer: Any = "batchnorm2d",
    name: str = "mobilenet_v2",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The MobileNetV2 family builder (``settings`` rows are ``(t, c, n, s)``)."""
    _common(in_chans, num_classes, img_size, width_mult)

    def width(c: float) -> int:
        return make_divisible(c * width_mult, round_nearest)

    stages = [
        Stage(
            "inverted_residual",
            n,
            {"out_channels": width(c), "expand_ratio": t},
            first={"stride": s},
        )
        for t, c, n, s in settings
    ]
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add_mobile_body(
        width(32),
        stages,
        make_divisible(1280 * max(1.0, width_mult), round_nearest),
        act_layer="relu6",
        drop_path_rate=drop_path_rate,
        norm_layer=norm_layer,
    )
    b.add_head(num_classes, drop_rate=drop_rate)
    return b.build(_INIT, device=device, dtype=dtype, seed=seed)


def mobilenet_v3(
    *,
    arch: str = "large",
    rows: tuple[tuple[int, int, int, bool, str, int], ...] | None = None,
    width_mult: float = 1.0,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    norm_layer: Any = TF_BATCHNORM,
    name: str = "mobilenet_v3",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The MobileNetV3 family builder: ``arch`` picks a block table and head width of
    :data:`MOBILENET_V3_CONFIGS`; ``rows`` replaces the block table. BatchNorm as
    torchvision (``eps=1e-3, momentum=0.01``)."""
    _common(in_chans, num_classes, img_size, width_mult)
    if arch not in MOBILENET_V3_CONFIGS:
        raise SpecError(f"arch={arch!r} must be one of {sorted(MOBILENET_V3_CONFIGS)}", path="arch")
    table, head_width = MOBILENET_V3_CONFIGS[arch]
    rows = table if rows is None else rows

    def width(c: float) -> int:
        return make_divisible(c * width_mult, 8)

    stages = [
        Stage(
            "mobilenetv3_block",
            1,
            {
                "out_channels": width(out),
                "hidden_channels": width(hidden),
                "kernel_size": k,
                "se_ratio": 0.25 if se else 0.0,
                "act_layer": act,
            },
            first={"stride": stride},
        )
        for k, hidden, out, se, act, stride in rows
    ]
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add_mobile_body(
        width(16),
        stages,
        6 * width(rows[-1][2]),
        act_layer=_HS,
        drop_path_rate=drop_path_rate,
        norm_layer=norm_layer,
    )
    hidden_head = [("fc", "linear", {"out_features": width(head_width)}), ("act", _HS, {})]
    b.add_head(num_classes, pre=hidden_head, drop_rate=drop_rate)
    return b.build(_INIT, device=device, dtype=dtype, seed=seed)


def _example(**kwargs: Any) -> Example:
    return Example(
        {"width_mult": 0.25, "num_classes": 5, "img_size": 32, **kwargs},
        (example_tensor(2, 3, 32, 32),),
    )


def _v2_example() -> Example:
    return _example(settings=((1, 16, 1, 1), (6, 24, 1, 2)))


def _v3_example() -> Example:
    return _example(rows=MOBILENET_V3_CONFIGS["small"][0][:3])


def _v2(width_mult: float, suffix: str, kwargs: _Common) -> ClassifierNetwork:
    return variant(
        mobilenet_v2, {"width_mult": width_mult, "name": f"mobilenet_v2{suffix}"}, kwargs
    )


@register_model("mobilenet_v2", example=_v2_example)
def mobilenet_v2_100(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV2 1.0: 3,504,872 parameters at 1000 classes."""
    return _v2(1.0, "", kwargs)


@register_model("mobilenet_v2_050", example=_v2_example)
def mobilenet_v2_050(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV2 with width multiplier 0.5."""
    return _v2(0.5, "_050", kwargs)


@register_model("mobilenet_v2_075", example=_v2_example)
def mobilenet_v2_075(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV2 with width multiplier 0.75."""
    return _v2(0.75, "_075", kwargs)


@register_model("mobilenet_v2_140", example=_v2_example)
def mobilenet_v2_140(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV2 with width multiplier 1.4."""
    return _v2(1.4, "_140", kwargs)


@register_model("mobilenet_v3_large", example=_v3_example)
def mobilenet_v3_large(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV3-Large: 5,483,032 parameters."""
    return variant(mobilenet_v3, {"arch": "large", "name": "mobilenet_v3_large"}, kwargs)


@register_model("mobilenet_v3_small", example=_v3_example)
def mobilenet_v3_small(**kwargs: Any) -> ClassifierNetwork:
    """MobileNetV3-Small: 2,542,856 parameters."""
    return variant(mobilenet_v3, {"arch": "small", "name": "mobilenet_v3_small"}, kwargs)
